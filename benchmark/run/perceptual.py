"""The Inception stage of a run: the one feature stage (`benchmark.run.feature_stage`) in Inception's space, which
also writes each row's IPD, stores the pool features and the logits apart, and with patch FID the FID/256 patches
of every image; and the set-level IS, FID and KID (and patch FID) of each setting, from the stored features.

Each original goes through the network once per (dataset content, preprocessing, weights): its features
are stored under the sha256 of its preprocessed pixels, in a cache shared by every run under the same
output root. Each reconstruction goes through once, as its task completes; the features are written
next to the task's shard before the shard itself, so a resumed run never recomputes committed work.
Set-level metrics are pure functions of those stored features.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd

from benchmark.run.console import bar
from benchmark.run.feature_stage import FeatureStage
from benchmark.run.feature_store import (feature_key, features_path, group_by_setting, image_shas, npz_bytes,
                                         over_samples, own_parts, read_setting, record_passes, stored_reference,
                                         variants, write_reference)
from benchmark.run.integrity import write_checked
from benchmark.run.locations import located, recorded_path
from benchmark.run.results import checked, safe_name
from benchmark.run.timings import Timings
from metrics import defaults
from metrics.fid import MIN_SAMPLES, FIDReference, fid
from metrics.inception import FEATURE_DIM, SPACE, InceptionUnavailable, file_sha256, resolve_weights
from metrics.inception_score import inception_score
from metrics.ipd import instance_perceptual_distance
from metrics.kid import kid, uses_subsets
from metrics.patches import fid256_patches

# Below this many images per split the Inception Score is noted: IS of a split is at most its number of
# images (exp of a mutual information bounded by log n), so small splits cap and bias it low.
ISC_MIN_PER_SPLIT = 500
DEFAULTS = {"enabled": True, "weights": None, "sha256": None, "device": defaults.DEVICE,
            "batch_size": defaults.BATCH_SIZE,
            "isc_splits": defaults.ISC_SPLITS, "kid_subsets": defaults.KID_SUBSETS,
            "kid_subset_size": defaults.KID_SUBSET_SIZE, "seed": defaults.SEED, "patch_fid": False,
            "whole_image_fid": True, "patch_fid_min": 0}
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
            "reference_dir": recorded_path(cache_root / key)}


class PerceptualStage(FeatureStage):
    """`extractor` defaults to a local InceptionExtractor, built on first use; the Ray executor passes one backed
    by an actor."""

    def __init__(self, info: dict, run_dir: pathlib.Path, extractor=None, timings: Timings | None = None):
        stage = info["inception"]
        if file_sha256(stage["weights_path"]) != stage["weights_sha256"]:
            raise RuntimeError(f"The Inception weights at {stage['weights_path']} changed since this run started.")
        super().__init__(SPACE, info, run_dir, timings, extractor)
        self.patch_fid = bool(info["config"]["inception"].get("patch_fid"))
        self.variants = variants(self.patch_fid)

    def _embed_originals(self, todo: list[tuple[str, np.ndarray]]) -> None:
        """Each original's pool features and logits, one file (and its FID/256 patches' pool features, another)."""
        patch_feats = self._patch_features([px for _, px in todo]) if self.patch_fid else [None] * len(todo)
        extractor = self.extractor
        with self.timings.stage("Inception: forward (originals)", len(todo)):
            pool, logits = extractor([px for _, px in todo])
        record_passes(self.run_dir, [f"reference {sha} {0 if f is None else len(f)}"
                                     for (sha, _), f in zip(todo, patch_feats)])
        for k, (sha, _) in enumerate(todo):
            if patch_feats[k] is not None:
                write_reference(self.reference_dir, sha, patch_feats[k], True)
            write_reference(self.reference_dir, sha, np.concatenate([pool[k], logits[k]]))

    def _embed_images(self, results: list) -> None:
        for result in results:
            for row in result.rows:
                row["ipd"] = None
        images = [im for result in results for _, im in result.reconstructions]
        if images:
            extractor = self.extractor
            with self.timings.stage("Inception: forward (reconstructions)", len(images)):
                pool, logits = extractor(images)
            patch_feats = self._patch_features(images) if self.patch_fid else []
            for result, part in own_parts(results):
                self._store(result, pool[part], logits[part], patch_feats[part] if self.patch_fid else [])

    def _store(self, result, pool: np.ndarray, logits: np.ndarray, patch_feats: list[np.ndarray]) -> None:
        """One task's reconstructions' features: IPD into its rows, its feature file, its ledger line."""
        rows = result.rows
        positions = [p for p, _ in result.reconstructions]
        refs: dict[str, np.ndarray] = {}
        for k, pos in enumerate(positions):
            sha = rows[pos]["image_sha256"]
            if sha not in refs:
                refs[sha] = np.load(stored_reference(self.run_dir, "inception", self.reference_dir, sha))[:FEATURE_DIM]
            rows[pos]["ipd"] = float(instance_perceptual_distance(refs[sha], pool[k]))
        arrays = group_by_setting(rows, positions, pool=pool, logits=logits)
        if self.patch_fid:
            settings = np.array([feature_key(rows[p]["setting_index"], rows[p].get("sample")) for p in positions])
            for s in sorted(set(settings.tolist())):
                arrays[f"patch_pool_{s}"] = np.concatenate([f for f, s2 in zip(patch_feats, settings) if s2 == s])
        n_patches = sum(len(f) for f in patch_feats)
        record_passes(self.run_dir, [f"reconstruction {safe_name(result.task.codec)} {result.task.chunk} "
                                     f"{len(positions)} {n_patches}"])
        write_checked(features_path(self.run_dir, result.task.codec, result.task.chunk), npz_bytes(arrays))

    def _patch_features(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """FID/256 patch features of each image (k x 2048, k may be 0), in one batched pass."""
        patches = [fid256_patches(im) for im in images]
        flat = [p for ps in patches for p in ps]
        if not flat:
            return [np.zeros((0, FEATURE_DIM), np.float32) for _ in images]
        before = self.extractor.passes
        pool, _ = self.extractor(flat)
        self.extractor.passes = before  # patches are counted apart from whole images
        bounds = np.cumsum([0] + [len(ps) for ps in patches])
        return [pool[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def reference_features(run_dir: pathlib.Path, info: dict, shas: dict[int, str], order: list[int],
                       patches: bool = False) -> np.ndarray:
    """Pool features of the originals in `order` (or their FID/256 patch features, concatenated)."""
    cache = located(info["inception"]["reference_dir"], run_dir)
    if not order:
        return np.zeros((0, FEATURE_DIM), np.float32)
    stored = [stored_reference(run_dir, "inception", cache, shas[i], patches) for i in order]
    if patches:
        return np.concatenate([np.load(path) for path in stored])
    return np.stack([np.load(path)[:FEATURE_DIM] for path in stored])


def setting_features(run_dir: pathlib.Path, codec: str, s: int, patches: bool = False, sample: int = 0):
    """(image indices, pool, logits[, patch pool]) of one setting's reconstructions (of one sample of a
    stochastic decoder's), by image index."""
    s = feature_key(s, sample)
    found = read_setting(run_dir, "features", codec, s, ("pool", "logits"))
    if found is None or not patches:
        return found
    # k patches per image, concatenated: a set for FID/256, read in stored order
    chunks = []
    for path in checked(run_dir, sorted((run_dir / "features" / safe_name(codec)).glob("chunk-*.npz"))):
        with np.load(path) as z:
            if f"patch_pool_{s}" in z.files:
                chunks.append(z[f"patch_pool_{s}"])
    return found[:3] + (np.concatenate(chunks),)


def set_metrics(run_dir: pathlib.Path, info: dict, timings: Timings | None = None) -> pd.DataFrame:
    """IS, FID and KID per (codec, setting) from the stored features, in float64; for a codec decoding K
    samples per bitstream, per sample's set, reported as the mean over the K sets with `<metric>_sample_std`."""
    timings = timings or Timings()
    opts = info["config"]["inception"]
    shas = image_shas(run_dir)
    order = sorted(shas)
    ref_pool = reference_features(run_dir, info, shas, order)
    order_arr = np.asarray(order)
    reference = FIDReference(ref_pool)
    patch_fid = bool(opts.get("patch_fid"))
    ref_patches = reference_features(run_dir, info, shas, order, True) if patch_fid else None
    out = []
    keys = [(codec["label"], s, codec.get("samples", 1)) for codec in info["codecs"]
            for s in range(len(codec["settings"]))]
    for label, s, samples in bar(keys, desc="set metrics (IS, FID, KID)", unit="settings"):
        rows = []
        for k in range(samples):
            row = {"codec": label, "setting_index": s, "n_features": 0}
            found = setting_features(run_dir, label, s, patch_fid, k)
            if found is not None:
                ref, ref_sqrt = ref_pool, reference
                if len(found[0]) < len(order):
                    # Rows failed: the set is compared with the originals of the images it reconstructed, as the
                    # bootstrap and `compare` pair them, so an estimate and its interval describe the same sets.
                    ref, ref_sqrt = ref_pool[np.searchsorted(order_arr, found[0])], None
                if opts.get("whole_image_fid", True):
                    row.update(_metrics(found[1], found[2], ref, opts, ref_sqrt, timings))
                else:
                    row["n_features"] = len(found[0])
                if ref_sqrt is None:
                    row["inception_note"] = "; ".join(filter(None, [
                        f"FID and KID against the originals of the {len(found[0])} of {len(order)} images this "
                        "setting reconstructed", row.get("inception_note")]))
                if patch_fid:
                    with timings.stage("set metrics: patch FID"):
                        row.update(_patch_metrics(found[3], ref_patches, row, int(opts.get("patch_fid_min") or 0)))
            else:
                row["inception_note"] = "no successful reconstructions"
            rows.append(row)
        out.append(over_samples(rows, "inception_note"))
    return pd.DataFrame(out)


def _metrics(pool: np.ndarray, logits: np.ndarray, ref_pool: np.ndarray, opts: dict,
             reference: FIDReference | None = None, timings: Timings | None = None) -> dict:
    timings = timings or Timings()
    n, notes = len(pool), []
    row: dict = {"n_features": n}
    splits = opts["isc_splits"]
    if n >= splits:
        with timings.stage("set metrics: IS"):
            row["inception_score"], row["inception_score_std"] = inception_score(logits, splits, opts["seed"])
        if n / splits < ISC_MIN_PER_SPLIT:
            notes.append(f"IS from {n / splits:.3g} images per split (< {ISC_MIN_PER_SPLIT}): a split's IS cannot "
                         "exceed its number of images, so it is biased low; compare only at equal N and splits")
    else:
        notes.append(f"IS needs at least {splits} images (has {n})")
    if n >= 2 and len(ref_pool) >= 2:
        with timings.stage("set metrics: FID"):
            row["fid"] = (reference or FIDReference(ref_pool)).distance(pool)
        with timings.stage("set metrics: KID"):
            row["kid"], row["kid_std"] = kid(pool, ref_pool, opts["kid_subsets"], opts["kid_subset_size"],
                                             opts["seed"])
        if not uses_subsets(n, len(ref_pool), opts["kid_subset_size"]):
            notes.append(f"KID over all {min(n, len(ref_pool))} images once (subset size {opts['kid_subset_size']} "
                         "is not smaller than the set): no subset spread, kid_std left empty")
        if min(n, len(ref_pool)) < MIN_SAMPLES:
            notes.append(f"FID from {min(n, len(ref_pool))} < {MIN_SAMPLES} samples: biased, compare only at "
                         "equal sample counts")
    else:
        notes.append("FID and KID need at least 2 images per set")
    row["inception_note"] = "; ".join(notes)
    return row


def _patch_metrics(patches: np.ndarray, ref_patches: np.ndarray, row: dict, least: int = 0) -> dict:
    """FID/256 over the patches; NaN with the reason under 2 patches, or under `least` (a protocol's minimum)."""
    n = min(len(patches), len(ref_patches))
    if n < max(2, least):
        why = "patch FID needs images of at least 256x256" if n < 2 else \
            f"no patch FID from {n} < {least} patches (the protocol reports none below {least})"
        return {"patch_fid": float("nan"), "n_patches": len(patches),
                "inception_note": "; ".join(filter(None, [row.get("inception_note"), why]))}
    value = fid(patches, ref_patches)
    note = row.get("inception_note", "")
    if n < MIN_SAMPLES:
        note = "; ".join(filter(None, [note, f"patch FID from {n} < {MIN_SAMPLES} patches"]))
    return {"patch_fid": value, "n_patches": len(patches), "inception_note": note}


