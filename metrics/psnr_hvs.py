"""PSNR-HVS and PSNR-HVS-M (Egiazarian et al. 2006; Ponomarenko et al. 2007): PSNR of the 8x8 DCT-domain error
weighted by the contrast sensitivity function, and for HVS-M less what between-coefficient contrast masking
hides, on BT.601 luma. Computed by the maintained psnr-hvsm package (its NumPy backend, whatever
PSNR_HVSM_BACKEND says), whose values its authors check against TID2013.

The luma is the package's own BT.601 conversion of 8-bit RGB, rounded to code values as the reference
implementation does. Blocks that do not fit whole at the right and bottom edges are left out, as Ponomarenko's
reference code steps over whole 8x8 blocks only. Identical images give 100 dB (the package's convention and
cmcbench's PSNR cap). Off by default: `--add-metric psnr_hvs --add-metric psnr_hvsm`.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from metrics.spec import MetricInfo

_PACKAGE = dict(requires=("psnr_hvsm",), install="the psnr-hvsm package: pip install psnr-hvsm")
SPECS = [
    MetricInfo("psnr_hvs", "PSNR-HVS (dB, BT.601 luma)", True, "pixels", "PSNR-HVS", needs=("pixels",),
               tolerance=0.01, fn="metrics.psnr_hvs:psnr_hvs", default=False, cap=100.0, **_PACKAGE),
    MetricInfo("psnr_hvsm", "PSNR-HVS-M (dB, BT.601 luma)", True, "pixels", "PSNR-HVS-M", needs=("pixels",),
               tolerance=0.01, fn="metrics.psnr_hvs:psnr_hvsm", default=False, cap=100.0, **_PACKAGE),
]


def _package():
    with contextlib.redirect_stdout(io.StringIO()):  # it prints to stdout when its optional backends are missing
        import psnr_hvsm
    return psnr_hvsm


def psnr_hvs_hvsm(reference: np.ndarray, reconstruction: np.ndarray) -> tuple[float, float]:
    """(PSNR-HVS, PSNR-HVS-M) of two 8-bit RGB images over their whole 8x8 blocks."""
    if reference.shape != reconstruction.shape:
        raise ValueError(f"PSNR-HVS needs equal shapes, got {reference.shape} and {reconstruction.shape}.")
    h, w = (n - n % 8 for n in reference.shape[:2])
    if not h or not w:
        return float("nan"), float("nan")
    numpy_backend = _package().BACKENDS["numpy"]
    luma = [numpy_backend["bt601ycbcr"](np.asarray(im[:h, :w], np.uint8))[0] for im in (reference, reconstruction)]
    with np.errstate(divide="ignore"):  # identical blocks: its 100 dB, from a division it also evaluates
        hvs, hvsm = numpy_backend["psnr_hvs_hvsm"](*luma)
    return float(hvs), float(hvsm)


def _scored(value: float, name: str):
    return (value, "") if not np.isnan(value) else (value, f"{name} needs an image of at least 8 x 8 pixels")


def psnr_hvs(reference: np.ndarray, reconstruction: np.ndarray):
    return _scored(psnr_hvs_hvsm(reference, reconstruction)[0], "psnr_hvs")


def psnr_hvsm(reference: np.ndarray, reconstruction: np.ndarray):
    return _scored(psnr_hvs_hvsm(reference, reconstruction)[1], "psnr_hvsm")
