"""Segmentation agreement: does a segmentation network still label each pixel of the reconstruction as it labels
the original's? The original's label map is the ground truth (the label-free protocol, as for `classify`).

`--segment auto` is torchvision's deeplabv3_resnet50 with its DEFAULT weights (COCO with the 21 VOC labels);
`--segment NAME` any torchvision segmentation model with its DEFAULT weights; `--segment FILE` a state_dict for
deeplabv3_resnet50. Each image goes through the weights' transforms (resize to 520 px on its shorter side, ImageNet
normalisation) on its uint8 tensor; the label map is the argmax of the network's `out` at that size.

The original's label map is cached as it is, once per (pixels, weights), across runs; a reconstruction stores only
its per-class intersections and unions with its original's map (a paired feature space). Per setting:
- `segment_miou`: the mean over classes of intersection / union, both summed over the setting's images (classes
  that neither map of any image holds are left out): mIoU as segmentation benchmarks pool it;
- `segment_miou_image`: the mean over images of each image's own mIoU (over the classes present in either map).
"""

from __future__ import annotations

import numpy as np

from metrics.spec import FeatureSpace, MetricInfo, Stage
from metrics.torchvision_models import Network, Task

TASK = Task("--segment", "torchvision.models.segmentation", "deeplabv3_resnet50", "segmentation agreement",
            build=(("weights_backbone", None), ("aux_loss", None)))


def resolve(choice: str, cache_root, progress: bool = False) -> dict:
    return TASK.resolve(choice, progress)


class Segmenter(Network):
    """Label maps (uint8, at the transforms' size)."""

    task = TASK

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """One label map per image, in input order; images of one size after the transforms share a batch."""
        ready = [self.preprocess(im) for im in images]
        out: list = [None] * len(images)
        by_shape: dict = {}
        for k, x in enumerate(ready):
            by_shape.setdefault(tuple(x.shape), []).append(k)
        with self.torch.inference_mode():
            for positions in by_shape.values():
                for start in range(0, len(positions), self.batch_size):
                    part = positions[start:start + self.batch_size]
                    logits = self.model(self.torch.stack([ready[k] for k in part]).to(self.device))["out"]
                    for k, labels in zip(part, logits.argmax(1).to(self.torch.uint8).cpu().numpy()):
                        out[k] = labels
                    self.passes += len(part)
        return out


def extractor(state: dict, device: str, batch_size: int) -> Segmenter:
    return Segmenter(state, device, batch_size)


def intersections_and_unions(original: np.ndarray, reconstruction: np.ndarray, classes: int = 256) -> np.ndarray:
    """Per class, the pixels both maps give it and the pixels either gives it: [I_0..I_255, U_0..U_255]."""
    a, b = original.ravel().astype(np.int64), reconstruction.ravel().astype(np.int64)
    both = np.bincount(a[a == b], minlength=classes)
    either = np.bincount(a, minlength=classes) + np.bincount(b, minlength=classes) - both
    return np.concatenate([both, either]).astype(np.float64)


def pooled_miou(features: np.ndarray, original_features=None) -> float:
    i, u = np.split(np.asarray(features, np.float64).sum(0), 2)
    return float(np.mean(i[u > 0] / u[u > 0])) if (u > 0).any() else float("nan")


def image_miou(features: np.ndarray, original_features=None) -> float:
    i, u = np.split(np.asarray(features, np.float64), 2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_image = np.nanmean(np.where(u > 0, i / u, np.nan), axis=1)
    return float(np.mean(per_image))


def agreement(features: np.ndarray, reference, state: dict) -> dict:
    return {"segment_miou": pooled_miou(features), "segment_miou_image": image_miou(features)}


SPECS = [
    Stage("segment", "none", "auto|none|MODEL|FILE",
          "segmentation agreement with the original's label map (mIoU) per setting: none (default); auto = "
          "torchvision deeplabv3_resnet50 with its DEFAULT weights; a torchvision segmentation model by name; or a "
          "deeplabv3_resnet50 state_dict file; originals' label maps cached like Inception's features",
          "metrics.segment:resolve"),
    FeatureSpace("segment", "Segmenter", "segment", "metrics.segment:extractor",
                 pair="metrics.segment:intersections_and_unions"),
    MetricInfo("segment_miou", "mIoU with the original's label map (pooled over images)", True, "set", "mIoU",
               columns=(("n_segment", "float64"),), needs=("features",), state="segment", tolerance=0.02,
               space="segment", fn="metrics.segment:agreement", resample=True,
               bounds=(0, 1)),
    MetricInfo("segment_miou_image", "mIoU with the original's label map (mean of images')", True, "set",
               "mIoU (img)", needs=("features",), state="segment", tolerance=0.02, space="segment",
               fn="metrics.segment:agreement", resample=True, bounds=(0, 1)),
]
