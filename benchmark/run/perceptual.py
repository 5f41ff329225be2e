"""The Inception stage of a run: features of originals (cached across runs) and of reconstructions
(stored with each shard), per-image IPD, and the set-level IS, FID and KID of each setting.

Each original goes through the network once per (dataset content, preprocessing, weights): its features
are stored under the sha256 of its preprocessed pixels, in a cache shared by every run under the same
output root. Each reconstruction goes through once, as its task completes; the features are written
next to the task's shard before the shard itself, so a resumed run never recomputes committed work.
Set-level metrics are pure functions of those stored features.
"""

from __future__ import annotations

import functools
import io
import json
import os
import pathlib
import shutil
import sys

import numpy as np
import pandas as pd

from benchmark.run.console import bar
from benchmark.run.locations import located, recorded_path
from benchmark.run.integrity import checksum_path, problem, remove_checked, write_checked
from benchmark.run.results import atomic_write_bytes, checked, safe_name, shard_files
from benchmark.run.timings import Timings
from metrics import defaults, registry
from metrics.fid import MIN_SAMPLES, FIDReference, fid
from metrics.inception import FEATURE_DIM, InceptionExtractor, InceptionUnavailable, file_sha256, resolve_weights
from metrics.inception_score import inception_score
from metrics.ipd import instance_perceptual_distance
from metrics.kid import kid, uses_subsets
from metrics.patches import fid256_patches

OWN = "originals"  # a run's own copy of the originals' features it used
PASS_LEDGER = "inception_passes.log"  # append-only: one line per original and per task's reconstructions
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


def own_dir(run_dir: pathlib.Path, name: str) -> pathlib.Path:
    """The run's own copy of its originals' features in one space (hard links into the cache where the file
    system allows): a finished run keeps what its summary, leaderboard and compare need when the cache goes."""
    return pathlib.Path(run_dir) / OWN / name


def keep(run_dir: pathlib.Path, name: str, cache: pathlib.Path, sha: str, patches: bool = False) -> None:
    """Link (or copy) one original's cached features, checksum first, into the run's own copy."""
    src, dst = reference_path(cache, sha, patches), reference_path(own_dir(run_dir, name), sha, patches)
    if dst.exists() or not src.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    for a, b in ((checksum_path(src), checksum_path(dst)), (src, dst)):
        if not a.exists():
            continue
        tmp = b.with_name(f".{b.name}.link.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(a, tmp)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(a, tmp)
        os.replace(tmp, b)


def stored(run_dir: pathlib.Path, name: str, cache: pathlib.Path, sha: str, patches: bool = False) -> bool:
    return any(cached(reference_path(folder, sha, patches)) for folder in (own_dir(run_dir, name), cache))


def stored_reference(run_dir: pathlib.Path, name: str, cache: pathlib.Path, sha: str,
                     patches: bool = False) -> pathlib.Path:
    """Where one original's features are, checked: the run's own copy, else the shared cache."""
    own = reference_path(own_dir(run_dir, name), sha, patches)
    for path in (own, reference_path(cache, sha, patches)):
        if cached(path):
            return path
    raise FileNotFoundError(f"The {name} features of original {sha[:12]} are neither in {own.parent.parent} nor in "
                            f"the cache {cache}, or fail their check: compute them again with: python bench.py run "
                            f"--resume {run_dir}")


def reference_path(reference_dir: str | pathlib.Path, sha: str, patches: bool = False) -> pathlib.Path:
    return pathlib.Path(reference_dir) / sha[:2] / f"{sha}{'.fid256' if patches else ''}.npy"


def cached(path: pathlib.Path, discard: bool = False) -> bool:
    """Whether a cached feature file is there and passes its check; a damaged one is `discard`ed (and said so),
    so that it is computed again. Entries cached before checksums have none and are used as they are."""
    why = problem(path, strict=False)
    if why is None:
        return True
    if discard and path.exists():
        remove_checked(path)
        print(f"note: discarded the cached features {path} ({why}); computing them again.", file=sys.stderr)
    return False


def needs_reference(reference_dir, sha: str, patch_fid: bool, discard: bool = False) -> bool:
    return not cached(reference_path(reference_dir, sha), discard) or (
        patch_fid and not cached(reference_path(reference_dir, sha, True), discard))


def features_path(run_dir: pathlib.Path, codec: str, chunk: int, folder: str = "features") -> pathlib.Path:
    return run_dir / folder / safe_name(codec) / f"chunk-{chunk:06d}.npz"


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write_reference(reference_dir, sha: str, features: np.ndarray, patches: bool = False) -> None:
    write_checked(reference_path(reference_dir, sha, patches), _npy_bytes(features))


def record_passes(run_dir: pathlib.Path, lines: list[str], ledger: str = PASS_LEDGER) -> None:
    """Append to a run's pass ledger, durably, before the work's results are saved: a kill after this
    loses nothing from the count (references are counted once per original, whatever is redone)."""
    with open(run_dir / ledger, "a") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())


def feature_key(setting_index: int, sample: int | None = 0) -> str:
    """Where a setting's (and a stochastic decoder's sample k's) features are kept: S, or SkK for k > 0."""
    return f"{setting_index}" if not sample else f"{setting_index}k{sample}"


def group_by_setting(rows: list[dict], positions: list[int], **features: np.ndarray) -> dict[str, np.ndarray]:
    """Per-task feature arrays keyed by setting (and sample): image_index_S and NAME_S for each of `features`."""
    settings = np.array([feature_key(rows[p]["setting_index"], rows[p].get("sample")) for p in positions])
    indices = np.array([rows[p]["image_index"] for p in positions])
    arrays = {}
    for s in sorted(set(settings.tolist())):
        sel = settings == s
        arrays[f"image_index_{s}"] = indices[sel]
        arrays.update({f"{name}_{s}": values[sel] for name, values in features.items()})
    return arrays


def own_parts(results: list):
    """(result, slice) of each result with reconstructions: where its own are among all the results'
    reconstructions, in order (a stage forwards them together, then stores each task's features)."""
    start = 0
    for result in results:
        if result.reconstructions:
            yield result, slice(start, start + len(result.reconstructions))
        start += len(result.reconstructions)


def new_originals(result, known: set[str], missing) -> list[tuple[str, np.ndarray]]:
    """(sha256, pixels) of a task's originals that a stage has not seen in this run and whose cached features
    are `missing(sha)`; all of them become known."""
    sha_of = {r["image_index"]: r.get("image_sha256") for r in result.rows}
    todo = []
    for index, pixels in result.originals.items():
        sha = sha_of[index]
        if sha not in known and missing(sha):
            todo.append((sha, pixels))
        known.add(sha)
    return todo


def builder(info: dict):
    """A picklable call that builds the run's InceptionExtractor (here, or in a Ray actor)."""
    stage, opts = info["inception"], info["config"]["inception"]
    return functools.partial(InceptionExtractor, stage["weights_path"], stage["weights_sha256"], opts["device"],
                             opts["batch_size"])


class PerceptualStage:
    """`extractor` defaults to a local InceptionExtractor, built on first use (or by `load`, which the runner
    calls once the worker pool has started, so that loading the network overlaps the workers' first tasks);
    the Ray executor passes one backed by an actor."""

    def __init__(self, info: dict, run_dir: pathlib.Path, extractor=None, timings: Timings | None = None):
        stage = info["inception"]
        if file_sha256(stage["weights_path"]) != stage["weights_sha256"]:
            raise RuntimeError(f"The Inception weights at {stage['weights_path']} changed since this run started.")
        self.opts = info["config"]["inception"]
        self.build = builder(info)
        self._extractor = extractor
        self.timings = timings or Timings()
        self.reference_dir = located(stage["reference_dir"], run_dir)
        self.run_dir = run_dir
        self.counter_path = run_dir / "inception_passes.json"
        self.patch_fid = bool(self.opts.get("patch_fid"))
        self.known: set[str] = set()

    def load(self) -> None:
        if self._extractor is None:
            with self.timings.stage("Inception: load network"):
                self._extractor = self.build()

    @property
    def extractor(self):
        self.load()
        return self._extractor

    @extractor.setter
    def extractor(self, value) -> None:
        self._extractor = value

    def _record(self, lines: list[str]) -> None:
        record_passes(self.run_dir, lines)

    def reference_features(self, sha: str) -> np.ndarray:
        return np.load(stored_reference(self.run_dir, "inception", self.reference_dir, sha))

    def lacks(self, sha: str) -> bool:
        """Whether an original's features are neither in the run's own copy nor in the cache (both deleted)."""
        return not all(stored(self.run_dir, "inception", self.reference_dir, sha, patches)
                       for patches in ((False, True) if self.patch_fid else (False,)))

    def on_result(self, result) -> None:
        self.on_results([result])

    def on_results(self, results: list) -> None:
        """Extract what finished tasks need, all in one batched pass per kind (originals, reconstructions), then
        add IPD to their rows and store each task's features (called before their shards are written)."""
        todo = [item for result in results for item in new_originals(
            result, self.known, lambda sha: needs_reference(self.reference_dir, sha, self.patch_fid, discard=True))]
        if todo:
            patch_feats = self._patch_features([px for _, px in todo]) if self.patch_fid else [None] * len(todo)
            extractor = self.extractor
            with self.timings.stage("Inception: forward (originals)", len(todo)):
                pool, logits = extractor([px for _, px in todo])
            self._record([f"reference {sha} {0 if f is None else len(f)}" for (sha, _), f in zip(todo, patch_feats)])
            for k, (sha, _) in enumerate(todo):
                if patch_feats[k] is not None:
                    write_reference(self.reference_dir, sha, patch_feats[k], True)
                write_reference(self.reference_dir, sha, np.concatenate([pool[k], logits[k]]))
        for sha in {row.get("image_sha256") for result in results for row in result.rows} - {None}:
            keep(self.run_dir, "inception", self.reference_dir, sha)
            if self.patch_fid:
                keep(self.run_dir, "inception", self.reference_dir, sha, True)
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
        atomic_write_bytes(self.counter_path, json.dumps(passes(self.run_dir)).encode())

    def _store(self, result, pool: np.ndarray, logits: np.ndarray, patch_feats: list[np.ndarray]) -> None:
        """One task's reconstructions' features: IPD into its rows, its feature file, its ledger line."""
        rows = result.rows
        positions = [p for p, _ in result.reconstructions]
        refs: dict[str, np.ndarray] = {}
        for k, pos in enumerate(positions):
            sha = rows[pos]["image_sha256"]
            if sha not in refs:
                refs[sha] = self.reference_features(sha)[:FEATURE_DIM]
            rows[pos]["ipd"] = float(instance_perceptual_distance(refs[sha], pool[k]))
        arrays = group_by_setting(rows, positions, pool=pool, logits=logits)
        if self.patch_fid:
            settings = np.array([feature_key(rows[p]["setting_index"], rows[p].get("sample")) for p in positions])
            for s in sorted(set(settings.tolist())):
                arrays[f"patch_pool_{s}"] = np.concatenate([f for f, s2 in zip(patch_feats, settings) if s2 == s])
        n_patches = sum(len(f) for f in patch_feats)
        self._record([f"reconstruction {safe_name(result.task.codec)} {result.task.chunk} {len(positions)} "
                      f"{n_patches}"])
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


def read_setting(run_dir: pathlib.Path, folder: str, codec: str, s: int | str, names: tuple[str, ...]):
    """(image indices, *arrays named `names`) of one setting's stored features, by image index; None if none."""
    idx, arrays = [], {name: [] for name in names}
    for path in checked(run_dir, sorted((run_dir / folder / safe_name(codec)).glob("chunk-*.npz"))):
        with np.load(path) as z:
            if f"image_index_{s}" in z.files:
                idx.append(z[f"image_index_{s}"])
                for name in names:
                    arrays[name].append(z[f"{name}_{s}"])
    if not idx:
        return None
    order = np.argsort(np.concatenate(idx), kind="stable")
    return (np.concatenate(idx)[order], *(np.concatenate(arrays[name])[order] for name in names))


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


def over_samples(rows: list[dict], note: str) -> dict:
    """One setting's set metrics from its K samples' sets: each metric's mean and, for K > 1, its standard
    deviation over the K sets (`<metric>_sample_std`), the notes of the first set. K = 1: the row itself."""
    if len(rows) == 1:
        return rows[0]
    out = dict(rows[0])
    for metric in ("inception_score_std", "kid_std"):  # within-set spreads: their mean over the sets
        if metric in out:
            out[metric] = float(np.nanmean([r.get(metric, np.nan) for r in rows]))
    for metric in (m.column for m in registry.of_kind("set")):
        values = np.array([r.get(metric, np.nan) for r in rows], np.float64)
        if metric in out:
            out[metric] = float(values.mean())
            out[f"{metric}_sample_std"] = float(values.std(ddof=1))
    out[note] = "; ".join(filter(None, [f"mean over {len(rows)} samples' sets (seeds seed..seed+{len(rows) - 1}); "
                                        "<metric>_sample_std is their spread", out.get(note, "")]))
    return out


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


def passes(run_dir: pathlib.Path, ledger: str = PASS_LEDGER) -> dict:
    """Network passes of the run, from its ledger: each original once (however often a killed task was
    redone), and every reconstruction (and patch) pass that was made."""
    out = {"reference": 0, "reconstruction": 0, "patches": 0}
    path = pathlib.Path(run_dir) / ledger
    if not path.exists():
        legacy = pathlib.Path(run_dir) / "inception_passes.json"
        return {**out, **json.loads(legacy.read_text())} if legacy.exists() and ledger == PASS_LEDGER else out
    references: dict[str, int] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "reference":
            references[parts[1]] = int(parts[2])
        elif len(parts) == 5 and parts[0] == "reconstruction":
            out["reconstruction"] += int(parts[3])
            out["patches"] += int(parts[4])
    out["reference"] = len(references)
    out["patches"] += sum(references.values())
    return out

