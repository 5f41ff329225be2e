"""DINOv2 image embeddings for FD-DINOv2 and precision/recall/density/coverage (Stein et al. 2023).

The preprocessing is torch-fidelity 0.4's `dinov2-vit-l-14` extractor's: uint8 RGB, the TensorFlow-1
compatible bilinear resize to 224 x 224, ImageNet normalisation; the feature is the final-layernorm CLS
token. The network is transformers' Dinov2Model (the same checkpoints as torch.hub's
facebookresearch/dinov2, which torch-fidelity fetches from GitHub at run time and cannot read from a local
path), by Hub id or local folder; `auto` is facebook/dinov2-large, the ViT-L/14 that Stein et al. and
torch-fidelity use.
"""

from __future__ import annotations

import os

import numpy as np

from metrics import defaults
from metrics.hub import WEIGHT_FILES, folder_weights
from metrics.prdc import DEFAULT_K
from metrics.spec import FeatureSpace, MetricInfo, Option

DEFAULT_MODEL = "facebook/dinov2-large"
INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DINOv2Unavailable(RuntimeError):
    """The DINOv2 metrics cannot be computed here; the message says how to fix that."""


def resolve_model(model: str) -> tuple[str, str]:
    """(local folder, sha256 of its weights) of `model`, a folder or a Hub id, downloaded once into the Hugging
    Face cache when this machine is online; DINOv2Unavailable saying how to fix it when not."""
    from metrics.download import file_digest

    folder = os.path.expanduser(model)
    if not os.path.isdir(folder):
        from metrics.hub import check_model_name

        try:
            check_model_name("--dinov2", model, (), "transformers", "config.json", what=f"--dinov2 {model}")
            from huggingface_hub import snapshot_download

            folder = snapshot_download(model, allow_patterns=["config.json", "model.safetensors"])
        except Exception as exc:  # noqa: BLE001 - any failure has the same remedy: a local folder
            raise DINOv2Unavailable(str(exc).rstrip(".") + ".") from None
    weights = folder_weights(folder)
    if weights is None or not os.path.isfile(os.path.join(folder, "config.json")):
        raise DINOv2Unavailable(f"--dinov2 {model}: {folder} holds no config.json and {' or '.join(WEIGHT_FILES)} "
                                "(save a Dinov2Model with save_pretrained, or pass a Hub id).")
    return os.path.abspath(folder), file_digest(weights)


class DINOv2Extractor:
    """Batched CLS embeddings that count every image sent through the network."""

    def __init__(self, folder: str, device: str = defaults.DEVICE, batch_size: int = defaults.BATCH_SIZE):
        import torch
        from transformers import Dinov2Model

        from metrics.inception import pick_device

        self.torch = torch
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.model = Dinov2Model.from_pretrained(folder).to(self.device).eval()
        self.dim = self.model.config.hidden_size
        self.passes = 0

    def forward(self, batch) -> np.ndarray:
        """One uint8 N x 3 x H x W batch: resize, normalise, CLS token after the final layernorm."""
        import torchvision
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        with self.torch.inference_mode():
            x = batch.to(self.device, non_blocking=True).float()
            x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(INPUT_SIZE, INPUT_SIZE), align_corners=False)
            x = torchvision.transforms.functional.normalize(x, [255 * m for m in IMAGENET_MEAN],
                                                            [255 * s for s in IMAGENET_STD])
            out = self.model(pixel_values=x).pooler_output
        self.passes += len(batch)
        return out.float().cpu().numpy()

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        """Embeddings of H x W x 3 uint8 images, in input order (batches group images of equal size)."""
        from metrics.inception import uint8_batches

        out = np.empty((len(images), self.dim), np.float32)
        for part, batch in uint8_batches(self.torch, images, self.batch_size):
            out[part] = self.forward(batch)
        return out


def extractor(state: dict, device: str, batch_size: int) -> DINOv2Extractor:
    """The DINOv2 feature space's network, from the model folder the run recorded (its weights unchanged)."""
    from metrics.download import file_digest

    weights = folder_weights(state["model_path"])
    if weights is None or file_digest(weights) != state["weights_sha256"]:
        raise RuntimeError(f"The DINOv2 weights in {state['model_path']} changed since this run started.")
    return DINOv2Extractor(state["model_path"], device, batch_size)


def frechet_distance(features: np.ndarray, reference, state: dict) -> tuple[float, str]:
    """FD-DINOv2: the FID formula on DINOv2 embeddings."""
    from metrics.fid import frechet_distance as fd

    return fd(features, reference, "FD-DINOv2")


def precision_recall(features: np.ndarray, reference, state: dict) -> tuple[dict, str]:
    """Precision, recall, density and coverage (Naeem et al.) against the originals' embeddings, k from the run."""
    from metrics.prdc import prdc

    k = int(state.get("k") or DEFAULT_K)
    if len(features) <= k:
        return {}, f"precision, recall, density and coverage need more than k={k} images"
    return {f"dinov2_{name}": v for name, v in prdc(features, reference.features, k).items()}, ""


SPECS = [
    Option("--dinov2", "dinov2.model", "none", metavar="auto|none|MODEL",
           help="FD-DINOv2 and precision, recall, density, coverage per setting (Stein et al. 2023): none "
                "(default); auto = facebook/dinov2-large (ViT-L/14, as torch-fidelity and Stein et al.); or a "
                "Dinov2Model by Hub id or local folder; originals' embeddings cached like Inception's"),
    Option("--prdc-k", "dinov2.k", DEFAULT_K, metavar="K", integer=True, minimum=1, what="the neighbourhood size",
           help=f"neighbourhood size of precision/recall/density/coverage (default {DEFAULT_K}, Naeem et al.; "
                "torch-fidelity's prc uses 3)"),
    FeatureSpace("dinov2", "DINOv2", "dinov2", "metrics.dinov2:extractor"),
    MetricInfo("fd_dinov2", "FD-DINOv2 (Frechet distance in DINOv2 space)", False, "set", "FD-DINOv2",
               columns=(("n_dinov2", "float64"),), needs=("features",), state="dinov2", tolerance=5.0,
               space="dinov2", fn="metrics.dinov2:frechet_distance", resample=True),
    *[MetricInfo(f"dinov2_{name}", f"{label} (DINOv2 k-NN)", True, "set", short, needs=("features",), state="dinov2",
                 tolerance=0.02, space="dinov2", fn="metrics.dinov2:precision_recall")
      for name, label, short in (("precision", "Precision", "Prec."), ("recall", "Recall", "Rec."),
                                 ("density", "Density", "Dens."), ("coverage", "Coverage", "Cov."))],
]
