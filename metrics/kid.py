"""Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel, in float64.

With subsets strictly smaller than both sets, it is torch-fidelity's procedure (seeded random subsets,
mean and std over them) and equals torch-fidelity. When the subset size reaches a set's size, every
"subset" would be the whole set and their std would be round-off posing as certainty (torch-fidelity
refuses this case): KID is then the unbiased MMD^2 over the whole sets, once, and the std is NaN.
`mmd2_weighted` is the same statistic on a bootstrap resample, where an image drawn k times must not be
paired with itself: pairs of the same image are left out, as the diagonal is in the unbiased estimator.
"""

from __future__ import annotations

import numpy as np


def _poly(x, y, degree, gamma, coef0):
    return (x @ y.T * (1.0 / x.shape[1] if gamma is None else gamma) + coef0) ** degree


def mmd2_unbiased(k_xx, k_xy, k_yy) -> float:
    m = k_xx.shape[0]
    kt_xx = k_xx.sum() - np.trace(k_xx)
    kt_yy = k_yy.sum() - np.trace(k_yy)
    return float((kt_xx + kt_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def mmd2_whole(k_xx, k_xy, k_yy) -> float:
    """Unbiased MMD^2 of two whole sets of sizes m and n (m may differ from n)."""
    m, n = k_xx.shape[0], k_yy.shape[0]
    return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
                 - 2 * k_xy.sum() / (m * n))


def mmd2_weighted(k_xx, k_xy, k_yy, counts) -> float:
    """Unbiased MMD^2 of a bootstrap resample of paired sets (x_i reconstructs y_i) that draws image i
    `counts[i]` times, without the bias duplicates bring: within a set, every pair of copies of one image
    is left out (as the diagonal is without duplicates); across the sets, an image's reconstruction meets its
    own original once per copy (as each x_i meets y_i once), not once per pair of copies. With all counts 1
    this is exactly `mmd2_whole`."""
    w = np.asarray(counts, np.float64)
    m = w.sum()
    same = float((w * w).sum())
    within = (float(w @ k_xx @ w - (w * w) @ np.diag(k_xx)) + float(w @ k_yy @ w - (w * w) @ np.diag(k_yy))) \
        / (m * m - same)
    across = float(w @ k_xy @ w - (w * w - w) @ np.diag(k_xy)) / (m * m - same + m)
    return within - 2 * across


def kernels(features_1, features_2, degree: int = 3, gamma: float | None = None, coef0: float = 1.0):
    """(K_xx, K_xy, K_yy) of the cubic polynomial kernel, once, in float64."""
    a = np.asarray(features_1, dtype=np.float64)
    b = np.asarray(features_2, dtype=np.float64)
    return _poly(a, a, degree, gamma, coef0), _poly(a, b, degree, gamma, coef0), _poly(b, b, degree, gamma, coef0)


def uses_subsets(n1: int, n2: int, subset_size: int) -> bool:
    return subset_size < min(n1, n2)


def kid(features_1: np.ndarray, features_2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 2020, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> tuple[float, float]:
    """(mean, std) of MMD^2 over `subsets` random subsets of `subset_size` samples; when the subset size is not
    smaller than both sets, (MMD^2 over the whole sets, NaN)."""
    f1 = np.asarray(features_1, dtype=np.float64)
    f2 = np.asarray(features_2, dtype=np.float64)
    if min(len(f1), len(f2)) < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(f1)} and {len(f2)}.")
    if not uses_subsets(len(f1), len(f2), subset_size):
        return mmd2_whole(*kernels(f1, f2, degree, gamma, coef0)), float("nan")
    size = subset_size
    rng = np.random.RandomState(seed)
    mmds = np.zeros(subsets)
    for i in range(subsets):
        a = f1[rng.choice(len(f1), size, replace=False)]
        b = f2[rng.choice(len(f2), size, replace=False)]
        mmds[i] = mmd2_unbiased(_poly(a, a, degree, gamma, coef0), _poly(a, b, degree, gamma, coef0),
                                _poly(b, b, degree, gamma, coef0))
    return float(np.mean(mmds)), float(np.std(mmds))
