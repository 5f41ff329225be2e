"""Patches for FID/256 (HiFiC, Mentzer et al. 2020): FID over few large images means nothing, so each image
is cut into non-overlapping 256x256 patches, plus a second grid shifted by 128 pixels in both directions."""

from __future__ import annotations

import numpy as np

from metrics.spec import MetricInfo

PATCH = 256


def fid256_patches(image: np.ndarray, size: int = PATCH) -> list[np.ndarray]:
    h, w = image.shape[:2]
    out = []
    for offset in (0, size // 2):
        for y in range(offset, h - size + 1, size):
            for x in range(offset, w - size + 1, size):
                out.append(image[y:y + size, x:x + size])
    return out


SPECS = [
    MetricInfo("patch_fid", "Patch FID (FID/256)", False, "set", "pFID", columns=(("n_patches", "float64"),),
               needs=("features",), state="inception", tolerance=0.5, default=False),
]
