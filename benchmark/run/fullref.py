"""Availability of the full-reference per-image metrics beyond PSNR: the metric files' stages that config.json
records under `image_metrics` (MS-SSIM, LPIPS, DISTS, LPIPS-VGG, CLIP: `Stage.home == "image_metrics"`).

`resolve` decides once per run (in the main process) what is available and records it in config.json
with the weights' sha256; the metric registry reads that state, and a metric that is unavailable is NaN
with its reason, never zero. The metrics themselves are computed by `benchmark.run.scoring`.
"""

from __future__ import annotations

from typing import Any

from metrics import registry

# Each metric file's Stage that lives here (MS-SSIM, LPIPS, DISTS, LPIPS-VGG, CLIP), at its default
DEFAULTS = {s.name: s.default for s in registry.STAGES.values() if s.home == "image_metrics"}


def resolve(options: dict, cache_root=None, progress: bool = False) -> dict:
    out: dict[str, Any] = {}
    for stage in registry.STAGES.values():
        if stage.home == "image_metrics":
            choice = options.get(stage.name, stage.default) or stage.off
            out[stage.name] = stage.resolved(choice, cache_root, progress)
    return out
