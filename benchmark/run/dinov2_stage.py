"""The DINOv2 stage of a run: FD-DINOv2 and precision, recall, density and coverage per setting, from the
same stored-feature design as the Inception stage (`benchmark.run.perceptual`).

Each original goes through DINOv2 once per (preprocessed pixels, weights), into a cache shared by the runs
under one output root; each reconstruction once, as its task completes, its embeddings written beside the
task's shard before the shard. Its own ledger counts the passes. Set metrics are pure functions of the
stored embeddings: FD is the FID formula (`metrics.fid`), PRDC `metrics.prdc`.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import pandas as pd

from benchmark.run.console import bar
from benchmark.run.perceptual import (FID_MIN_SAMPLES, feature_key, features_path, group_by_setting, image_shas,
                                  new_originals, npz_bytes, over_samples, passes, read_setting, record_passes, reference_path,
                                  write_reference)
from benchmark.run.results import atomic_write_bytes, safe_name
from benchmark.run.timings import Timings
from metrics.fid import FIDReference
from metrics.prdc import DEFAULT_K, prdc

LEDGER = "dinov2_passes.log"
FOLDER = "features-dinov2"
DEFAULTS = {"model": "none", "k": DEFAULT_K}


def resolve(options: dict, cache_root: pathlib.Path) -> dict:
    """What a run records about its DINOv2 stage: the model and weights it will use, or why there are none."""
    choice = options.get("model") or "none"
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
            "k": int(options.get("k") or DEFAULT_K), "reference_dir": str((cache_root / key).resolve()),
            "preprocessing": "torch-fidelity dinov2: TF1-compatible bilinear resize to 224x224, ImageNet "
                             "normalisation, final-layernorm CLS token"}


def needs_reference(stage: dict, sha: str) -> bool:
    return stage.get("status") == "ok" and not reference_path(stage["reference_dir"], sha).exists()


class DINOv2Stage:
    """Embeds what a finished task needs (originals without cached embeddings, every reconstruction)."""

    def __init__(self, info: dict, run_dir: pathlib.Path, timings: Timings | None = None):
        self.stage = info["dinov2"]
        self.opts = info["config"]["inception"]  # the run's device and batch size
        self.run_dir = run_dir
        self.reference_dir = pathlib.Path(self.stage["reference_dir"])
        self.timings = timings or Timings()
        self.known: set[str] = set()
        self._extractor = None

    def load(self) -> None:
        if self._extractor is None:
            from metrics.dinov2 import DINOv2Extractor
            from metrics.hub import folder_weights
            from metrics.download import file_digest

            weights = folder_weights(self.stage["model_path"])
            if weights is None or file_digest(weights) != self.stage["weights_sha256"]:
                raise RuntimeError(f"The DINOv2 weights in {self.stage['model_path']} changed since this run started.")
            with self.timings.stage("DINOv2: load network"):
                self._extractor = DINOv2Extractor(self.stage["model_path"], self.opts["device"],
                                                  self.opts["batch_size"])

    @property
    def extractor(self):
        self.load()
        return self._extractor

    def on_result(self, result) -> None:
        rows = result.rows
        todo = new_originals(result, self.known, lambda sha: not reference_path(self.reference_dir, sha).exists())
        if todo:
            with self.timings.stage("DINOv2: forward (originals)", len(todo)):
                embeddings = self.extractor([px for _, px in todo])
            record_passes(self.run_dir, [f"reference {sha} 0" for sha, _ in todo], LEDGER)
            for (sha, _), e in zip(todo, embeddings):
                write_reference(self.reference_dir, sha, e)
        if result.reconstructions:
            positions = [p for p, _ in result.reconstructions]
            with self.timings.stage("DINOv2: forward (reconstructions)", len(positions)):
                embeddings = self.extractor([im for _, im in result.reconstructions])
            record_passes(self.run_dir, [f"reconstruction {safe_name(result.task.codec)} {result.task.chunk} "
                                         f"{len(positions)} 0"], LEDGER)
            atomic_write_bytes(features_path(self.run_dir, result.task.codec, result.task.chunk, FOLDER),
                               npz_bytes(group_by_setting(rows, positions, dinov2=embeddings)))
        atomic_write_bytes(self.run_dir / "dinov2_passes.json", json.dumps(passes(self.run_dir, LEDGER)).encode())


def setting_features(run_dir: pathlib.Path, codec: str, s: int, sample: int = 0):
    """(image indices, embeddings) of one setting's reconstructions (of one sample of a stochastic decoder's),
    by image index; None if none."""
    return read_setting(run_dir, FOLDER, codec, feature_key(s, sample), ("dinov2",))


def reference_features(stage: dict, shas: dict[int, str], order) -> np.ndarray:
    return np.stack([np.load(reference_path(stage["reference_dir"], shas[i])) for i in order])


def set_metrics(run_dir: pathlib.Path, info: dict, timings: Timings | None = None) -> pd.DataFrame:
    """FD-DINOv2 and PRDC per (codec, setting) from the stored embeddings, in float64."""
    timings = timings or Timings()
    stage = info["dinov2"]
    k_nn = int(stage.get("k") or DEFAULT_K)
    shas = image_shas(run_dir)
    order = np.asarray(sorted(shas))
    ref = reference_features(stage, shas, order) if len(order) else np.zeros((0, 1), np.float32)
    reference = FIDReference(ref) if len(ref) >= 2 else None
    out = []
    keys = [(codec["label"], s, codec.get("samples", 1)) for codec in info["codecs"]
            for s in range(len(codec["settings"]))]
    for label, s, samples in bar(keys, desc="set metrics (FD-DINOv2, PRDC)", unit="settings"):
        rows = [_setting_row(run_dir, label, s, k, order, ref, reference, k_nn, timings) for k in range(samples)]
        out.append(over_samples(rows, "dinov2_note"))
    return pd.DataFrame(out)


def _setting_row(run_dir, label, s, sample, order, ref, reference, k, timings) -> dict:
    row = {"codec": label, "setting_index": s, "n_dinov2": 0}
    found = setting_features(run_dir, label, s, sample)
    if found is None:
        row["dinov2_note"] = "no successful reconstructions"
        return row
    idx, emb = found
    notes, real, ref_sqrt = [], ref, reference
    if len(idx) < len(order):  # failed rows: against the originals of the images it reconstructed
        real, ref_sqrt = ref[np.searchsorted(order, idx)], None
        notes.append(f"against the originals of the {len(idx)} of {len(order)} images this setting reconstructed")
    n = row["n_dinov2"] = len(idx)
    if n >= 2:
        with timings.stage("set metrics: FD-DINOv2"):
            row["fd_dinov2"] = (ref_sqrt or FIDReference(real)).distance(emb)
        if n < FID_MIN_SAMPLES:
            notes.append(f"FD-DINOv2 from {n} < {FID_MIN_SAMPLES} samples: biased, compare only at equal counts")
    else:
        notes.append("FD-DINOv2 needs at least 2 images per set")
    if n > k:
        with timings.stage("set metrics: PRDC"):
            row.update({f"dinov2_{name}": v for name, v in prdc(emb, real, k).items()})
    else:
        notes.append(f"precision, recall, density and coverage need more than k={k} images")
    row["dinov2_note"] = "; ".join(notes)
    return row
