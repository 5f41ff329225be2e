"""Full-reference per-image metrics beyond PSNR: MS-SSIM and LPIPS, computed where the pixels are.

They run in the worker that decoded the image, right after PSNR, so no image crosses a process boundary
for them. An original's LPIPS features are computed once and reused for each of its settings.
`resolve` decides once per run (in the main process) what is available and records it with the
weights' sha256; a metric that is unavailable is NaN in the summary with its reason, never zero.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
from importlib import metadata
from typing import Any

import numpy as np

from metrics.inception import file_sha256

DEFAULTS = {"ms_ssim": True, "lpips": "auto"}  # lpips: auto, none, or a path to AlexNet weights


def resolve(options: dict, progress: bool = False) -> dict:
    out: dict[str, Any] = {}
    if not options.get("ms_ssim", True):
        out["ms_ssim"] = {"status": "disabled", "reason": "not requested (--no-ms-ssim)"}
    elif importlib.util.find_spec("torch") is None or importlib.util.find_spec("pytorch_msssim") is None:
        out["ms_ssim"] = {"status": "unavailable", "reason": "MS-SSIM needs torch and pytorch-msssim: "
                                                             "pip install -e '.[inception]'"}
    else:
        out["ms_ssim"] = {"status": "ok", "implementation": f"pytorch-msssim {metadata.version('pytorch-msssim')}",
                          "data_range": 255, "win_size": 11, "scales": 5}
    choice = options.get("lpips", "auto") or "none"
    if choice == "none":
        out["lpips"] = {"status": "disabled", "reason": "not requested (--lpips none)"}
        return out
    from metrics.lpips import LPIPSUnavailable, linear_weights_path, resolve_backbone

    try:
        backbone = resolve_backbone(None if choice == "auto" else choice, progress)
    except LPIPSUnavailable as exc:
        out["lpips"] = {"status": "unavailable", "reason": str(exc)}
        return out
    linear = linear_weights_path()
    out["lpips"] = {"status": "ok", "net": "alex", "version": "0.1", "lpips_package": metadata.version("lpips"),
                    "backbone_path": backbone, "backbone_sha256": file_sha256(backbone),
                    "linear_path": linear, "linear_sha256": file_sha256(linear)}
    return out


def columns(resolved: dict) -> list[str]:
    return [name for name in ("ms_ssim", "lpips") if resolved.get(name, {}).get("status") == "ok"]


class FullReference:
    def __init__(self, resolved: dict, device: str = "cpu"):
        self.resolved = resolved
        self.enabled = columns(resolved)
        self.device = device
        self._lpips = None
        if self.enabled and multiprocessing.current_process().name != "MainProcess":
            import torch

            torch.set_num_threads(1)  # one thread per worker process: the pool already uses every core

    def lpips_model(self):
        if self._lpips is None:
            from metrics.lpips import LPIPS

            info = self.resolved["lpips"]
            if file_sha256(info["backbone_path"]) != info["backbone_sha256"]:
                raise RuntimeError(f"The LPIPS weights at {info['backbone_path']} changed since this run started.")
            self._lpips = LPIPS(info["backbone_path"], self.device)
        return self._lpips

    def scores(self, original: np.ndarray, reconstruction: np.ndarray, cache: dict) -> dict:
        """Metric columns for one reconstruction; `cache` holds this original's reference features."""
        out: dict[str, Any] = {}
        notes = []
        if "ms_ssim" in self.enabled:
            from metrics.msssim import ms_ssim

            out["ms_ssim"], note = ms_ssim(original, reconstruction)
            notes += [note] if note else []
        if "lpips" in self.enabled:
            model = self.lpips_model()
            if "lpips" not in cache:
                cache["lpips"] = model.features(original)
            out["lpips"] = model.distance(cache["lpips"], reconstruction)
        if notes:
            out["metric_notes"] = "; ".join(notes)
        return out
