"""LPIPS (Zhang et al. 2018) v0.1: the perceptual distance compression papers report, with AlexNet (`lpips`,
the default) or VGG16 (`lpips_vgg`, an option) as the backbone.

The learned linear layers ship inside the `lpips` package; the backbone is torchvision's ImageNet weights,
from a local file (`--lpips PATH` or CMCBENCH_LPIPS_WEIGHTS; `--lpips-vgg PATH` or
CMCBENCH_LPIPS_VGG_WEIGHTS) or downloaded once into the torch hub cache. The distance is the `lpips` package's own formula, split so that an original's
features are computed once and reused for all of its reconstructions.
"""

from __future__ import annotations

import importlib.util
import pathlib
import warnings

import numpy as np

from metrics.spec import MetricInfo, Stage

ENV_WEIGHTS = "CMCBENCH_LPIPS_WEIGHTS"
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
BACKBONES = {  # net: (torchvision's weights, their sha256 prefix, the option, the environment variable)
    "alex": (ALEXNET_URL, "7be5be79", "--lpips", ENV_WEIGHTS),
    "vgg": (VGG16_URL, "397923af", "--lpips-vgg", "CMCBENCH_LPIPS_VGG_WEIGHTS"),
}


class LPIPSUnavailable(RuntimeError):
    """LPIPS cannot be computed here; the message says how to fix that."""


def linear_weights_path(net: str = "alex") -> str:
    """The lpips package's own linear layers, found without importing it (it imports torchvision)."""
    spec = importlib.util.find_spec("lpips")
    return str(pathlib.Path(spec.origin).parent / "weights" / "v0.1" / f"{net}.pth")


def resolve_backbone(path: str | None = None, progress: bool = False, net: str = "alex") -> str:
    """Local path of the backbone's weights, downloading torchvision's once if needed and possible."""
    from metrics.download import weights_file

    url, prefix, option, env = BACKBONES[net]
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("lpips") is None:
        raise LPIPSUnavailable("LPIPS needs torch and lpips: pip install -e '.[inception]'")
    what = "AlexNet" if net == "alex" else "VGG16"
    return weights_file(path, env, url, prefix, what, "LPIPS", option, LPIPSUnavailable, progress)


class LPIPS:
    """LPIPS on uint8 H x W x 3 images; `features(original)` once, then `distance(features, recon)`."""

    def __init__(self, backbone_path: str | None, device: str = "cpu", net: str = "alex"):
        import lpips
        import torch

        self.torch = torch
        self.device = device
        self.net = net
        # pnet_rand: build the backbone without torchvision's download; its weights are loaded below.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torchvision's 'pretrained' deprecation, from lpips
            self.model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        if backbone_path is not None:
            load_backbone(self.model, torch.load(backbone_path, map_location="cpu", weights_only=True), net)
        self.model = self.model.to(device).eval()

    def _tensor(self, image: np.ndarray):
        x = self.torch.from_numpy(np.array(image, np.float32)).permute(2, 0, 1)[None]
        return (x / 127.5 - 1.0).to(self.device)

    def features(self, image: np.ndarray) -> list:
        import lpips

        with self.torch.inference_mode():
            outs = self.model.net.forward(self.model.scaling_layer(self._tensor(image)))
            return [lpips.normalize_tensor(o) for o in outs]

    def distance(self, reference_features: list, reconstruction: np.ndarray) -> float:
        import lpips

        feats = self.features(reconstruction)
        with self.torch.inference_mode():
            value = sum(lpips.spatial_average(lin((f0 - f1) ** 2), keepdim=True)
                        for lin, f0, f1 in zip(self.model.lins, reference_features, feats))
        return float(value.item())


def load_backbone(model, state_dict: dict, net: str = "alex") -> None:
    """Copy torchvision's `features.N.*` weights (AlexNet or VGG16) into lpips' sliced copy (`net.sliceK.N.*`)."""
    own = dict(model.net.named_parameters())
    missing = []
    for name, param in own.items():
        key = "features." + name.split(".", 1)[1]
        if key not in state_dict:
            missing.append(key)
            continue
        if state_dict[key].shape != param.shape:
            raise LPIPSUnavailable(f"LPIPS backbone weight {key} has shape {tuple(state_dict[key].shape)}, "
                                   f"expected {tuple(param.shape)}: is this torchvision's {net} network?")
        param.data.copy_(state_dict[key])
    if missing:
        raise LPIPSUnavailable(f"LPIPS backbone weights lack {', '.join(missing[:3])}...: expected torchvision's "
                               f"{'AlexNet' if net == 'alex' else 'VGG16'} state dict.")


def load(state: dict, device: str = "cpu") -> LPIPS:
    """The network for a run, from the backbone its config.json recorded (refused if the file changed)."""
    from metrics.inception import file_sha256

    if file_sha256(state["backbone_path"]) != state["backbone_sha256"]:
        raise RuntimeError(f"The LPIPS weights at {state['backbone_path']} changed since this run started.")
    return LPIPS(state["backbone_path"], device, state.get("net", "alex"))


def score(model: LPIPS, original: np.ndarray, reconstruction: np.ndarray, cache: dict) -> float:
    """LPIPS of one reconstruction; `cache` keeps the original's features for its other settings."""
    key = f"lpips-{model.net}"
    if key not in cache:
        cache[key] = model.features(original)
    return model.distance(cache[key], reconstruction)


def resolve(choice: str, cache_root=None, progress: bool = False, net: str = "alex") -> dict:
    """--lpips or --lpips-vgg auto or PATH, as config.json records it: the backbone and the linear layers with their
    sha256."""
    from importlib import metadata

    from metrics.inception import file_sha256

    try:
        backbone = resolve_backbone(None if choice == "auto" else choice, progress, net)
    except LPIPSUnavailable as exc:
        return {"status": "unavailable", "reason": str(exc)}
    linear = linear_weights_path(net)
    return {"status": "ok", "net": net, "version": "0.1", "lpips_package": metadata.version("lpips"),
            "backbone_path": backbone, "backbone_sha256": file_sha256(backbone),
            "linear_path": linear, "linear_sha256": file_sha256(linear)}


def resolve_vgg(choice: str, cache_root=None, progress: bool = False) -> dict:
    return resolve(choice, cache_root, progress, "vgg")


SPECS = [
    Stage("lpips", "auto", "auto|none|PATH",
          "LPIPS (AlexNet, v0.1) per image: auto (default) uses torchvision's AlexNet weights from "
          "$CMCBENCH_LPIPS_WEIGHTS or the torch hub cache, downloading them once; PATH a local "
          "alexnet-owt-7be5be79.pth; none skips it (the default with --metrics none)", "metrics.lpips:resolve",
          label="LPIPS", home="image_metrics", hashed="flag", file_choice=True, off_with_metrics_none=True),
    Stage("lpips_vgg", "none", "auto|none|PATH",
          "LPIPS v0.1 with the VGG16 backbone per image, beside AlexNet's: none (default); auto uses torchvision's "
          "VGG16 weights from $CMCBENCH_LPIPS_VGG_WEIGHTS or the torch hub cache; PATH a local vgg16-397923af.pth",
          "metrics.lpips:resolve_vgg", label="LPIPS-VGG", home="image_metrics", hashed="on", file_choice=True),
    MetricInfo("lpips", "LPIPS (AlexNet)", False, "network", "LPIPS", needs=("pixels", "network:alexnet"),
               state="image_metrics.lpips", tolerance=5e-4, fn="metrics.lpips:score", load="metrics.lpips:load"),
    MetricInfo("lpips_vgg", "LPIPS (VGG16)", False, "network", "LPIPS-VGG", needs=("pixels", "network:vgg16"),
               state="image_metrics.lpips_vgg", tolerance=5e-4, fn="metrics.lpips:score", load="metrics.lpips:load"),
]
