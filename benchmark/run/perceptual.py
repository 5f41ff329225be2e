"""The Inception stage of a run: the one feature stage (`benchmark.run.feature_stage`) in Inception's space, which
also writes each row's IPD, stores the pool features and the logits apart, and with patch FID the FID/256 patches
of every image; and how its set metrics (IS, FID, KID, patch FID) read those (`InceptionSets`).

Each original goes through the network once per (dataset content, preprocessing, weights): its features
are stored under the sha256 of its preprocessed pixels, in a cache shared by every run under the same
output root. Each reconstruction goes through once, as its task completes; the features are written
next to the task's shard before the shard itself, so a resumed run never recomputes committed work.
Set-level metrics are pure functions of those stored features, computed by the one evaluator of every space's.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import numpy as np

from benchmark.run.feature_stage import FeatureStage, SpaceSets
from benchmark.run.feature_store import (feature_key, features_path, group_by_setting, npz_bytes, own_parts,
                                         read_setting, record_passes, stored_reference, variants, write_reference)
from benchmark.run.integrity import write_checked
from benchmark.run.locations import located, recorded_path
from benchmark.run.results import checked, safe_name
from benchmark.run.record import JsonRecord, RunRecord
from benchmark.run.timings import Timings
from metrics import defaults
from metrics.fid import FIDReference
from metrics.inception import (FEATURE_DIM, SPACE, InceptionReference, InceptionSet, InceptionUnavailable,
                               file_sha256, resolve_weights)
from metrics.ipd import instance_perceptual_distance
from metrics.patches import fid256_patches


@dataclass(frozen=True)
class InceptionOptions(JsonRecord):
    """What a run asks of its Inception stage (RunConfig.inception, config.json's `config.inception`)."""
    enabled: bool = True
    weights: str | None = None  # a local file; None: torch-fidelity's download (or CMCBENCH_INCEPTION_WEIGHTS)
    sha256: str | None = None  # refuse weights whose sha256 differs
    device: str = defaults.DEVICE  # every network of the run
    batch_size: int = defaults.BATCH_SIZE
    isc_splits: int = defaults.ISC_SPLITS
    kid_subsets: int = defaults.KID_SUBSETS
    kid_subset_size: int = defaults.KID_SUBSET_SIZE
    seed: int = defaults.SEED
    patch_fid: bool = False  # FID/256 over 256-px patches (HiFiC's protocol)
    whole_image_fid: bool = True  # False: a protocol that reports FID over patches only
    patch_fid_min: int = 0  # fewer patches than this: FID/256 is not reported


DEFAULTS = InceptionOptions().to_json()
HASHED = ("enabled", "isc_splits", "kid_subsets", "kid_subset_size", "seed", "patch_fid")


def resolve(options: InceptionOptions, cache_root: pathlib.Path, progress: bool = True) -> dict:
    """What a run records about its Inception stage: the weights it will use, or why there are none."""
    if not options.enabled:
        return {"status": "disabled", "reason": "Inception metrics were not requested (--metrics none)"}
    try:
        path, sha = resolve_weights(options.weights, options.sha256, progress)
    except InceptionUnavailable as exc:
        return {"status": "unavailable", "reason": str(exc)}
    key = f"inception-v3-compat-{sha[:16]}"
    return {"status": "ok", "weights_path": path, "weights_sha256": sha, "extractor": key,
            "reference_dir": recorded_path(cache_root / key)}


class PerceptualStage(FeatureStage):
    """`extractor` defaults to a local InceptionExtractor, built on first use; the Ray executor passes one backed
    by an actor."""

    def __init__(self, record: RunRecord, run_dir: pathlib.Path, extractor=None, timings: Timings | None = None):
        stage = record.inception
        if file_sha256(stage["weights_path"]) != stage["weights_sha256"]:
            raise RuntimeError(f"The Inception weights at {stage['weights_path']} changed since this run started.")
        super().__init__(SPACE, record, run_dir, timings, extractor)
        self.patch_fid = bool(record.config["inception"].get("patch_fid"))
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


class InceptionSets(SpaceSets):
    """Inception's stored sets: pool features and logits (and with patch FID, each image's FID/256 patches) of
    each setting's reconstructions, in `features/`; the originals' pool features (and patches) from the cache.
    `patches=False` reads no patches (the bootstrap resamples whole images only)."""

    partial = "FID and KID " + SpaceSets.partial

    def __init__(self, run_dir: pathlib.Path, record: RunRecord, patches: bool | None = None):
        super().__init__(run_dir, record, SPACE)
        self.count = "n_features"
        self.patches = bool(record.config["inception"].get("patch_fid")) if patches is None else patches

    def options(self) -> dict:
        return self.record.config["inception"]

    def features(self, codec: str, s: int, sample: int = 0):
        """(image indices, InceptionSet) of one setting's reconstructions (of one sample's), by image index."""
        key = feature_key(s, sample)
        found = read_setting(self.run_dir, "features", codec, key, ("pool", "logits"))
        if found is None:
            return None
        patches = None
        if self.patches:  # k patches per image, concatenated: a set for FID/256, read in stored order
            chunks, folder = [], self.run_dir / "features" / safe_name(codec)
            for path in checked(self.run_dir, sorted(folder.glob("chunk-*.npz"))):
                with np.load(path) as z:
                    if f"patch_pool_{key}" in z.files:
                        chunks.append(z[f"patch_pool_{key}"])
            patches = np.concatenate(chunks)
        return found[0], InceptionSet(found[1], found[2], patches)

    def originals(self, shas: dict[int, str], order, patches: bool = False) -> np.ndarray:
        """Pool features of the originals in `order` (or their FID/256 patch features, concatenated)."""
        cache = located(self.record.inception["reference_dir"], self.run_dir)
        if not len(order):
            return np.zeros((0, FEATURE_DIM), np.float32)
        stored = [stored_reference(self.run_dir, "inception", cache, shas[i], patches) for i in order]
        if patches:
            return np.concatenate([np.load(path) for path in stored])
        return np.stack([np.load(path)[:FEATURE_DIM] for path in stored])

    def reference(self, shas: dict[int, str], order) -> InceptionReference:
        return InceptionReference(FIDReference(self.originals(shas, order)),
                                  self.originals(shas, order, True) if self.patches else None)

    def subset(self, reference: InceptionReference, positions: np.ndarray) -> InceptionReference:
        """Whole images against the originals of the images reconstructed; patches against all originals'."""
        return InceptionReference(FIDReference(reference.pool.features[positions]), reference.patches)
