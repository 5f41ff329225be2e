"""Availability of the full-reference per-image metrics beyond PSNR: MS-SSIM and LPIPS.

`resolve` decides once per run (in the main process) what is available and records it in config.json
with the weights' sha256; the metric registry reads that state, and a metric that is unavailable is NaN
with its reason, never zero. The metrics themselves are computed by `benchmark.run.scoring`.
"""

from __future__ import annotations

import importlib.util
import os
from importlib import metadata
from typing import Any

from metrics.inception import file_sha256

# lpips: auto, none, or a path to AlexNet weights; dists: none (default), auto, or a path to VGG16 weights
# lpips_vgg as dists; clip: none (default), auto (openai/clip-vit-large-patch14), or a Hub id or folder
DEFAULTS = {"ms_ssim": True, "lpips": "auto", "dists": "none", "lpips_vgg": "none", "clip": "none"}


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:  # OpenCV from another distribution (opencv-python, a system build)
        import cv2

        return f"cv2 {cv2.__version__}"


def resolve(options: dict, progress: bool = False) -> dict:
    out: dict[str, Any] = {}
    if not options.get("ms_ssim", True):
        out["ms_ssim"] = {"status": "disabled", "reason": "not requested (--no-ms-ssim)"}
    elif importlib.util.find_spec("cv2") is None:
        out["ms_ssim"] = {"status": "unavailable", "reason": "MS-SSIM needs OpenCV: pip install opencv-python-headless"}
    else:
        out["ms_ssim"] = {"status": "ok", "implementation": "cmcbench metrics.msssim (pytorch-msssim's arithmetic) on "
                                                            f"opencv-python-headless {_version('opencv-python-headless')}",
                          "data_range": 255, "win_size": 11, "scales": 5}
    out["dists"] = _resolve_dists(options.get("dists", "none") or "none", progress)
    out["clip"] = _resolve_clip(options.get("clip", "none") or "none")
    out["lpips"] = _resolve_lpips(options.get("lpips", "auto") or "none", progress, "alex")
    out["lpips_vgg"] = _resolve_lpips(options.get("lpips_vgg", "none") or "none", progress, "vgg")
    return out


def _resolve_lpips(choice: str, progress: bool, net: str) -> dict:
    option = "--lpips" if net == "alex" else "--lpips-vgg"
    if choice == "none":
        return {"status": "disabled", "reason": f"not requested ({option} none)" if net == "alex"
                else f"not requested ({option} auto or {option} PATH)"}
    from metrics.lpips import LPIPSUnavailable, linear_weights_path, resolve_backbone

    try:
        backbone = resolve_backbone(None if choice == "auto" else choice, progress, net)
    except LPIPSUnavailable as exc:
        return {"status": "unavailable", "reason": str(exc)}
    linear = linear_weights_path(net)
    return {"status": "ok", "net": net, "version": "0.1", "lpips_package": metadata.version("lpips"),
            "backbone_path": backbone, "backbone_sha256": file_sha256(backbone),
            "linear_path": linear, "linear_sha256": file_sha256(linear)}


def _resolve_dists(choice: str, progress: bool) -> dict:
    if choice == "none":
        return {"status": "disabled", "reason": "not requested (--dists auto or --dists PATH)"}
    from metrics.dists import DISTSUnavailable, alpha_beta_path, resolve_backbone

    try:
        backbone = resolve_backbone(None if choice == "auto" else choice, progress)
    except DISTSUnavailable as exc:
        return {"status": "unavailable", "reason": str(exc)}
    weights = alpha_beta_path()
    return {"status": "ok", "net": "vgg16", "dists_package": _version("DISTS-pytorch"), "backbone_path": backbone,
            "backbone_sha256": file_sha256(backbone), "alpha_beta_path": weights,
            "alpha_beta_sha256": file_sha256(weights)}


def _resolve_clip(choice: str) -> dict:
    if choice == "none":
        return {"status": "disabled", "reason": "not requested (--clip auto or --clip MODEL)"}
    from metrics.clip import DEFAULT_MODEL

    model = DEFAULT_MODEL if choice == "auto" else choice
    if importlib.util.find_spec("transformers") is None:
        return {"status": "unavailable", "reason": "CLIP needs transformers: pip install -e '.[models]'"}
    from metrics.hub import check_model_name, local_weights

    try:
        check_model_name("--clip", model, (), "transformers", "config.json", what=f"--clip {model}")
    except ValueError as exc:
        return {"status": "unavailable", "reason": str(exc)}
    state = {"status": "ok", "model": os.path.abspath(os.path.expanduser(model)) if os.path.exists(
        os.path.expanduser(model)) else model, "transformers": _version("transformers")}
    weights = local_weights(model)  # a Hub id not yet downloaded is known by its id alone
    if weights:
        state.update(weights_path=os.path.abspath(weights), weights_sha256=file_sha256(weights))
    return state
