"""The results schema, atomic shard writing, per-setting summaries, and loading a run into pandas.

A run directory holds `config.json` (what was asked, with provenance), `images/<codec>/chunk-*.parquet`
(one row per image, codec and setting; a shard exists only once all of its rows are final) and
`summary.parquet` (one row per codec and setting). `load_run(path)` returns both as DataFrames.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import tempfile
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# Columns every per-image row has, with fixed types so shards always concatenate.
IMAGE_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("created", pa.string()), ("git_sha", pa.string()),
    ("cmcbench_version", pa.string()), ("config_hash", pa.string()), ("versions", pa.string()),
    ("dataset", pa.string()), ("dataset_fingerprint", pa.string()), ("split", pa.string()),
    ("preprocess", pa.string()),
    ("image_id", pa.string()), ("image_index", pa.int64()), ("image_sha256", pa.string()),
    ("width", pa.int64()), ("height", pa.int64()), ("source_mode", pa.string()), ("input_notes", pa.string()),
    ("codec", pa.string()), ("codec_target", pa.string()), ("codec_options", pa.string()),
    ("codec_versions", pa.string()), ("rate_parameter", pa.string()),
    ("setting", pa.float64()), ("setting_label", pa.string()), ("setting_index", pa.int64()),
    ("bytes", pa.int64()), ("bits", pa.int64()), ("bpp", pa.float64()), ("psnr", pa.float64()),
    ("encode_s", pa.float64()), ("decode_s", pa.float64()), ("output_notes", pa.string()),
    ("status", pa.string()), ("error", pa.string()),
])

# Per-image metrics averaged into the summary (mean over images whose row succeeded).
MEAN_COLUMNS = ["bytes", "bits", "bpp", "psnr", "encode_s", "decode_s"]
# Columns copied from the first row of a (codec, setting) group into its summary row.
GROUP_COLUMNS = ["run_id", "created", "git_sha", "cmcbench_version", "config_hash", "versions", "dataset",
                 "dataset_fingerprint", "split", "preprocess", "codec", "codec_target", "codec_options",
                 "codec_versions", "rate_parameter", "setting", "setting_label", "setting_index"]


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text) or "_"


def atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def table_from_rows(rows: list[dict]) -> pa.Table:
    """Rows to an Arrow table: known columns with their fixed types, extra columns inferred."""
    extra = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in IMAGE_SCHEMA.names]
    table = pa.Table.from_pylist([{k: r.get(k) for k in IMAGE_SCHEMA.names} for r in rows], schema=IMAGE_SCHEMA)
    for name in extra:
        values = [r.get(name) for r in rows]
        table = table.append_column(name, pa.array(values, type=_extra_type(values)))
    return table


def _extra_type(values) -> pa.DataType:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.float64()
    if not present:
        return pa.float64()
    return pa.string()


def write_table(path: pathlib.Path, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def shard_path(run_dir: pathlib.Path, codec_label: str, chunk: int) -> pathlib.Path:
    return run_dir / "images" / safe_name(codec_label) / f"chunk-{chunk:06d}.parquet"


def shard_files(run_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted((run_dir / "images").glob("*/chunk-*.parquet"))


@dataclass
class _Accumulator:
    first: dict
    n: int = 0
    ok: int = 0
    sums: dict | None = None
    counts: dict | None = None

    def add(self, row: dict) -> None:
        self.n += 1
        if row["status"] != "ok":
            return
        self.ok += 1
        self.sums = self.sums or {}
        self.counts = self.counts or {}
        for c, v in row.items():
            if c in GROUP_COLUMNS or c == "status" or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            self.sums[c] = self.sums.get(c, 0.0) + float(v)
            self.counts[c] = self.counts.get(c, 0) + 1


def summarise(run_dir: pathlib.Path) -> pd.DataFrame:
    """One row per (codec, setting): image counts and the mean of each per-image metric over OK rows.

    Streams shard by shard, so memory depends on the number of settings, not of images.
    """
    groups: dict[tuple, _Accumulator] = {}
    for path in shard_files(run_dir):
        table = pq.read_table(path)
        wanted = [c for c in table.column_names if c in GROUP_COLUMNS or c == "status" or c in MEAN_COLUMNS
                  or c not in IMAGE_SCHEMA.names]  # codec- and metric-specific per-image columns
        for row in table.select(wanted).to_pylist():
            key = (row["codec"], row["setting_index"])
            acc = groups.get(key)
            if acc is None:
                acc = groups[key] = _Accumulator({c: row[c] for c in GROUP_COLUMNS})
            acc.add(row)
    out = []
    for key in sorted(groups):
        acc = groups[key]
        row = dict(acc.first)
        row.update(n_images=acc.n, n_ok=acc.ok, n_failed=acc.n - acc.ok)
        for c, s in (acc.sums or {}).items():
            row[c] = s / acc.counts[c]
        out.append(row)
    return pd.DataFrame(out)


def load_run(run_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-image rows, summary rows) of a run, sorted by codec, setting and image."""
    run_dir = pathlib.Path(run_dir)
    files = shard_files(run_dir)
    if not files and not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{run_dir} is not a cmcbench run (no config.json, no images/).")
    images = pd.concat([pq.read_table(p).to_pandas() for p in files], ignore_index=True) if files else pd.DataFrame()
    if len(images):
        images = images.sort_values(["codec", "setting_index", "image_index"], kind="stable").reset_index(drop=True)
    summary_path = run_dir / "summary.parquet"
    summary = pd.read_parquet(summary_path) if summary_path.exists() else summarise(run_dir)
    return images, summary


def read_config(run_dir: pathlib.Path) -> dict:
    with open(run_dir / "config.json") as f:
        return json.load(f)
