"""The Inception stage of a run: features of originals (cached across runs) and of reconstructions
(stored with each shard), per-image IPD, and the set-level IS, FID and KID of each setting.

Each original goes through the network once per (dataset content, preprocessing, weights): its features
are stored under the sha256 of its preprocessed pixels, in a cache shared by every run under the same
output root. Each reconstruction goes through once, as its task completes; the features are written
next to the task's shard before the shard itself, so a resumed run never recomputes committed work.
Set-level metrics are pure functions of those stored features.
"""

from __future__ import annotations

import io
import json
import pathlib
import warnings

import numpy as np
import pandas as pd

from benchmark.results import atomic_write_bytes, safe_name, shard_files
from metrics.fid import fid
from metrics.inception import FEATURE_DIM, InceptionExtractor, InceptionUnavailable, file_sha256, resolve_weights
from metrics.inception_score import inception_score
from metrics.ipd import instance_perceptual_distance
from metrics.kid import kid
from metrics.patches import fid256_patches

FID_MIN_SAMPLES = 2048
DEFAULTS = {"enabled": True, "weights": None, "sha256": None, "device": "auto", "batch_size": 32,
            "isc_splits": 10, "kid_subsets": 100, "kid_subset_size": 1000, "seed": 2020, "patch_fid": False}
HASHED = ("enabled", "isc_splits", "kid_subsets", "kid_subset_size", "seed", "patch_fid")


def resolve(options: dict, cache_root: pathlib.Path, progress: bool = True) -> dict:
    """What a run records about its Inception stage: the weights it will use, or why there are none."""
    if not options.get("enabled"):
        return {"status": "disabled", "reason": "Inception metrics were not requested (--metrics none)"}
    try:
        path, sha = resolve_weights(options.get("weights"), options.get("sha256"), progress)
    except InceptionUnavailable as exc:
        return {"status": "unavailable", "reason": str(exc)}
    key = f"inception-v3-compat-{sha[:16]}"
    return {"status": "ok", "weights_path": path, "weights_sha256": sha, "extractor": key,
            "reference_dir": str((cache_root / key).resolve())}


def reference_path(reference_dir: str | pathlib.Path, sha: str, patches: bool = False) -> pathlib.Path:
    return pathlib.Path(reference_dir) / sha[:2] / f"{sha}{'.fid256' if patches else ''}.npy"


def needs_reference(reference_dir, sha: str, patch_fid: bool) -> bool:
    return not reference_path(reference_dir, sha).exists() or (
        patch_fid and not reference_path(reference_dir, sha, True).exists())


def features_path(run_dir: pathlib.Path, codec: str, chunk: int) -> pathlib.Path:
    return run_dir / "features" / safe_name(codec) / f"chunk-{chunk:06d}.npz"


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


class PerceptualStage:
    """`extractor` defaults to a local InceptionExtractor; the Ray executor passes one backed by an actor."""

    def __init__(self, info: dict, run_dir: pathlib.Path, extractor=None):
        stage = info["inception"]
        if file_sha256(stage["weights_path"]) != stage["weights_sha256"]:
            raise RuntimeError(f"The Inception weights at {stage['weights_path']} changed since this run started.")
        opts = info["config"]["inception"]
        self.extractor = extractor or InceptionExtractor(stage["weights_path"], stage["weights_sha256"],
                                                         opts["device"], opts["batch_size"])
        self.reference_dir = pathlib.Path(stage["reference_dir"])
        self.run_dir = run_dir
        self.counter_path = run_dir / "inception_passes.json"
        self.patch_fid = bool(opts.get("patch_fid"))
        self.passes = {"reference": 0, "reconstruction": 0, "patches": 0}
        if self.counter_path.exists():
            self.passes.update(json.loads(self.counter_path.read_text()))
        self.known: set[str] = set()

    def reference_features(self, sha: str) -> np.ndarray:
        return np.load(reference_path(self.reference_dir, sha))

    def on_result(self, result) -> None:
        """Extract what a finished task needs, then add IPD to its rows (called before its shard is written)."""
        rows = result.rows
        sha_of = {r["image_index"]: r.get("image_sha256") for r in rows}
        todo = []
        for index, pixels in result.originals.items():
            sha = sha_of[index]
            if sha not in self.known and needs_reference(self.reference_dir, sha, self.patch_fid):
                todo.append((sha, pixels))
            self.known.add(sha)
        if todo and self.patch_fid:
            for (sha, _), feats in zip(todo, self._patch_features([px for _, px in todo])):
                atomic_write_bytes(reference_path(self.reference_dir, sha, True), _npy_bytes(feats))
        if todo:
            pool, logits = self.extractor([px for _, px in todo])
            for k, (sha, _) in enumerate(todo):
                atomic_write_bytes(reference_path(self.reference_dir, sha),
                                   _npy_bytes(np.concatenate([pool[k], logits[k]])))
            self.passes["reference"] += len(todo)
        for row in rows:
            row["ipd"] = None
        if result.reconstructions:
            positions = [p for p, _ in result.reconstructions]
            pool, logits = self.extractor([im for _, im in result.reconstructions])
            self.passes["reconstruction"] += len(positions)
            refs: dict[str, np.ndarray] = {}
            for k, pos in enumerate(positions):
                sha = rows[pos]["image_sha256"]
                if sha not in refs:
                    refs[sha] = self.reference_features(sha)[:FEATURE_DIM]
                rows[pos]["ipd"] = float(instance_perceptual_distance(refs[sha], pool[k]))
            arrays = {}
            patch_feats = self._patch_features([im for _, im in result.reconstructions]) if self.patch_fid else []
            settings = np.array([rows[p]["setting_index"] for p in positions])
            indices = np.array([rows[p]["image_index"] for p in positions])
            for s in sorted(set(settings.tolist())):
                sel = settings == s
                arrays[f"image_index_{s}"] = indices[sel]
                arrays[f"pool_{s}"] = pool[sel]
                arrays[f"logits_{s}"] = logits[sel]
                if self.patch_fid:
                    arrays[f"patch_pool_{s}"] = np.concatenate([f for f, keep in zip(patch_feats, sel) if keep])
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            atomic_write_bytes(features_path(self.run_dir, result.task.codec, result.task.chunk), buf.getvalue())
        atomic_write_bytes(self.counter_path, json.dumps(self.passes).encode())

    def _patch_features(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """FID/256 patch features of each image (k x 2048, k may be 0), in one batched pass."""
        patches = [fid256_patches(im) for im in images]
        flat = [p for ps in patches for p in ps]
        if not flat:
            return [np.zeros((0, FEATURE_DIM), np.float32) for _ in images]
        before = self.extractor.passes
        pool, _ = self.extractor(flat)
        self.extractor.passes = before  # patches are counted apart from whole images
        self.passes["patches"] += len(flat)
        bounds = np.cumsum([0] + [len(ps) for ps in patches])
        return [pool[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

def image_shas(run_dir: pathlib.Path) -> dict[int, str]:
    """image_index -> sha256 of the preprocessed pixels, for every image that was read."""
    import pyarrow.parquet as pq

    shas: dict[int, str] = {}
    for path in shard_files(run_dir):
        t = pq.read_table(path, columns=["image_index", "image_sha256"]).to_pydict()
        for i, sha in zip(t["image_index"], t["image_sha256"]):
            if sha:
                shas[i] = sha
    return shas


def reference_features(info: dict, shas: dict[int, str], order: list[int], patches: bool = False) -> np.ndarray:
    """Pool features of the originals in `order` (or their FID/256 patch features, concatenated)."""
    reference_dir = info["inception"]["reference_dir"]
    if not order:
        return np.zeros((0, FEATURE_DIM), np.float32)
    if patches:
        return np.concatenate([np.load(reference_path(reference_dir, shas[i], True)) for i in order])
    return np.stack([np.load(reference_path(reference_dir, shas[i]))[:FEATURE_DIM] for i in order])


def setting_features(run_dir: pathlib.Path, codec: str, s: int, patches: bool = False):
    """(image indices, pool, logits[, patch pool]) of one setting's reconstructions, by image index."""
    idx, pool, logits, patch = [], [], [], []
    for path in sorted((run_dir / "features" / safe_name(codec)).glob("chunk-*.npz")):
        with np.load(path) as z:
            if f"pool_{s}" in z.files:
                idx.append(z[f"image_index_{s}"])
                pool.append(z[f"pool_{s}"])
                logits.append(z[f"logits_{s}"])
                if patches:
                    patch.append(z[f"patch_pool_{s}"])
    if not idx:
        return None
    order = np.argsort(np.concatenate(idx), kind="stable")
    out = (np.concatenate(idx)[order], np.concatenate(pool)[order], np.concatenate(logits)[order])
    return out + (np.concatenate(patch),) if patches else out


def set_metrics(run_dir: pathlib.Path, info: dict) -> pd.DataFrame:
    """IS, FID and KID per (codec, setting) from the stored features, in float64."""
    opts = info["config"]["inception"]
    shas = image_shas(run_dir)
    order = sorted(shas)
    ref_pool = reference_features(info, shas, order)
    patch_fid = bool(opts.get("patch_fid"))
    ref_patches = reference_features(info, shas, order, True) if patch_fid else None
    out = []
    for codec in info["codecs"]:
        for s in range(len(codec["settings"])):
            row = {"codec": codec["label"], "setting_index": s, "n_features": 0}
            found = setting_features(run_dir, codec["label"], s, patch_fid)
            if found is not None:
                row.update(_metrics(found[1], found[2], ref_pool, opts))
                if patch_fid:
                    row.update(_patch_metrics(found[3], ref_patches, row))
            else:
                row["inception_note"] = "no successful reconstructions"
            out.append(row)
    return pd.DataFrame(out)


def _metrics(pool: np.ndarray, logits: np.ndarray, ref_pool: np.ndarray, opts: dict) -> dict:
    n, notes = len(pool), []
    row: dict = {"n_features": n}
    if n >= opts["isc_splits"]:
        row["inception_score"], row["inception_score_std"] = inception_score(logits, opts["isc_splits"], opts["seed"])
    else:
        notes.append(f"IS needs at least {opts['isc_splits']} images (has {n})")
    if n >= 2 and len(ref_pool) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
            row["fid"] = fid(pool, ref_pool)
        row["kid"], row["kid_std"] = kid(pool, ref_pool, opts["kid_subsets"], opts["kid_subset_size"], opts["seed"])
        if min(n, len(ref_pool)) < FID_MIN_SAMPLES:
            notes.append(f"FID from {min(n, len(ref_pool))} < {FID_MIN_SAMPLES} samples: biased, compare only at "
                         "equal sample counts")
    else:
        notes.append("FID and KID need at least 2 images per set")
    row["inception_note"] = "; ".join(notes)
    return row


def _patch_metrics(patches: np.ndarray, ref_patches: np.ndarray, row: dict) -> dict:
    n = min(len(patches), len(ref_patches))
    if n < 2:
        return {"patch_fid": float("nan"), "n_patches": len(patches),
                "inception_note": "; ".join(filter(None, [row.get("inception_note"),
                                                          "patch FID needs images of at least 256x256"]))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
        value = fid(patches, ref_patches)
    note = row.get("inception_note", "")
    if n < FID_MIN_SAMPLES:
        note = "; ".join(filter(None, [note, f"patch FID from {n} < {FID_MIN_SAMPLES} patches"]))
    return {"patch_fid": value, "n_patches": len(patches), "inception_note": note}


def passes(run_dir: pathlib.Path) -> dict:
    path = run_dir / "inception_passes.json"
    return json.loads(path.read_text()) if path.exists() else {"reference": 0, "reconstruction": 0}

