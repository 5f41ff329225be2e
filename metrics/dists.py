"""DISTS (Ding et al. 2020): structure and texture similarity of VGG16 features, as DISTS_pytorch computes it.

The learned alpha/beta weights ship inside the DISTS_pytorch package; the VGG16 backbone is torchvision's
ImageNet weights (`vgg16-397923af.pth`), from a local file (`--dists PATH`, or CMCBENCH_DISTS_WEIGHTS) or
downloaded once into the torch hub cache (DISTS_pytorch itself downloads it through torchvision). The network
is DISTS_pytorch's (VGG16's first 30 layers in five stages, Hanning L2 pooling between them, ImageNet
normalisation of [0, 1] RGB input, no resize) and the distance is its formula, split so that an original's
features are computed once and reused for all of its reconstructions. Lower is better.
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np

from metrics.lpips import VGG16_URL  # the same torchvision file LPIPS-VGG uses
from metrics.spec import MetricInfo, Stage

ENV_WEIGHTS = "CMCBENCH_DISTS_WEIGHTS"
CHANNELS = (3, 64, 128, 256, 512, 512)
STAGES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))  # VGG16 feature layers per stage; 4, 9, 16, 23: L2 pooling


class DISTSUnavailable(RuntimeError):
    """DISTS cannot be computed here; the message says how to fix that."""


def alpha_beta_path() -> str:
    """DISTS_pytorch's bundled alpha/beta weights, found without importing it (it imports torchvision)."""
    spec = importlib.util.find_spec("DISTS_pytorch")
    return str(pathlib.Path(spec.origin).parent / "weights.pt")


def resolve_backbone(path: str | None = None, progress: bool = False) -> str:
    """Local path of the VGG16 backbone weights, downloading torchvision's once if needed and possible."""
    from metrics.download import weights_file

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("DISTS_pytorch") is None:
        raise DISTSUnavailable("DISTS needs torch and DISTS_pytorch: pip install -e '.[inception]'")
    return weights_file(path, ENV_WEIGHTS, VGG16_URL, "397923af", "VGG16", "DISTS", "--dists", DISTSUnavailable,
                        progress)


class DISTS:
    """DISTS on uint8 H x W x 3 images: `features(original)` once, then `distance(features, recon)`."""

    def __init__(self, backbone_path: str, device: str = "cpu"):
        import torch
        import torchvision
        from DISTS_pytorch.DISTS_pt import L2pooling

        self.torch, self.device = torch, device
        vgg = torchvision.models.vgg16(weights=None)
        state = torch.load(backbone_path, map_location="cpu", weights_only=True)
        missing = [k for k in vgg.state_dict() if k.startswith("features.") and k not in state]
        if missing:
            raise DISTSUnavailable(f"DISTS backbone weights lack {', '.join(missing[:3])}: expected torchvision's "
                                   "VGG16 state dict.")
        vgg.load_state_dict({k: v for k, v in state.items() if k in vgg.state_dict()}, strict=False)
        layers = vgg.features
        self.stages = []
        for k, (start, stop) in enumerate(STAGES):
            stage = torch.nn.Sequential()
            if k:
                stage.add_module(str(start), L2pooling(channels=CHANNELS[k]))
                start += 1
            for i in range(start, stop):
                stage.add_module(str(i), layers[i])
            self.stages.append(stage.to(device).eval())
        weights = torch.load(alpha_beta_path(), map_location="cpu", weights_only=True)
        total = weights["alpha"].sum() + weights["beta"].sum()
        self.alpha = [a.to(device) for a in torch.split(weights["alpha"] / total, list(CHANNELS), dim=1)]
        self.beta = [b.to(device) for b in torch.split(weights["beta"] / total, list(CHANNELS), dim=1)]
        self.mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, -1, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, -1, 1, 1)

    def features(self, image: np.ndarray) -> list:
        torch = self.torch
        x = torch.from_numpy(np.array(image, np.uint8)).permute(2, 0, 1)[None].float().div(255).to(self.device)
        with torch.inference_mode():
            feats, h = [x], (x - self.mean) / self.std
            for stage in self.stages:
                h = stage(h)
                feats.append(h)
        return feats

    def distance(self, reference_features: list, reconstruction: np.ndarray) -> float:
        feats = self.features(reconstruction)
        c1 = c2 = 1e-6
        dist1 = dist2 = 0
        with self.torch.inference_mode():
            for k, (f0, f1) in enumerate(zip(reference_features, feats)):
                x_mean, y_mean = f0.mean([2, 3], keepdim=True), f1.mean([2, 3], keepdim=True)
                s1 = (2 * x_mean * y_mean + c1) / (x_mean ** 2 + y_mean ** 2 + c1)
                dist1 = dist1 + (self.alpha[k] * s1).sum(1, keepdim=True)
                x_var = ((f0 - x_mean) ** 2).mean([2, 3], keepdim=True)
                y_var = ((f1 - y_mean) ** 2).mean([2, 3], keepdim=True)
                xy_cov = (f0 * f1).mean([2, 3], keepdim=True) - x_mean * y_mean
                s2 = (2 * xy_cov + c2) / (x_var + y_var + c2)
                dist2 = dist2 + (self.beta[k] * s2).sum(1, keepdim=True)
            return float((1 - (dist1 + dist2)).squeeze().item())


def load(state: dict, device: str = "cpu") -> DISTS:
    """The network for a run, from the backbone its config.json recorded (refused if the file changed)."""
    from metrics.inception import file_sha256

    if file_sha256(state["backbone_path"]) != state["backbone_sha256"]:
        raise RuntimeError(f"The DISTS weights at {state['backbone_path']} changed since this run started.")
    return DISTS(state["backbone_path"], device)


def score(model: DISTS, original: np.ndarray, reconstruction: np.ndarray, cache: dict) -> float:
    """DISTS of one reconstruction; `cache` keeps the original's features for its other settings."""
    if "dists" not in cache:
        cache["dists"] = model.features(original)
    return model.distance(cache["dists"], reconstruction)


def resolve(choice: str, cache_root=None, progress: bool = False) -> dict:
    """--dists auto or PATH, as config.json records it: the backbone and alpha/beta files with their sha256."""
    from importlib import metadata

    from metrics.inception import file_sha256

    try:
        backbone = resolve_backbone(None if choice == "auto" else choice, progress)
    except DISTSUnavailable as exc:
        return {"status": "unavailable", "reason": str(exc)}
    weights = alpha_beta_path()
    return {"status": "ok", "net": "vgg16", "dists_package": metadata.version("DISTS-pytorch"),
            "backbone_path": backbone, "backbone_sha256": file_sha256(backbone), "alpha_beta_path": weights,
            "alpha_beta_sha256": file_sha256(weights)}


SPECS = [
    Stage("dists", "none", "auto|none|PATH",
          "DISTS (VGG16, DISTS_pytorch's weights) per image: none (default) skips it; auto uses torchvision's VGG16 "
          "weights from $CMCBENCH_DISTS_WEIGHTS or the torch hub cache, downloading them once (528 MB); PATH a local "
          "vgg16-397923af.pth", "metrics.dists:resolve", label="DISTS", home="image_metrics", hashed="on",
          file_choice=True),
    MetricInfo("dists", "DISTS (VGG16)", False, "network", "DISTS", needs=("pixels", "network:vgg16"),
               state="image_metrics.dists", tolerance=5e-4, fn="metrics.dists:score", load="metrics.dists:load"),
]
