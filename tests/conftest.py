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
