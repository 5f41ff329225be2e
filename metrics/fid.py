"""Fréchet Inception Distance from features or from mergeable moments, in float64: one exact formula.

FID = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2). The last term is computed in a symmetric, stable
form: tr sqrt(S1^1/2 S2 S1^1/2), the eigenvalues of a symmetric PSD matrix (torch-fidelity takes the
eigenvalues of the non-symmetric S1 S2, which costs several times more and, when a set is smaller than the
feature size, carries round-off from its near-zero eigenvalues). When the two sets together have no more
samples than features, the same trace is the nuclear norm of an n1 x n2 matrix (`fid_low_rank`), exact
and thousands of times cheaper. Every FID cmcbench reports (summary, bootstrap, compare, leaderboard)
comes from `fid`, so they agree.
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


def psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance (negative round-off eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh(np.asarray(sigma, np.float64))
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1, sigma2, sqrt_sigma1: np.ndarray | None = None) -> float:
    """tr sqrt(S1 S2) from the eigenvalues of a symmetric PSD matrix similar to S1 S2: R^T S2 R, where R is
    the Cholesky factor of S1 (a third of the cost of an eigendecomposition), or S1^1/2 when S1 is singular
    (Cholesky fails) or its square root is given (shared by many calls)."""
    root = sqrt_sigma1
    if root is None:
        try:
            root = np.linalg.cholesky(np.asarray(sigma1, np.float64))
        except np.linalg.LinAlgError:
            root = psd_sqrt(sigma1)
    inner = root.T @ np.asarray(sigma2, np.float64) @ root
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eig, 0, None)).sum())


def fid_from_statistics(mu1, sigma1, mu2, sigma2, sqrt_sigma1: np.ndarray | None = None) -> float:
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    tr_covmean = trace_sqrt_product(sigma1, sigma2, sqrt_sigma1)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid(features_1: np.ndarray, features_2: np.ndarray) -> float:
    """FID between two feature sets, exactly: the low-rank form for small sets, else the symmetric one."""
    a, b = np.asarray(features_1), np.asarray(features_2)
    if min(len(a), len(b)) < 2:
        raise ValueError(f"FID needs at least 2 samples per set, got {min(len(a), len(b))}.")
    if len(a) + len(b) <= a.shape[1]:
        return fid_low_rank(a, b)
    return fid_from_statistics(*statistics(a), *statistics(b))


class FIDReference:
    """One reference set (a run's originals) against many others (its settings): the reference's mean,
    covariance and covariance square root are computed once, so each further FID on sets larger than the
    feature size costs one covariance and one symmetric eigendecomposition. FID is symmetric in its two sets."""

    def __init__(self, features: np.ndarray):
        self.features = np.asarray(features)
        self._stats = None
        self._root = None

    def distance(self, features: np.ndarray) -> float:
        f = np.asarray(features)
        if min(len(f), len(self.features)) < 2:
            raise ValueError(f"FID needs at least 2 samples per set, got {min(len(f), len(self.features))}.")
        if len(f) + len(self.features) <= f.shape[1]:
            return fid_low_rank(f, self.features)
        if self._stats is None:
            self._stats = statistics(self.features)
            self._root = psd_sqrt(self._stats[1])
        mu, sigma = self._stats
        return fid_from_statistics(mu, sigma, *statistics(f), sqrt_sigma1=self._root)


def fid_from_moments(m1: FeatureMoments, m2: FeatureMoments) -> float:
    return fid_from_statistics(m1.mean(), m1.covariance(), m2.mean(), m2.covariance())


def fid_low_rank(features_1: np.ndarray, features_2: np.ndarray) -> float:
    """FID, exactly, through an n1 x n2 matrix instead of d x d when sets are smaller than the feature size.

    With centred features A (n1 x d) and B (n2 x d), the non-zero eigenvalues of S1 S2 are the squared
    singular values of A B^T / sqrt((n1-1)(n2-1)), so tr sqrt(S1 S2) is that matrix's nuclear norm. It makes
    bootstrap resamples of small sets (Kodak, a CI job's subset) cheap; larger sets use the symmetric form.
    """
    a = np.asarray(features_1, np.float64)
    b = np.asarray(features_2, np.float64)
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        raise ValueError(f"FID needs at least 2 samples per set, got {min(n1, n2)}.")
    if n1 + n2 > a.shape[1]:
        return fid_from_statistics(*statistics(a), *statistics(b))
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    a, b = a - mu1, b - mu2
    tr1, tr2 = (a * a).sum() / (n1 - 1), (b * b).sum() / (n2 - 1)
    nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(diff @ diff + tr1 + tr2 - 2 * nuclear)
