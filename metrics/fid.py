"""Fréchet Inception Distance from features or from mergeable moments, in float64.

`FeatureMoments` (count, sum, sum of outer products) combine exactly across shards and machines;
the distance itself is torch-fidelity's formula (trace of the square root of sigma1 @ sigma2 through
its eigenvalues), so numbers agree with `torch_fidelity.calculate_metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FeatureMoments:
    n: int
    total: np.ndarray  # (d,) float64
    outer: np.ndarray  # (d, d) float64

    @classmethod
    def of(cls, features: np.ndarray) -> "FeatureMoments":
        f = np.asarray(features, dtype=np.float64)
        return cls(len(f), f.sum(axis=0), f.T @ f)

    @classmethod
    def empty(cls, dim: int) -> "FeatureMoments":
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    def merge(self, other: "FeatureMoments") -> "FeatureMoments":
        return FeatureMoments(self.n + other.n, self.total + other.total, self.outer + other.outer)

    def mean(self) -> np.ndarray:
        return self.total / self.n

    def covariance(self) -> np.ndarray:
        """Unbiased sample covariance (as np.cov), from the moments."""
        if self.n < 2:
            raise ValueError(f"A covariance needs at least 2 samples, got {self.n}.")
        mu = self.mean()
        return (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of features in float64."""
    f = np.asarray(features, dtype=np.float64)
    if len(f) < 2:
        raise ValueError(f"FID needs at least 2 samples per set, got {len(f)}.")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def fid_from_statistics(mu1, sigma1, mu2, sigma2) -> float:
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    eig = np.linalg.eigvals(np.asarray(sigma1, np.float64) @ np.asarray(sigma2, np.float64))
    tr_covmean = np.sum(np.sqrt(eig.astype(np.complex128)).real)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid(features_1: np.ndarray, features_2: np.ndarray) -> float:
    return fid_from_statistics(*statistics(features_1), *statistics(features_2))


def fid_from_moments(m1: FeatureMoments, m2: FeatureMoments) -> float:
    return fid_from_statistics(m1.mean(), m1.covariance(), m2.mean(), m2.covariance())


def fid_low_rank(features_1: np.ndarray, features_2: np.ndarray) -> float:
    """FID, exactly, through an n1 x n2 matrix instead of d x d when sets are smaller than the feature size.

    With centred features A (n1 x d) and B (n2 x d), the non-zero eigenvalues of S1 S2 are the squared
    singular values of A B^T / sqrt((n1-1)(n2-1)), so tr sqrt(S1 S2) is that matrix's nuclear norm. It makes
    bootstrap resamples of small sets (Kodak, a CI job's subset) cheap; large sets use `fid`.
    """
    a = np.asarray(features_1, np.float64)
    b = np.asarray(features_2, np.float64)
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        raise ValueError(f"FID needs at least 2 samples per set, got {min(n1, n2)}.")
    if n1 + n2 > a.shape[1]:
        return fid(a, b)
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    a, b = a - mu1, b - mu2
    tr1, tr2 = (a * a).sum() / (n1 - 1), (b * b).sum() / (n2 - 1)
    nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(diff @ diff + tr1 + tr2 - 2 * nuclear)
