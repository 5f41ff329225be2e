"""What a run records about DINOv2 (FD-DINOv2 and precision, recall, density and coverage): the model and
weights it will use, or why there are none. The features and set metrics come from the one feature stage
(`benchmark.run.feature_stage`), in the DINOv2 space the registry declares.
"""

from __future__ import annotations

import importlib.util
import pathlib
from dataclasses import dataclass

from benchmark.run.locations import recorded_path
from benchmark.run.record import JsonRecord
from metrics import registry
from metrics.prdc import DEFAULT_K


@dataclass(frozen=True)
class DINOv2Options(JsonRecord):
    """What a run asks of DINOv2 (RunConfig.dinov2, config.json's `config.dinov2`): --dinov2 and --prdc-k, whose
    defaults metrics/dinov2.py declares."""
    model: str = registry.option_default("dinov2.model")  # auto, none, a Hub id or a local folder
    k: int = registry.option_default("dinov2.k")  # PRDC's neighbourhood size


DEFAULTS = DINOv2Options().to_json()


def resolve(options: DINOv2Options, cache_root: pathlib.Path) -> dict:
    """What a run records about its DINOv2 stage: the model and weights it will use, or why there are none."""
    choice = options.model or "none"
    if choice == "none":
        return {"status": "disabled", "reason": "not requested (--dinov2 auto or --dinov2 MODEL)"}
    if any(importlib.util.find_spec(m) is None for m in ("torch", "torch_fidelity", "transformers")):
        return {"status": "unavailable", "reason": "FD-DINOv2 needs torch, torch-fidelity and transformers: "
                                                   "pip install -e '.[inception,models]'"}
    from metrics.dinov2 import DEFAULT_MODEL, DINOv2Unavailable, resolve_model

    model = DEFAULT_MODEL if choice == "auto" else choice
    try:
        folder, sha = resolve_model(model)
    except DINOv2Unavailable as exc:
        return {"status": "unavailable", "reason": str(exc)}
    key = f"dinov2-{sha[:16]}"
    return {"status": "ok", "model": model, "model_path": folder, "weights_sha256": sha, "extractor": key,
            "k": int(options.k or DEFAULT_K), "reference_dir": recorded_path(cache_root / key),
            "preprocessing": "torch-fidelity dinov2: TF1-compatible bilinear resize to 224x224, ImageNet "
                             "normalisation, final-layernorm CLS token"}
