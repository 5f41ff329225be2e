"""Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel over seeded random subsets
(torch-fidelity's procedure and defaults), computed in float64, subset size clipped to the set sizes."""

from __future__ import annotations

import numpy as np


def _poly(x, y, degree, gamma, coef0):
    return (x @ y.T * (1.0 / x.shape[1] if gamma is None else gamma) + coef0) ** degree


def mmd2_unbiased(k_xx, k_xy, k_yy) -> float:
    m = k_xx.shape[0]
    kt_xx = k_xx.sum() - np.trace(k_xx)
    kt_yy = k_yy.sum() - np.trace(k_yy)
    return float((kt_xx + kt_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def kid(features_1: np.ndarray, features_2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 2020, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> tuple[float, float]:
    """(mean, std) of MMD^2 over `subsets` random subsets of min(subset_size, n1, n2) samples."""
    f1 = np.asarray(features_1, dtype=np.float64)
    f2 = np.asarray(features_2, dtype=np.float64)
    size = min(subset_size, len(f1), len(f2))
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(f1)} and {len(f2)}.")
    rng = np.random.RandomState(seed)
    mmds = np.zeros(subsets)
    for i in range(subsets):
        a = f1[rng.choice(len(f1), size, replace=False)]
        b = f2[rng.choice(len(f2), size, replace=False)]
        mmds[i] = mmd2_unbiased(_poly(a, a, degree, gamma, coef0), _poly(a, b, degree, gamma, coef0),
                                _poly(b, b, degree, gamma, coef0))
    return float(np.mean(mmds)), float(np.std(mmds))
