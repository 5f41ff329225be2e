"""Named preprocessing presets, applied once to each image before any codec or metric sees it."""

from __future__ import annotations

import re
from typing import Callable

import numpy as np
from PIL import Image

from benchmark.data.imageio import BadImage


def attngan_bbox_crop(pixels: np.ndarray, bbox) -> np.ndarray:
    """AttnGAN's CUB crop (datasets.get_imgs): a square of 1.5 x max(bbox w, h) around the bird's centre."""
    height, width = pixels.shape[:2]
    x, y, w, h = bbox
    r = int(np.maximum(w, h) * 0.75)
    center_x = int((2 * x + w) / 2)
    center_y = int((2 * y + h) / 2)
    y1, y2 = max(0, center_y - r), min(height, center_y + r)
    x1, x2 = max(0, center_x - r), min(width, center_x + r)
    if y2 <= y1 or x2 <= x1:
        raise BadImage(f"bounding box {tuple(bbox)} lies outside the {width}x{height} image")
    return pixels[y1:y2, x1:x2]


def resize(pixels: np.ndarray, size: int) -> np.ndarray:
    if pixels.shape[0] == size and pixels.shape[1] == size:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.BICUBIC))


CMC2021_SIDE = 256


def _cmc2021(pixels, record):
    if record.bbox is not None:
        pixels = attngan_bbox_crop(pixels, record.bbox)
    return resize(pixels, CMC2021_SIDE)


PRESETS: dict[str, tuple[str, Callable]] = {
    "none": ("the image as read, normalised to 8-bit RGB", lambda p, r: p),
    "cmc2021": ("CMC (ACM MM 2021) protocol: CUB cropped around the bird's bounding box as AttnGAN does, "
                "then every image resized to 256x256 (bicubic)", _cmc2021),
}


def get_preset(name: str) -> tuple[str, Callable]:
    """Return (description, function(pixels, record) -> pixels); 'resize-N' resizes to N x N."""
    if name in PRESETS:
        return PRESETS[name]
    m = re.fullmatch(r"resize-(\d+)", name)
    if m:
        n = int(m.group(1))
        if n < 1:  # every image would fail as it is read: said once, before any work
            raise ValueError(f"Preprocessing {name!r}: resize-N takes a side of at least 1 pixel, e.g. resize-256.")
        return f"resized to {n}x{n} (bicubic)", lambda p, r: resize(p, n)
    raise ValueError(f"Unknown preprocessing {name!r}: use one of {', '.join(PRESETS)} or resize-N.")


def output_side(name: str) -> int | None:
    """The side of the square images a preprocessing gives, or None where it keeps each image's size."""
    if name == "cmc2021":
        return CMC2021_SIDE
    m = re.fullmatch(r"resize-(\d+)", name)
    return int(m.group(1)) if m else None
