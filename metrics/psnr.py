"""PSNR on 8-bit RGB: one MSE over all pixels and channels, peak 255 (inf for identical images)."""

import numpy as np


def psnr(reference: np.ndarray, reconstruction: np.ndarray) -> float:
    if reference.shape != reconstruction.shape:
        raise ValueError(f"PSNR needs equal shapes, got {reference.shape} and {reconstruction.shape}.")
    diff = reference.astype(np.int32) - reconstruction.astype(np.int32)
    mse = float(np.mean(np.square(diff, dtype=np.int64), dtype=np.float64))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)
