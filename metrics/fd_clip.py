"""FD-CLIP: the Frechet distance between the CLIP image embeddings of a setting's reconstructions and those of
their originals, the FID formula in the feature space of the CLIP model a run loads for CLIP similarity and CLIP
score (`--clip auto`, openai/clip-vit-large-patch14, or any CLIP by id or folder). CLIP's space knows far more
than ImageNet's classes, so it ranks generated images where Inception's does not (Kynkaanniemi et al., "The Role
of ImageNet Classes in Frechet Inception Distance", ICLR 2023).

The features are the unit-normalised projected image embeddings that CLIP similarity compares, through the
model's own CLIPProcessor. Originals are embedded once per (pixels, weights) and cached; set metrics come from
the stored embeddings. Off by default: `--clip auto --add-metric fd_clip`.
"""

from __future__ import annotations

import numpy as np

from metrics.spec import FeatureSpace, MetricInfo

SPECS = [
    FeatureSpace("clip", "CLIP", "image_metrics.clip", "metrics.fd_clip:extractor"),
    MetricInfo("fd_clip", "FD-CLIP (Frechet distance in CLIP image space)", False, "set", "FD-CLIP",
               columns=(("n_clip", "float64"),), needs=("features",), state="image_metrics.clip", tolerance="2%",
               default=False, space="clip", fn="metrics.fd_clip:frechet_distance", resample=True),
]


class CLIPImageFeatures:
    """Batched unit-normalised CLIP image embeddings that count every image sent through the network."""

    def __init__(self, state: dict, device: str, batch_size: int):
        from metrics.clip import load
        from metrics.defaults import pick_device

        self.clip = load(state, pick_device(device))
        self.batch_size = batch_size
        self.passes = 0

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        out = [self.clip.image_embeddings(images[start:start + self.batch_size]).float().cpu().numpy()
               for start in range(0, len(images), self.batch_size)]
        self.passes += len(images)
        return np.concatenate(out) if out else np.zeros((0, self.clip.model.config.projection_dim), np.float32)


def extractor(state: dict, device: str, batch_size: int) -> CLIPImageFeatures:
    return CLIPImageFeatures(state, device, batch_size)


def frechet_distance(features: np.ndarray, reference, state: dict) -> tuple[float, str]:
    from metrics.fid import frechet_distance as fd

    return fd(features, reference, "FD-CLIP")
