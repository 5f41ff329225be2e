"""Classification agreement: does an ImageNet classifier still see in the reconstruction what it saw in the
original? The label-free protocol of codecs for machines (the network's prediction on the original is the ground
truth; within 0.7 points of BD-rate against true labels at mid rates, arXiv 2205.06519), needing no labels.

`--classify auto` is torchvision's resnet50 with its DEFAULT weights (IMAGENET1K_V2); `--classify NAME` any
torchvision classification model with its DEFAULT weights; `--classify FILE` a state_dict for resnet50. Each image
is preprocessed by the weights' own transforms (resize, centre crop, ImageNet normalisation) on its uint8 tensor.
The stored feature is the 1000 logits: originals once per (pixels, weights), cached across runs; reconstructions
once per setting. Per setting, from the stored logits:
- `classify_top1`: the share of images whose top-1 class on the reconstruction is the original's;
- `classify_top5`: the share whose original's top-1 class is among the reconstruction's top 5;
- `classify_kl`: the mean KL divergence of the reconstruction's class distribution from the original's,
  KL(p_original || p_reconstruction) in nats.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re

import numpy as np

from metrics.spec import FeatureSpace, MetricInfo, Stage

DEFAULT_ARCH = "resnet50"
PREPROCESSING = "the weights' transforms() on the uint8 tensor (resize, centre crop, ImageNet normalisation)"


def _default_weights(arch: str, choice: str):
    """torchvision's DEFAULT weights of the classification model `arch`; ValueError naming close names if none."""
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if arch not in known:
        close = "".join(f"did you mean {m!r}? " for m in difflib.get_close_matches(arch, known, 1))
        raise ValueError(f"--classify {choice}: no such file, and not a torchvision classification model; {close}"
                         "give auto, a model name such as resnet50 or vit_b_16, or a weights file.")
    return torchvision.models.get_model_weights(arch).DEFAULT


def _state_dict(path: str):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _network(arch: str, path: str):
    """The architecture with the weights file loaded strictly; ValueError in one sentence if they do not fit."""
    import torchvision

    model = torchvision.models.get_model(arch, weights=None)
    try:
        model.load_state_dict(_state_dict(path))
    except Exception as exc:  # noqa: BLE001 - not a state_dict, or one of another architecture
        first = str(exc).strip().splitlines()[0].rstrip(":.")
        raise ValueError(f"--classify {path}: not a state_dict of torchvision's {arch} ({first}).") from None
    return model.eval()


def resolve(choice: str, cache_root, progress: bool = False) -> dict:
    """What a run records about its classifier: the model, its weights file and sha256, or why there is none."""
    from metrics.download import file_digest, hub_download

    if any(importlib.util.find_spec(m) is None for m in ("torch", "torchvision")):
        return {"status": "unavailable", "reason": "classification agreement needs torch and torchvision: "
                                                   "pip install -e '.[inception]'"}
    path = os.path.expanduser(choice)
    if os.path.isfile(path):
        _network(DEFAULT_ARCH, path)
        arch, weights = DEFAULT_ARCH, _default_weights(DEFAULT_ARCH, choice)
        model = f"{DEFAULT_ARCH} (weights file)"
    else:
        arch = DEFAULT_ARCH if choice == "auto" else choice
        weights = _default_weights(arch, choice)
        prefix = re.search(r"-([a-f0-9]+)\.", weights.url.rsplit("/", 1)[1])
        try:
            path = hub_download(weights.url, prefix.group(1) if prefix else None, progress)
        except OSError as exc:
            return {"status": "unavailable", "reason": f"no weights for --classify {choice}: {exc}; download it on "
                                                       "a machine with internet, or pass a resnet50 state_dict file"}
        model = arch
    return {"status": "ok", "model": model, "arch": arch, "transforms": f"{type(weights).__name__}.{weights.name}",
            "weights_path": os.path.abspath(path), "weights_sha256": file_digest(path),
            "preprocessing": PREPROCESSING}


class Classifier:
    """Batched logits that count every image sent through the network."""

    def __init__(self, state: dict, device: str, batch_size: int):
        import torch
        import torchvision

        from metrics.defaults import pick_device
        from metrics.download import file_digest

        if file_digest(state["weights_path"]) != state["weights_sha256"]:
            raise RuntimeError(f"The classifier's weights {state['weights_path']} changed since this run started.")
        self.torch = torch
        self.device = pick_device(device)
        self.model = _network(state["arch"], state["weights_path"]).to(self.device)
        self.transforms = torchvision.models.get_weight(state["transforms"]).transforms()
        self.batch_size = batch_size
        self.passes = 0

    def preprocess(self, image: np.ndarray):
        """One H x W x 3 uint8 image as the weights' transforms make it: 3 x crop x crop, normalised."""
        return self.transforms(self.torch.from_numpy(np.require(image, np.uint8, ['C', 'W'])).permute(2, 0, 1))

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        out = []
        with self.torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                part = images[start:start + self.batch_size]
                batch = self.torch.stack([self.preprocess(im)
                                          for im in part])
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
    Stage("classify", "none", "auto|none|MODEL|FILE",
          "classification agreement with the original's prediction (top-1, top-5, KL) per setting: none (default); "
          "auto = torchvision resnet50 with its DEFAULT ImageNet weights; a torchvision classification model by "
          "name; or a resnet50 state_dict file; originals' logits cached like Inception's features",
          "metrics.classify:resolve"),
    FeatureSpace("classify", "Classifier", "classify", "metrics.classify:extractor"),
    MetricInfo("classify_top1", "Top-1 agreement with the original's class", True, "set", "Top-1 agr.",
               columns=(("n_classify", "float64"),), needs=("features",), state="classify", tolerance=0.02,
               space="classify", fn="metrics.classify:agreement", resample="metrics.classify:top1_agreement",
               bounds=(0, 1)),
    MetricInfo("classify_top5", "Top-5 agreement (original's class in the top 5)", True, "set", "Top-5 agr.",
               needs=("features",), state="classify", tolerance=0.02, space="classify", fn="metrics.classify:agreement",
               resample="metrics.classify:top5_agreement", bounds=(0, 1)),
    MetricInfo("classify_kl", "KL divergence of class distributions (original || reconstruction)", False, "set",
               "Class KL", needs=("features",), state="classify", tolerance="5%", space="classify",
               fn="metrics.classify:agreement", resample="metrics.classify:kl_divergence",
               bounds=(0, float("inf"))),
]
