"""Fréchet Inception Distance from features or from mergeable moments, in float64: one exact formula.

FID = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2). The last term is computed in a symmetric, stable
form: with S1 = R R^T (its Cholesky factor, or its symmetric square root when S1 is singular) and the other
set's centred features X scaled by 1/sqrt(n2 - 1), S1 S2 is similar to (X R)^T (X R), so tr sqrt(S1 S2) is
the sum of the square roots of that symmetric PSD matrix's eigenvalues. Its cost is one triangular product,
one symmetric rank-k update and one symmetric eigenvalue problem; S2 itself is never formed. torch-fidelity
takes the eigenvalues of the non-symmetric S1 S2, which costs several times more and, when a set is smaller
than the feature size, carries round-off from its near-zero eigenvalues. When the two sets together have no
more samples than features, the same trace is the nuclear norm of an n1 x n2 matrix (`fid_low_rank`), exact
and thousands of times cheaper. Every FID cmcbench reports (summary, bootstrap, compare, leaderboard) comes
from `fid` or `FIDReference`, so they agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metrics.spec import MetricInfo

# Below this many images per set a Frechet distance is biased upwards (its estimate falls as n grows): the
# summary notes it, and values compare only at equal counts (torch-fidelity's and the FID paper's 2048).
MIN_SAMPLES = 2048


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
    """tr sqrt(S1 S2) from two covariances: the eigenvalues of R^T S2 R with S1 = R R^T (R from Cholesky, or
    S1^1/2 when S1 is singular or its square root is given). Used where only moments are kept."""
    root = sqrt_sigma1 if sqrt_sigma1 is not None else covariance_root(sigma1)[0]
    inner = root.T @ np.asarray(sigma2, np.float64) @ root
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eig, 0, None)).sum())


def covariance_root(sigma: np.ndarray) -> tuple[np.ndarray, bool]:
    """(R, lower triangular) with R R^T = sigma: the lower Cholesky factor (a third of an eigendecomposition's
    cost), or the symmetric square root when sigma is singular and Cholesky fails."""
    try:
        return np.linalg.cholesky(np.asarray(sigma, np.float64)), True
    except np.linalg.LinAlgError:
        return psd_sqrt(sigma), False


def fid_from_statistics(mu1, sigma1, mu2, sigma2, sqrt_sigma1: np.ndarray | None = None) -> float:
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    tr_covmean = trace_sqrt_product(sigma1, sigma2, sqrt_sigma1)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid(features_1: np.ndarray, features_2: np.ndarray) -> float:
    """FID between two feature sets, exactly: the low-rank form for small sets, else the symmetric one."""
    return FIDReference(features_1).distance(features_2)


def _trace_sqrt_against(root: np.ndarray, triangular: bool, centred_t: np.ndarray) -> float:
    """tr sqrt(R R^T X^T X) = sum of sqrt(eig((X R)^T (X R))), for X given transposed (d x n, Fortran
    order, scaled) so that BLAS takes it without a copy. A triangular R is applied by trmm (half a gemm);
    the product's Gram matrix by syrk (half again); only its upper triangle is formed and read."""
    from scipy.linalg import blas, eigvalsh

    if triangular:
        product_t = blas.dtrmm(1.0, root.T, centred_t, side=0, lower=0, trans_a=0, overwrite_b=True)  # R^T X^T
    else:
        product_t = root.T @ centred_t
    gram = blas.dsyrk(1.0, product_t, trans=0, lower=0)  # (X R)^T (X R), upper triangle
    eig = eigvalsh(gram, lower=False, overwrite_a=True, check_finite=False, driver="evd")
    return float(np.sqrt(np.clip(eig, 0, None)).sum())


class FIDReference:
    """One reference set (a run's originals) against many others (its settings): the reference's mean,
    covariance trace and covariance root are computed once, so each further FID on sets larger than the
    feature size costs a triangular product, a rank-k update and one symmetric eigenvalue problem. FID is
    symmetric in its two sets."""

    def __init__(self, features: np.ndarray):
        self.features = np.asarray(features)
        self._prepared = None

    def _prepare(self) -> tuple[np.ndarray, float, np.ndarray, bool]:
        if self._prepared is None:
            mu, sigma = statistics(self.features)
            self._prepared = (mu, float(np.trace(sigma)), *covariance_root(sigma))
        return self._prepared

    def distance(self, features: np.ndarray) -> float:
        f = np.asarray(features)
        if min(len(f), len(self.features)) < 2:
            raise ValueError(f"FID needs at least 2 samples per set, got {min(len(f), len(self.features))}.")
        if len(f) + len(self.features) <= f.shape[1]:
            return fid_low_rank(self.features, f)
        mu1, trace1, root, triangular = self._prepare()
        f = np.asarray(f, np.float64)
        mu2 = f.mean(axis=0)
        centred = f - mu2
        centred /= np.sqrt(len(f) - 1)
        trace2 = float(np.einsum("ij,ij->", centred, centred))  # tr S2
        diff = mu1 - mu2
        # centred.T is X^T in Fortran order, as BLAS takes it without a copy
        return float(diff @ diff + trace1 + trace2 - 2 * _trace_sqrt_against(root, triangular, centred.T))


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


def frechet_distance(features: np.ndarray, reference: "FIDReference", label: str) -> tuple[float, str]:
    """A set's Frechet distance to the originals' features in any feature space, with the note its count needs
    (`label` names it in the note: 'FD-DINOv2')."""
    n = len(features)
    if n < 2:
        return float("nan"), f"{label} needs at least 2 images per set"
    note = f"{label} from {n} < {MIN_SAMPLES} samples: biased, compare only at equal counts" if n < MIN_SAMPLES else ""
    return reference.distance(features), note


SPECS = [
    MetricInfo("fid", "FID", False, "set", "FID", needs=("features",), state="inception", tolerance=0.5,
               space="inception", fn="metrics.inception:whole_image_metrics"),
]
