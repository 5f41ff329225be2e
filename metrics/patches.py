"""Patches for FID/256 (HiFiC, Mentzer et al. 2020): FID over few large images means nothing, so each image
is cut into non-overlapping 256x256 patches, plus a second grid shifted by 128 pixels in both directions."""

from __future__ import annotations

import numpy as np

from metrics.fid import MIN_SAMPLES, fid
from metrics.spec import MetricInfo, Option

PATCH = 256


def fid256_patches(image: np.ndarray, size: int = PATCH) -> list[np.ndarray]:
    h, w = image.shape[:2]
    out = []
    for offset in (0, size // 2):
        for y in range(offset, h - size + 1, size):
            for x in range(offset, w - size + 1, size):
                out.append(image[y:y + size, x:x + size])
    return out


def patch_fid(features, reference, options: dict) -> tuple[dict, str]:
    """FID/256 over a set's patches against its originals' (`InceptionSet`, `InceptionReference`); NaN with the
    reason under 2 patches, or under the protocol's minimum (`options["patch_fid_min"]`)."""
    patches, ref_patches = features.patches, reference.patches
    n, least = min(len(patches), len(ref_patches)), int(options.get("patch_fid_min") or 0)
    if n < max(2, least):
        why = "patch FID needs images of at least 256x256" if n < 2 else \
            f"no patch FID from {n} < {least} patches (the protocol reports none below {least})"
        return {"patch_fid": float("nan"), "n_patches": len(patches)}, why
    note = f"patch FID from {n} < {MIN_SAMPLES} patches" if n < MIN_SAMPLES else ""
    return {"patch_fid": fid(patches, ref_patches), "n_patches": len(patches)}, note


SPECS = [
    Option("--patch-fid", "inception.patch_fid", False, switch=True,
           help="also FID/256 (HiFiC): FID over 256x256 patches, plus a grid shifted by 128 px; for few large images "
                "such as Kodak"),
    MetricInfo("patch_fid", "Patch FID (FID/256)", False, "set", "pFID", columns=(("n_patches", "float64"),),
               needs=("features",), state="inception", tolerance=0.5, default=False, space="inception",
               fn="metrics.patches:patch_fid"),
]
