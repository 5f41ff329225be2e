"""Where a run's features live on disk, for every feature space: each original's features in a cache shared by the
runs under one output root (and linked into the run's own copy), each task's reconstructions' features beside its
shard, keyed by setting and sample, and an append-only ledger of the network's passes. Every file is checksummed.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import sys

import numpy as np

from benchmark.run.integrity import checksum_path, problem, remove_checked, write_checked
from benchmark.run.results import checked, safe_name, shard_files
from benchmark.run.run_folder import resume_command
from metrics import registry

OWN = "originals"  # a run's own copy of the originals' features it used
PASS_LEDGER = "inception_passes.log"  # Inception's ledger; every other space's is NAME_passes.log


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
                            f"the cache {cache}, or fail their check: compute them again with: "
                            f"{resume_command(run_dir)}")


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


def variants(patches: bool) -> tuple[bool, ...]:
    """The kinds of features cached per original: the whole image's, and with patch FID its FID/256 patches'."""
    return (False, True) if patches else (False,)


def needs_reference(reference_dir, sha: str, kinds: tuple[bool, ...] = (False,), discard: bool = False) -> bool:
    """Whether an original's features of any of these kinds (`variants`) are not in the cache, or (then `discard`ed)
    damaged there."""
    return any(not cached(reference_path(reference_dir, sha, v), discard) for v in kinds)


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


def over_samples(rows: list[dict], note: str) -> dict:
    """One setting's set metrics from its K samples' sets: each metric's mean and, for K > 1, its standard
    deviation over the K sets (`<metric>_sample_std`), the notes of the first set. K = 1: the row itself."""
    if len(rows) == 1:
        return rows[0]
    out = dict(rows[0])
    spreads = [c for m in registry.of_kind("set") for c, _ in m.columns if c.endswith("_std")]  # IS's, KID's
    for metric in spreads:  # within-set spreads (over a set's splits or subsets): their mean over the sets
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
