import os
import pathlib
import sys

# The suite runs in parallel workers (pyproject's `-n auto --dist loadfile`, pytest-xdist), each file's tests in
# one. Several workers each on every core oversubscribe them (a math pool created with more threads than its
# share stays several times slower), so a worker's torch and BLAS get one thread, set before they load; a
# user's own setting wins, and `-n 0` runs the suite in this process with the usual threads.
# Inception still runs on two (metrics.inception.at_least_two_threads): its threads wait passively, or their
# spinning against the other worker made it 28% slower than one thread, where passive is as fast (measured here).
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402 - after the thread settings, which numpy's BLAS reads when it loads
import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # test codecs are importable as codecs_for_tests:Class (also in subprocesses)


# The packages whose resolution has changed results before (float32 rounding, API changes): every run of the
# suite says which versions it ran with, so a failure after a fresh install can be traced to the one that moved.
RESOLVED = ("numpy", "scipy", "pandas", "pyarrow", "torch", "torchvision", "torch-fidelity", "transformers",
            "diffusers", "pillow", "bjontegaard", "imagecodecs", "pyiqa")


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: a worker per core, at most four (each holds torch and its test's networks; a file's module
    fixtures are built once per worker, so more workers add little)."""
    return max(1, min(os.cpu_count() or 1, 4))


def pytest_terminal_summary(terminalreporter):
    from importlib import metadata

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "absent"

    terminalreporter.write_line("tested with " + ", ".join(f"{n} {version(n)}" for n in RESOLVED))


# `CMCBENCH_TEST_DOWNLOADS=fake pytest` simulates a machine with internet: weight downloads succeed and
# serve random-init files of the right architecture. The default, as on CI, is that every download fails.
FAKE_DOWNLOADS = os.environ.get("CMCBENCH_TEST_DOWNLOADS") == "fake"
REAL_HUB_DOWNLOAD = __import__("metrics.download", fromlist=["hub_download"]).hub_download


@pytest.fixture(autouse=True)
def hermetic(tmp_path_factory, monkeypatch):
    """No test touches the network or the user's caches and configuration: temporary torch, Hugging Face and
    trackers' homes, offline and no-telemetry flags (inherited by every subprocess a test starts), no weight
    paths from the user's environment."""
    isolate(tmp_path_factory, monkeypatch)


@pytest.fixture(scope="module")
def hermetic_module(tmp_path_factory):
    """The same for a module-scoped fixture, which runs before any test's own `hermetic`: ask for it first."""
    with pytest.MonkeyPatch.context() as mp:
        isolate(tmp_path_factory, mp)
        yield


def isolate(tmp_path_factory, monkeypatch) -> None:
    home = tmp_path_factory.mktemp("home")
    for var in ("TORCH_HOME", "HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME", "XDG_CONFIG_HOME",
                "SENTENCE_TRANSFORMERS_HOME", "WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "CMCBENCH_OFFLINE", "DO_NOT_TRACK",
                "DVC_NO_ANALYTICS"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # MLflow 3 reports usage unless told not to
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("CMCBENCH_INCEPTION_WEIGHTS", "CMCBENCH_INCEPTION_SHA256", "CMCBENCH_LPIPS_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    if FAKE_DOWNLOADS:
        import metrics.download

        monkeypatch.setattr(metrics.download, "hub_download", _fake_hub_download)


@pytest.fixture
def no_downloads(monkeypatch):
    """In either download mode, the real download function (offline unless the test unsets CMCBENCH_OFFLINE)."""
    import metrics.download

    monkeypatch.setattr(metrics.download, "hub_download", REAL_HUB_DOWNLOAD)


def _fake_hub_download(url: str, hash_prefix: str, progress: bool = True, folder: str = "checkpoints") -> str:
    """A stand-in for the network: random-init weights of the architecture `url` names."""
    import torch

    target = pathlib.Path(torch.hub.get_dir()) / folder / url.rsplit("/", 1)[1]
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        if "alexnet" in url:
            import torchvision

            torch.manual_seed(0)
            torch.save(torchvision.models.alexnet(weights=None).state_dict(), target)
        elif "inception" in url:
            torch.save({"fake": torch.zeros(1)}, target)  # the wrong hash: cmcbench must call it corrupt
        else:
            raise OSError(f"downloading {url} failed (the fake network has no such file)")
    return str(target)


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
    from benchmark.data.sample import render

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
