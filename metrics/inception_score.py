"""Inception Score from the 1008 unbiased logits: torch-fidelity's procedure (seeded shuffle, splits)."""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, softmax

from metrics import defaults
from metrics.spec import MetricInfo, Option


def inception_score(logits: np.ndarray, splits: int = defaults.ISC_SPLITS, seed: int = defaults.SEED,
                    shuffle: bool = True) -> tuple[float, float]:
    """(mean, std) over `splits` of exp(E[KL(p(y|x) || p(y))])."""
    logits = np.asarray(logits)
    n = len(logits)
    if n < splits:
        raise ValueError(f"The Inception Score with {splits} splits needs at least {splits} images, got {n}.")
    if shuffle:
        logits = logits[np.random.RandomState(seed).permutation(n)]
    logits = logits.astype(np.float64)
    p, log_p = softmax(logits, axis=1), log_softmax(logits, axis=1)
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        q = p[lo:hi].mean(axis=0, keepdims=True)
        kl = (p[lo:hi] * (log_p[lo:hi] - np.log(q))).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


SPECS = [
    Option("--isc-splits", "inception.isc_splits", defaults.ISC_SPLITS, positive=True,
           help=f"Inception Score splits (default {defaults.ISC_SPLITS})"),
    MetricInfo("inception_score", "Inception Score", True, "set", "IS", columns=(("inception_score_std", "float64"),),
               needs=("features",), state="inception", tolerance=0.05, space="inception",
               fn="metrics.inception:whole_image_metrics"),
]
