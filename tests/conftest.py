import pathlib
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # test codecs are importable as codecs_for_tests:Class (also in subprocesses)


@pytest.fixture
def natural_images(tmp_path):
    """A few small photo-like PNGs (smooth structure plus texture), made here."""
    from PIL import Image

    rng = np.random.default_rng(7)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        h, w = 96 + 16 * i, 128
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([128 + 80 * np.sin(x / (9 + i) + c) * np.cos(y / (13 + c)) for c in range(3)], -1)
        base += rng.normal(0, 6, base.shape)
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


@pytest.fixture(scope="session")
def random_inception_weights(tmp_path_factory):
    """A seeded, randomly initialised InceptionV3 of torch-fidelity's architecture, saved as a weights file,
    so the real loading path (--inception-weights) is exercised without any download."""
    import torch
    from unittest import mock

    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    torch.manual_seed(0)
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, strict=True: None), \
            mock.patch("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", return_value={}):
        model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
    # Data-dependent BatchNorm statistics: without them a random network maps every image to nearly the
    # same features, and metric comparisons on it could not fail.
    from benchmark.sample import render

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    batch = torch.stack([torch.from_numpy(np.array(render(i))).permute(2, 0, 1) for i in range(8)])
    model.train()
    with torch.no_grad():
        model(batch)
    model.eval()
    path = tmp_path_factory.mktemp("weights") / "random-inception.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """(captioner path, generator path): tiny random BLIP and Stable Diffusion, saved as real model folders."""
    from tiny_models import tiny_blip, tiny_stable_diffusion

    root = tmp_path_factory.mktemp("models")
    return tiny_blip(root / "blip"), tiny_stable_diffusion(root / "sd")
