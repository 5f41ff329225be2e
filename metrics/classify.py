"""Classification agreement: does an ImageNet classifier still see in the reconstruction what it saw in the
original? The label-free protocol of codecs for machines (the network's prediction on the original is the ground
truth; within 0.7 points of BD-rate against true labels at mid rates, arXiv 2205.06519), needing no labels.

`--classify auto` is torchvision's resnet50 with its DEFAULT weights (IMAGENET1K_V2); `--classify NAME` any
torchvision classification model with its DEFAULT weights; `--classify FILE` a state_dict for resnet50;
`--classify timm:NAME` a timm classifier with its pretrained weights (metrics/timm_models.py). Each image is
preprocessed by the weights' own transforms (resize, centre crop, ImageNet normalisation), timm's for timm's.
The stored feature is the 1000 logits: originals once per (pixels, weights), cached across runs; reconstructions
once per setting. Per setting, from the stored logits:
- `classify_top1`: the share of images whose top-1 class on the reconstruction is the original's;
- `classify_top5`: the share whose original's top-1 class is among the reconstruction's top 5;
- `classify_kl`: the mean KL divergence of the reconstruction's class distribution from the original's,
  KL(p_original || p_reconstruction) in nats.
"""

from __future__ import annotations

import numpy as np

from metrics.spec import FeatureSpace, MetricInfo, Stage
from metrics.torchvision_models import Network, Task

TASK = Task("--classify", "torchvision.models", "resnet50", "classification agreement", timm=True)


def resolve(choice: str, cache_root, progress: bool = False) -> dict:
    """What a run records about its classifier: the model, its weights file and sha256, or why there is none."""
    return TASK.resolve(choice, progress)


class Classifier(Network):
    """Batched logits."""

    task = TASK

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        out = []
        with self.torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                part = images[start:start + self.batch_size]
                batch = self.torch.stack([self.preprocess(im) for im in part])
                out.append(self.model(batch.to(self.device)).float().cpu().numpy())
                self.passes += len(batch)
        return np.concatenate(out) if out else np.zeros((0, 1000), np.float32)


def extractor(state: dict, device: str, batch_size: int) -> Classifier:
    return Classifier(state, device, batch_size)


def top1_agreement(logits: np.ndarray, original_logits: np.ndarray) -> float:
    return float(np.mean(logits.argmax(1) == original_logits.argmax(1)))


def top5_agreement(logits: np.ndarray, original_logits: np.ndarray) -> float:
    top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    return float(np.mean((top5 == original_logits.argmax(1)[:, None]).any(1)))


def kl_divergence(logits: np.ndarray, original_logits: np.ndarray) -> float:
    """Mean KL(p_original || p_reconstruction) in nats, in float64."""
    from scipy.special import log_softmax

    log_p = log_softmax(original_logits.astype(np.float64), axis=1)
    log_q = log_softmax(logits.astype(np.float64), axis=1)
    return float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=1)))


def agreement(features: np.ndarray, reference, state: dict) -> dict:
    """The three columns of a setting, from its reconstructions' and their originals' stored logits."""
    return {"classify_top1": top1_agreement(features, reference.features),
            "classify_top5": top5_agreement(features, reference.features),
            "classify_kl": kl_divergence(features, reference.features)}


SPECS = [
    Stage("classify", "none", "auto|none|MODEL|timm:MODEL|FILE",
          "classification agreement with the original's prediction (top-1, top-5, KL) per setting: none (default); "
          "auto = torchvision resnet50 with its DEFAULT ImageNet weights; a torchvision classification model by "
          "name; timm:NAME, a timm classifier with its pretrained weights from the Hugging Face Hub; or a resnet50 "
          "state_dict file; originals' logits cached like Inception's features",
          "metrics.classify:resolve"),
    FeatureSpace("classify", "Classifier", "classify", "metrics.classify:extractor"),
    MetricInfo("classify_top1", "Top-1 agreement with the original's class", True, "set", "Top-1 agr.",
               columns=(("n_classify", "float64"),), needs=("features",), state="classify", tolerance=0.02,
               space="classify", fn="metrics.classify:agreement", resample=True,
               bounds=(0, 1)),
    MetricInfo("classify_top5", "Top-5 agreement (original's class in the top 5)", True, "set", "Top-5 agr.",
               needs=("features",), state="classify", tolerance=0.02, space="classify", fn="metrics.classify:agreement",
               resample=True, bounds=(0, 1)),
    MetricInfo("classify_kl", "KL divergence of class distributions (original || reconstruction)", False, "set",
               "Class KL", needs=("features",), state="classify", tolerance="5%", space="classify",
               fn="metrics.classify:agreement", resample=True,
               bounds=(0, float("inf"))),
]
