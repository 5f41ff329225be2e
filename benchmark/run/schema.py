"""The row schema of a run: its columns and their types, assembled once when the run is created.

The base columns (provenance, image, codec, setting, rate, timings, status) are the same for every run;
codecs add the columns they declare (`Codec.columns`, e.g. CMC's transmitted caption, rate matching's
target and trials), and each metric the run computes adds the columns the metric registry declares.
The schema is stored in config.json, and every shard of the run is written with exactly it, so shards
always concatenate and `pd.read_parquet(RUN/images)` sees every column whichever file it reads first.
Values a codec returns for columns it did not declare are kept, as JSON, in `codec_extra`.
"""

from __future__ import annotations

import json
import math

import pyarrow as pa

from metrics import registry

TYPES = {"string": pa.string(), "float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}

BASE_COLUMNS: list[tuple[str, str]] = [
    ("run_id", "string"), ("created", "string"), ("git_sha", "string"), ("cmcbench_version", "string"),
    ("config_hash", "string"), ("versions", "string"), ("dataset", "string"), ("dataset_fingerprint", "string"),
    ("split", "string"), ("preprocess", "string"),
    ("image_id", "string"), ("image_index", "int64"), ("image_sha256", "string"), ("width", "int64"),
    ("height", "int64"), ("source_mode", "string"), ("input_notes", "string"),
    ("codec", "string"), ("codec_target", "string"), ("codec_options", "string"), ("codec_versions", "string"),
    ("rate_parameter", "string"), ("produced_outside", "bool"),
    ("setting", "float64"), ("setting_label", "string"), ("setting_index", "int64"),
    ("bytes", "int64"), ("bits", "int64"), ("bpp", "float64"),
    ("encode_s", "float64"), ("decode_s", "float64"), ("output_notes", "string"),
    ("status", "string"), ("error", "string"),
]
TRAILING_COLUMNS: list[tuple[str, str]] = [("metric_notes", "string"), ("codec_extra", "string")]

# Provenance and identity columns: copied into the summary, never averaged.
GROUP_COLUMNS = ["run_id", "created", "git_sha", "cmcbench_version", "config_hash", "versions", "dataset",
                 "dataset_fingerprint", "split", "preprocess", "codec", "codec_target", "codec_options",
                 "codec_versions", "rate_parameter", "produced_outside", "setting", "setting_label", "setting_index"]
# Numbers that identify or size an image: a mean of them means nothing (the summary counts pixels instead).
NOT_AVERAGED = ("image_index", "width", "height", "sample")


def run_columns(codec_columns: list[dict[str, str]], metrics: list[str]) -> list[tuple[str, str]]:
    """Base columns, then each codec's declared columns, then each computed per-image metric's columns."""
    columns = list(BASE_COLUMNS)
    seen = {name for name, _ in columns} | {name for name, _ in TRAILING_COLUMNS}
    declared: dict[str, str] = {}
    for cols in codec_columns:
        for name, kind in cols.items():
            if kind not in TYPES:
                raise ValueError(f"Codec column {name!r} has type {kind!r}; use one of {', '.join(TYPES)}.")
            if declared.setdefault(name, kind) != kind:
                raise ValueError(f"Two codecs declare column {name!r} with different types.")
    transmits_text = any(registry.TEXT_COLUMN in cols for cols in codec_columns)
    for name in metrics:
        info = registry.get(name)
        if info.kind == "text" and not transmits_text:
            continue  # no codec of this run transmits text: the caption metrics do not apply
        if info.per_image and info.kind != "rate":
            for col, kind in info.all_columns():
                declared.setdefault(col, kind)
    for name, kind in declared.items():
        if name not in seen:
            columns.append((name, kind))
            seen.add(name)
    return columns + TRAILING_COLUMNS


def to_arrow(columns: list[tuple[str, str]] | list[list[str]]) -> pa.Schema:
    return pa.schema([(name, TYPES[kind]) for name, kind in columns])


def table_from_rows(rows: list[dict], columns) -> pa.Table:
    """Rows as a table with exactly the run's schema; undeclared values go, as JSON, into `codec_extra`."""
    schema = to_arrow(columns)
    names = set(schema.names)
    data = []
    for row in rows:
        extra = {k: _jsonable(v) for k, v in row.items() if k not in names}
        out = {name: _cell(row.get(name), schema.field(name).type) for name in schema.names}
        if extra:
            out["codec_extra"] = json.dumps(extra, sort_keys=True)
        data.append(out)
    return pa.Table.from_pylist(data, schema=schema)


def _cell(value, kind: pa.DataType):
    if value is None:
        return None
    if pa.types.is_floating(kind):
        return float(value)
    if pa.types.is_integer(kind):
        return int(value)
    if pa.types.is_boolean(kind):
        return bool(value)
    return value if isinstance(value, str) else str(value)


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def numeric(columns) -> list[str]:
    """Columns whose per-setting mean is meaningful (numbers that are not identities)."""
    return [name for name, kind in columns if kind in ("float64", "int64") and name not in GROUP_COLUMNS
            and name not in NOT_AVERAGED]
