"""PSNR on 8-bit RGB: one MSE over all pixels and channels, peak 255 (inf for identical images)."""

import numpy as np

from metrics.spec import MetricInfo

# PSNR above 100 dB (MSE below 6.5e-6: fewer than one 1-level error per 150,000 8-bit samples) is lossless
# for every practical purpose; averages count such an image at 100 dB, as compression benchmarks cap it.
PSNR_CAP_DB = 100.0


def psnr(reference: np.ndarray, reconstruction: np.ndarray) -> float:
    if reference.shape != reconstruction.shape:
        raise ValueError(f"PSNR needs equal shapes, got {reference.shape} and {reconstruction.shape}.")
    diff = np.subtract(reference, reconstruction, dtype=np.int32)
    np.square(diff, out=diff)
    mse = int(diff.sum(dtype=np.int64)) / diff.size  # exact sum of squared errors
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


# ITU-R BT.601 luma on the 8-bit studio range (16..235), as MATLAB's rgb2ycbcr and the super-resolution and
# learned-compression papers that report "PSNR-Y" compute it.
BT601_Y = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)


def luma_bt601(image: np.ndarray) -> np.ndarray:
    """Y of an 8-bit RGB image, float64 in 16..235 (not rounded)."""
    return 16.0 + np.asarray(image, np.float64) @ np.array(BT601_Y)


def psnr_y(reference: np.ndarray, reconstruction: np.ndarray) -> float:
    """PSNR of the BT.601 luma channel, peak 255 (inf for identical luma)."""
    if reference.shape != reconstruction.shape:
        raise ValueError(f"PSNR-Y needs equal shapes, got {reference.shape} and {reconstruction.shape}.")
    mse = float(np.mean(np.square(luma_bt601(reference) - luma_bt601(reconstruction))))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


SPECS = [
    MetricInfo("psnr", "PSNR (dB)", True, "pixels", "PSNR", needs=("pixels",), tolerance=0.02, fn="metrics.psnr:psnr",
               cap=PSNR_CAP_DB),
    MetricInfo("psnr_y", "PSNR-Y (dB, BT.601 luma)", True, "pixels", "PSNR-Y", needs=("pixels",), tolerance=0.02,
               fn="metrics.psnr:psnr_y", default=False, cap=PSNR_CAP_DB),
]
