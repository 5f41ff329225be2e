"""Availability of the full-reference per-image metrics beyond PSNR: MS-SSIM, and the metric files' stages that
config.json records beside it (LPIPS, DISTS, LPIPS-VGG, CLIP: `Stage.home == "image_metrics"`).

`resolve` decides once per run (in the main process) what is available and records it in config.json
with the weights' sha256; the metric registry reads that state, and a metric that is unavailable is NaN
with its reason, never zero. The metrics themselves are computed by `benchmark.run.scoring`.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from typing import Any

from metrics import registry

# ms_ssim: on or off; then each metric file's Stage that lives here (LPIPS, DISTS, LPIPS-VGG, CLIP), at its default
DEFAULTS = {"ms_ssim": True, **{s.name: s.default for s in registry.STAGES.values() if s.home == "image_metrics"}}


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:  # OpenCV from another distribution (opencv-python, a system build)
        import cv2

        return f"cv2 {cv2.__version__}"


def resolve(options: dict, cache_root=None, progress: bool = False) -> dict:
    out: dict[str, Any] = {}
    if not options.get("ms_ssim", True):
        out["ms_ssim"] = {"status": "disabled", "reason": "not requested (--no-ms-ssim)"}
    elif importlib.util.find_spec("cv2") is None:
        out["ms_ssim"] = {"status": "unavailable", "reason": "MS-SSIM needs OpenCV: pip install opencv-python-headless"}
    else:
        out["ms_ssim"] = {"status": "ok", "implementation": "cmcbench metrics.msssim (pytorch-msssim's arithmetic) on "
                                                            f"opencv-python-headless {_version('opencv-python-headless')}",
                          "data_range": 255, "win_size": 11, "scales": 5}
    for stage in registry.STAGES.values():
        if stage.home == "image_metrics":
            choice = options.get(stage.name, stage.default) or stage.off
            out[stage.name] = stage.resolved(choice, cache_root, progress)
    return out
