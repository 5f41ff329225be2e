"""Instance Perceptual Distance (CMC, ACM MM 2021): per image, the squared Euclidean distance between the
Inception pool3 features of the original and of its reconstruction; a setting's IPD is the mean."""

from __future__ import annotations

import numpy as np

from metrics.spec import MetricInfo


def instance_perceptual_distance(original: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """Row-wise squared distances; rows must already be paired by image id."""
    a = np.asarray(original, dtype=np.float64)
    b = np.asarray(reconstruction, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"IPD pairs features one to one, got shapes {a.shape} and {b.shape}.")
    return np.square(a - b).sum(axis=-1)


SPECS = [
    MetricInfo("ipd", "IPD (instance perceptual distance)", False, "features", "IPD",
               needs=("network:inception-v3",), state="inception", tolerance=1e-3),
]
