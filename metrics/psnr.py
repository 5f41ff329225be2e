"""PSNR on 8-bit RGB: one MSE over all pixels and channels, peak 255 (inf for identical images)."""

import numpy as np


def psnr(reference: np.ndarray, reconstruction: np.ndarray) -> float:
    if reference.shape != reconstruction.shape:
        raise ValueError(f"PSNR needs equal shapes, got {reference.shape} and {reconstruction.shape}.")
    diff = np.subtract(reference, reconstruction, dtype=np.int32)
    np.square(diff, out=diff)
    mse = int(diff.sum(dtype=np.int64)) / diff.size  # exact sum of squared errors
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)
