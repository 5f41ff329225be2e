"""Precision, recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020) of a set of
reconstructions against the originals, from per-image features.

Each sample's k-NN radius is the distance to its k-th nearest neighbour in its own set (itself excluded).
- precision: the share of reconstructions inside some original's radius (realism);
- recall: the share of originals inside some reconstruction's radius (diversity);
- density: how many originals' radii hold each reconstruction, / k, averaged (can exceed 1);
- coverage: the share of originals whose radius holds some reconstruction.
Precision and recall count a distance equal to the radius as inside, as torch-fidelity's `prc` does;
density and coverage count it outside, as the authors' `prdc` package does. Distances are computed in
float64 in row blocks, so memory is `block` x n, never n x n.
"""

from __future__ import annotations

import numpy as np

DEFAULT_K = 5  # Naeem et al.'s recommendation, and Stein et al.'s in DINOv2 space (torch-fidelity's prc uses 3)
BLOCK = 2048


def _squared_distances(a: np.ndarray, b: np.ndarray, b_norms: np.ndarray) -> np.ndarray:
    d = (a * a).sum(axis=1)[:, None] + b_norms[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def _blocks(a: np.ndarray, b: np.ndarray, block: int):
    b_norms = (b * b).sum(axis=1)
    for start in range(0, len(a), block):
        yield start, _squared_distances(a[start:start + block], b, b_norms)


def knn_radii(x: np.ndarray, k: int, block: int = BLOCK) -> np.ndarray:
    """Squared distance of each row of x to its k-th nearest other row."""
    out = np.empty(len(x))
    for start, d in _blocks(x, x, block):
        out[start:start + len(d)] = np.partition(d, k, axis=1)[:, k]  # column 0 of the sorted row is itself
    return out


def prdc(fake: np.ndarray, real: np.ndarray, k: int = DEFAULT_K, block: int = BLOCK) -> dict[str, float]:
    """{precision, recall, density, coverage} of `fake` (reconstructions) against `real` (originals)."""
    fake, real = np.asarray(fake, np.float64), np.asarray(real, np.float64)
    if min(len(fake), len(real)) <= k:
        raise ValueError(f"precision/recall need more than k={k} samples per set (have {len(fake)} and {len(real)}).")
    real_r, fake_r = knn_radii(real, k, block), knn_radii(fake, k, block)
    precise = np.zeros(len(fake), bool)
    inside = np.zeros(len(fake))
    recalled = np.zeros(len(real), bool)
    covered = np.zeros(len(real), bool)
    for start, d in _blocks(real, fake, block):  # rows: originals, columns: reconstructions
        r = real_r[start:start + len(d), None]
        precise |= (d <= r).any(axis=0)
        inside += (d < r).sum(axis=0)
        recalled[start:start + len(d)] = (d <= fake_r[None, :]).any(axis=1)
        covered[start:start + len(d)] = d.min(axis=1) < r[:, 0]
    return {"precision": float(precise.mean()), "recall": float(recalled.mean()),
            "density": float(inside.sum() / (k * len(fake))), "coverage": float(covered.mean())}
