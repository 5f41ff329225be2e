"""Atomic shard writing, per-setting summaries, and loading a run into pandas.

A run directory holds `config.json` (what was asked, with provenance), `images/<codec>/chunk-*.parquet`
(one row per image, codec and setting; a shard exists only once all of its rows are final) and
`summary.parquet` (one row per codec and setting). `load_run(path)` returns both as DataFrames.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmark.data.output_names import output_file_name, safe_name
from benchmark.run.integrity import (DamagedFile, atomic_write_bytes, checksum_path, key_of,  # noqa: F401
                                       problem, remove_checked, write_checked)
from benchmark.run.record import read_record
from benchmark.run.run_folder import held, resume_command
from benchmark.run.schema import GROUP_COLUMNS, NOT_AVERAGED
from metrics import registry


OUTPUTS = "outputs"  # saved reconstructions and bitstreams, per codec and setting
MADE_FROM = b"cmcbench.shards"  # summary.parquet's metadata: each shard it was made from, with its checksum


class StaleSummary(DamagedFile):
    """A summary made from other shards than the run holds now (one deleted, added or swapped by hand or by a
    partial copy): its means and counts would not be those of the rows beside it."""

    state = "out of date"


def write_table(path: pathlib.Path, table: pa.Table, key_parts: int = 2) -> None:
    """A parquet file written whole, with its checksum (keyed by codec folder and name; by name alone, 1, for a
    file directly in the run, whose folder may be renamed)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_checked(path, sink.getvalue().to_pybytes(), key_parts=key_parts)


def output_path(run_dir: pathlib.Path, codec_label: str, setting_label: str, image_id: str, suffix: str) -> pathlib.Path:
    """Where --save-reconstructions (.png) and --save-bitstreams (.bin) put one output: OUTPUTS/<codec>/<setting>/,
    a layout that `--codec "precomputed path=RUN/outputs/<codec>"` reads back."""
    return pathlib.Path(run_dir) / OUTPUTS / safe_name(codec_label) / safe_name(setting_label) / \
        output_file_name(image_id, suffix)


def shard_path(run_dir: pathlib.Path, codec_label: str, chunk: int) -> pathlib.Path:
    return run_dir / "images" / safe_name(codec_label) / f"chunk-{chunk:06d}.parquet"


def is_checked(run_dir: pathlib.Path) -> bool:
    """Whether the run was written with checksums (every run since they came): then a missing one is damage."""
    try:
        return "integrity" in read_record(run_dir).rest
    except (FileNotFoundError, ValueError):
        return False


def redo_hint(run_dir: pathlib.Path) -> str:
    return f"redo its work with: {resume_command(run_dir, '--redo-damaged')}"


def checked(run_dir: pathlib.Path, paths: list[pathlib.Path]) -> list[pathlib.Path]:
    """`paths` of a run's results, each verified against its checksum: the first that fails is named."""
    strict = is_checked(run_dir)
    for path in paths:
        why = problem(path, strict)
        if why:
            raise DamagedFile(path, f"{why}; {redo_hint(run_dir)}")
    return paths


def shard_files(run_dir: pathlib.Path, verify: bool = True) -> list[pathlib.Path]:
    """The run's shards, verified unless `verify` is False (for a count or a listing, never for their values)."""
    files = sorted((pathlib.Path(run_dir) / "images").glob("*/chunk-*.parquet"))
    return checked(run_dir, files) if verify else files


def damaged_files(run_dir: pathlib.Path) -> list[tuple[pathlib.Path, str]]:
    """Every shard and stored feature file of a run that fails its check, with why."""
    run_dir, strict = pathlib.Path(run_dir), is_checked(run_dir)
    paths = sorted(run_dir.glob("images/*/chunk-*.parquet")) + sorted(run_dir.glob("features*/*/chunk-*.npz"))
    return [(p, why) for p in paths for why in [problem(p, strict)] if why]


def discard_task_files(run_dir: pathlib.Path, path: pathlib.Path) -> None:
    """Remove a damaged file's shard and every feature file of the same task, so that resuming redoes the task."""
    codec, chunk = path.parent.name, path.name.split(".")[0]
    for p in [run_dir / "images" / codec / f"{chunk}.parquet", *run_dir.glob(f"features*/{codec}/{chunk}.npz")]:
        remove_checked(p)
    remove_checked(run_dir / "summary.parquet")


def sample_spreads(run_dir: pathlib.Path, metrics: list[str]) -> pd.DataFrame:
    """For codecs that decode K samples per bitstream: per (codec, setting), each per-image metric's standard
    deviation over the K samples' means (`<metric>_sample_std`), and K (`n_samples`). Streams shard by shard."""
    sums: dict[tuple, list[float]] = {}
    for path in shard_files(run_dir):
        names = pq.read_schema(path).names
        if "sample" not in names:
            continue
        cols = ["codec", "setting_index", "sample", "status"] + [m for m in metrics if m in names]
        frame = pq.read_table(path, columns=cols).to_pandas()
        frame = frame[(frame.status == "ok") & frame["sample"].notna()]
        for m in cols[4:]:
            v = registry.capped(m, frame[m].astype(float))
            ok = v.notna()
            for key, group in v[ok].groupby([frame.codec[ok], frame.setting_index[ok], frame["sample"][ok]]):
                acc = sums.setdefault((*key, m), [0.0, 0])
                acc[0] += float(group.sum())
                acc[1] += len(group)
    per_sample: dict[tuple, dict[int, float]] = {}
    for (codec, s, k, m), (total, n) in sums.items():
        per_sample.setdefault((codec, int(s), m), {})[int(k)] = total / n
    rows: dict[tuple, dict] = {}
    for (codec, s, m), means in per_sample.items():
        row = rows.setdefault((codec, s), {"codec": codec, "setting_index": s})
        row["n_samples"] = max(row.get("n_samples", 0), len(means))
        row[f"{m}_sample_std"] = float(np.std(list(means.values()), ddof=1)) if len(means) > 1 else float("nan")
    return pd.DataFrame(list(rows.values()))


def failure_reason(error: str, image_id: str) -> str:
    """A failed row's error as a reason that images share: its own image id is <image>, so "no reconstruction
    of a.png" and of b.png are one reason counted twice, not two reasons once each. Only the whole id is
    replaced (1.png's in "1.png", not inside "11.png"). An object's address in a library's message ("<_io.BytesIO
    object at 0x7f1e948d41d0>") differs at every call and is left out."""
    if not error:
        return error
    error = re.sub(r"(<[^<>]* object) at 0x[0-9a-fA-F]+>", r"\1>", error)
    return re.sub(rf"(?<![\w.-]){re.escape(image_id)}(?![\w])", "<image>", error) if image_id else error


def summarise(run_dir: pathlib.Path) -> pd.DataFrame:
    """One row per (codec, setting): image counts, the most common failure reasons, and the mean of each
    per-image number over the rows that succeeded (NaN, never 0, when none did); identities and sizes are not
    averaged: `pixels_total` and `pixels_mean` count the pixels of the succeeded images. Metrics with a cap (PSNR:
    a lossless image is inf) are averaged with values clipped at it, and `n_lossless` counts those images.

    Streams shard by shard, so memory depends on the number of settings, not of images.
    """
    capped_metrics = {m.column: m.cap for m in registry.METRICS.values() if m.cap is not None}
    groups: dict[tuple, dict] = {}
    for path in shard_files(run_dir):
        table = pq.read_table(path)
        means = [f.name for f in table.schema if (pa.types.is_floating(f.type) or pa.types.is_integer(f.type))
                 and f.name not in GROUP_COLUMNS and f.name not in NOT_AVERAGED]
        codecs = np.asarray(table["codec"].to_pylist(), dtype=object)
        settings = table["setting_index"].to_numpy(zero_copy_only=False).astype(np.int64)
        ok_all = (table["status"].to_numpy(zero_copy_only=False) == "ok")
        values = {c: pc.cast(table[c], pa.float64()).to_numpy(zero_copy_only=False) for c in means}
        errors, image_ids = table["error"].to_pylist(), table["image_id"].to_pylist()
        for codec in dict.fromkeys(codecs.tolist()):  # a shard holds one codec's task; one pass per codec
            mine = codecs == codec
            setting, ok = settings[mine], ok_all[mine]
            bins = int(setting.max()) + 1
            n, n_ok = np.bincount(setting, minlength=bins), np.bincount(setting[ok], minlength=bins)
            present, first = np.unique(setting, return_index=True)
            rows = np.flatnonzero(mine)
            for s, k in zip(present.tolist(), first.tolist()):
                key = (codec, s)
                if key not in groups:
                    groups[key] = {"first": {c: table[c][int(rows[k])].as_py() for c in GROUP_COLUMNS
                                             if c in table.column_names},
                                   "n": 0, "ok": 0, "sums": {}, "counts": {}, "reasons": {}, "lossless": {}}
                groups[key]["n"] += int(n[s])
                groups[key]["ok"] += int(n_ok[s])
            for c in means:  # sums and counts per setting over the succeeded rows' non-NaN values
                v = values[c][mine]
                valid = ok & ~np.isnan(v)
                cap = capped_metrics.get(c)
                lossless = np.bincount(setting[valid & (v >= cap)], minlength=bins) if cap is not None else None
                v = np.minimum(v, cap) if cap is not None else v
                sums = np.bincount(setting[valid], weights=v[valid], minlength=bins)
                counts = np.bincount(setting[valid], minlength=bins)
                for s in present.tolist():
                    acc = groups[(codec, s)]
                    acc["sums"][c] = acc["sums"].get(c, 0.0) + float(sums[s])
                    acc["counts"][c] = acc["counts"].get(c, 0) + int(counts[s])
                    if lossless is not None:
                        acc["lossless"][c] = acc["lossless"].get(c, 0) + int(lossless[s])
            if "width" in table.column_names and "height" in table.column_names:  # pixels the means rest on
                pixels = (pc.cast(table["width"], pa.float64()).to_numpy(zero_copy_only=False)
                          * pc.cast(table["height"], pa.float64()).to_numpy(zero_copy_only=False))[mine]
                valid = ok & ~np.isnan(pixels)
                totals = np.bincount(setting[valid], weights=pixels[valid], minlength=bins)
                for s in present.tolist():
                    groups[(codec, s)]["pixels"] = groups[(codec, s)].get("pixels", 0.0) + float(totals[s])
            for k in np.flatnonzero(mine & ~ok_all).tolist():
                reasons, reason = groups[(codec, int(settings[k]))]["reasons"], failure_reason(errors[k], image_ids[k])
                reasons[reason] = reasons.get(reason, 0) + 1
    out = []
    for key in sorted(groups):
        acc = groups[key]
        row = dict(acc["first"])
        row.update(n_images=acc["n"], n_ok=acc["ok"], n_failed=acc["n"] - acc["ok"])
        if "pixels" in acc:
            row["pixels_total"] = int(acc["pixels"])
            row["pixels_mean"] = acc["pixels"] / acc["ok"] if acc["ok"] else float("nan")
        for c, s in acc["sums"].items():
            row[c] = s / acc["counts"][c] if acc["counts"][c] else float("nan")
        if "psnr" in acc["lossless"]:
            row["n_lossless"] = acc["lossless"]["psnr"]  # images averaged at the PSNR cap
        top = sorted(acc["reasons"].items(), key=lambda kv: (-kv[1], str(kv[0])))
        row["failure_reasons"] = "; ".join(f"{n} x {reason}" for reason, n in top[:5])
        out.append(row)
    return with_setting_type(pd.DataFrame(out))


def with_setting_type(summary: pd.DataFrame) -> pd.DataFrame:
    """`setting` as whole numbers (int64) when every setting of the run is one (JPEG's quality 10, not 10.0);
    a run with a fractional setting anywhere (JPEG XL's distance 0.5) keeps float64, one type per column."""
    if "setting" in summary and len(summary) and summary.setting.notna().all() \
            and (summary.setting == summary.setting.round()).all():
        summary = summary.assign(setting=summary.setting.astype("int64"))
    return summary


def images_of(summary: pd.DataFrame, column: str = "n_ok") -> pd.Series:
    """A summary's row counts (`n_images`, `n_ok`) as counts of images: a codec that decodes every bitstream K
    times (samples=K) has K rows per image, so its 16 images are 64 rows."""
    samples = summary["n_samples"].fillna(1).clip(lower=1) if "n_samples" in summary else 1
    return summary[column] / samples


NOTE_PART = re.compile(r"^(?P<metric>[a-z][a-z0-9_]*) (?:unavailable|failed): (?P<why>.+)$")


_GAPS: dict[tuple, dict[str, str]] = {}  # (run folder, its shards' stat stamps) -> per_image_gaps: read once


def per_image_gaps(run_dir: str | os.PathLike) -> dict[str, str]:
    """metric -> why some of a run's scored rows have no value of it, as the rows' metric_notes say (an image smaller
    than MS-SSIM's 161 px, a metric that failed on one image): 'ms_ssim has no value on 4 of 12 scored rows (56x40
    is smaller than its 161-px minimum side)'. A value a codec cannot have (a caption metric of a codec that sends
    no text) has no note and is no gap. Read once per command while the shards stay as they are (the run's table,
    plots and metrics.json, or a report's leaderboard and plots, all ask)."""
    files = shard_files(run_dir, verify=False)
    key = (str(pathlib.Path(run_dir).resolve()),
           *((str(f), st.st_size, st.st_mtime_ns, st.st_ino) for f in files for st in [f.stat()]))
    if key not in _GAPS:
        _GAPS[key] = _read_gaps(run_dir)
    return dict(_GAPS[key])


def scored_rates(run_dir: str | os.PathLike) -> pd.DataFrame:
    """For each metric with per-image gaps (per_image_gaps), each setting's mean bpp over the rows that metric
    scored (codec, setting_index, metric, bpp): the rate its mean belongs to, which an R-D point of it is drawn at
    (the summary's bpp is over every row)."""
    columns = ["codec", "setting_index", "metric", "bpp"]
    gaps = per_image_gaps(run_dir)
    if not gaps:
        return pd.DataFrame(columns=columns)
    rows = read_rows(run_dir, columns=["codec", "setting_index", "status", "bpp", *gaps])
    ok = rows[rows.status == "ok"]
    frames = [ok[ok[m].notna()].groupby(["codec", "setting_index"], as_index=False).bpp.mean().assign(metric=m)
              for m in gaps if m in ok]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def _read_gaps(run_dir: str | os.PathLike) -> dict[str, str]:
    rows = read_rows(run_dir, columns=["status", "metric_notes"])
    if "metric_notes" not in rows or not len(rows):
        return {}
    scored = rows[rows.status == "ok"].metric_notes
    reasons: dict[str, dict[str, int]] = {}
    for notes in scored.dropna():
        said = {m["metric"]: m["why"] for part in notes.split("; ") if (m := NOTE_PART.match(part))}
        for metric, why in said.items():
            reasons.setdefault(metric, {}).setdefault(why, 0)
            reasons[metric][why] += 1
    out = {}
    for metric, whys in reasons.items():
        n, common = sum(whys.values()), sorted(whys, key=whys.get, reverse=True)
        on = f"any of the {len(scored)}" if n == len(scored) else f"{n} of {len(scored)}"
        out[metric] = (f"{metric} has no value on {on} scored rows ({common[0]}"
                       + (f"; and {len(common) - 1} other reason{'s' if len(common) > 2 else ''}, in the rows' "
                          "metric_notes" if len(common) > 1 else "") + ")"
                       + ("" if n == len(scored) else ": its means are over the others"))
    return out


def space_notes(summary: pd.DataFrame, metrics=None) -> list[str]:
    """What a feature space's set metrics rest on, as its summary note says ('FID from 4 < 2048 samples: biased,
    compare only at equal sample counts'), one sentence per distinct note, naming the settings when not every one
    has it; `metrics`: only the spaces of these metrics (a table that shows no FID needs no FID caveat)."""
    from metrics.inception import SPACE

    wanted = None if metrics is None else {registry.METRICS[m].space for m in metrics if m in registry.METRICS}
    out = []
    for space in [SPACE, *registry.SPACES.values()]:
        if f"{space.name}_note" not in summary or (wanted is not None and space.name not in wanted):
            continue
        notes = summary[f"{space.name}_note"].fillna("").astype(str)
        for note in dict.fromkeys(n for n in notes if n):
            rows = summary[notes == note]
            where = "every setting" if len(rows) == len(summary) else ", ".join(
                f"{c} {s}" for c, s in zip(rows.codec, rows.setting_label))
            out.append(f"{space.label} set metrics ({where}): {note}.")
    return out


class UnfinishedRun(UserWarning):
    """load_run of a run that was killed or stopped, or is still running: its rows and summary rest on the tasks done
    so far, and images not done yet are missing rows, not failed ones (the command-line readers say so too)."""


def load_run(run_dir: str | os.PathLike, columns: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-image rows, summary rows) of a run, sorted by codec, setting and image; with `columns`, the rows hold
    those of them the run has and the three they are sorted by (a reader of a few metrics of a large run reads a
    fraction of its bytes). Warns (UnfinishedRun) when the run is not finished."""
    images = read_rows(run_dir, columns)
    if why := unfinished(run_dir):
        warnings.warn(f"{why}.", UnfinishedRun, stacklevel=2)
    return images, run_summary(pathlib.Path(run_dir))


def read_rows(run_dir: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """load_run's per-image rows, for readers that say themselves whether the run is finished."""
    run_dir = pathlib.Path(run_dir)
    files = _checked_shards(run_dir)
    order = ["codec", "setting_index", "image_index"]

    def read(path: pathlib.Path) -> pd.DataFrame:
        names = None if columns is None else [c for c in pq.read_schema(path).names if c in {*columns, *order}]
        return pq.read_table(path, columns=names).to_pandas()

    images = pd.concat([read(p) for p in files], ignore_index=True) if files else pd.DataFrame()
    if len(images):
        images = images.sort_values(order, kind="stable").reset_index(drop=True)
    return images


def load_summary(run_dir: str | os.PathLike) -> pd.DataFrame:
    """A run's summary rows, as `load_run` gives them, without reading its per-image rows; its shards are checked
    all the same, so a damaged one is named before any number is read."""
    _checked_shards(pathlib.Path(run_dir))
    return run_summary(pathlib.Path(run_dir))


def _checked_shards(run_dir: pathlib.Path) -> list[pathlib.Path]:
    files = shard_files(run_dir)
    if not files and not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{run_dir} is not a cmcbench run (no config.json, no images/).")
    return files


def run_summary(run_dir: pathlib.Path) -> pd.DataFrame:
    """A run's summary: summary.parquet, checked, or, for a run not summarised yet (killed), made from its shards
    (not written)."""
    run_dir = pathlib.Path(run_dir)
    return read_summary(run_dir) if (run_dir / "summary.parquet").exists() else summarise(run_dir)


def unfinished(run_dir: str | os.PathLike) -> str:
    """Why a run's numbers are not yet its own, in one sentence with what to do: it has no summary, so it was killed
    or stopped, or is still running, and its values rest on the tasks done so far, not on images that failed;
    "" for a finished run."""
    run_dir = pathlib.Path(run_dir)
    if (run_dir / "summary.parquet").exists():
        return ""
    n = len(shard_files(run_dir, verify=False))
    what = ("still running: wait for it to finish" if held(run_dir) else
            f"killed or stopped: finish it with: {resume_command(run_dir)}")
    return (f"{run_dir} is not finished: its values rest on the {n} task{'' if n == 1 else 's'} done so far, and its "
            f"summary is not written ({what})")


def shard_digests(run_dir: pathlib.Path) -> dict[str, str]:
    """Each shard's key (codec folder/name) and its recorded checksum ('' where it has none, in a run made before
    checksums): what a summary is made from, read without reading the shards."""
    digests = {}
    for path in shard_files(run_dir, verify=False):
        try:
            digests[key_of(path)] = checksum_path(path).read_text().split()[0]
        except (FileNotFoundError, IndexError):
            digests[key_of(path)] = ""
    return digests


def write_summary(run_dir: pathlib.Path, summary: pd.DataFrame) -> None:
    """summary.parquet, with the shards it was made from in its metadata, so that a reader can tell it is stale."""
    table = pa.Table.from_pandas(summary, preserve_index=False)
    made_from = json.dumps(shard_digests(run_dir), sort_keys=True).encode()
    write_table(run_dir / "summary.parquet", table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                                            MADE_FROM: made_from}), key_parts=1)


def shard_changes(before: dict[str, str], now: dict[str, str]) -> str:
    """What differs between two sets of shards, in words ('' when nothing does), naming a few of each kind."""
    kinds = (("gone", [k for k in before if k not in now]), ("new", [k for k in now if k not in before]),
             ("rewritten", [k for k in before if k in now and before[k] != now[k]]))
    return "; ".join(f"{len(keys)} {kind} ({', '.join(f'images/{k}' for k in keys[:3])}"
                     f"{', ...' if len(keys) > 3 else ''})" for kind, keys in kinds if keys)


def read_summary(run_dir: pathlib.Path) -> pd.DataFrame:
    """A run's summary.parquet, checked against its checksum first, then against the shards it was made from
    (a summary written before they were recorded is read as it is)."""
    path = pathlib.Path(run_dir) / "summary.parquet"
    redo = f"rewrite it with: {resume_command(run_dir)}"
    why = problem(path, is_checked(run_dir))
    if why:
        raise DamagedFile(path, f"{why}; {redo}")
    made_from = (pq.read_schema(path).metadata or {}).get(MADE_FROM)
    if made_from is not None:
        changes = shard_changes(json.loads(made_from), shard_digests(run_dir))
        if changes:
            raise StaleSummary(path, f"its shards changed since it was written: {changes}; {redo}")
    return pd.read_parquet(path)
