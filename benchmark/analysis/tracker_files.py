"""Files that experiment trackers read without glue: a flat `metrics.json` and a long-form `rd.csv` per run.

`dvc metrics diff` reads the first (one number per key, so a diff names the setting that moved), `dvc plots
diff -x bpp -y psnr` the second; MLflow and TensorBoard take the same numbers (see `trackers`). Keys say what
a number is without a lookup: `psnr@jpeg/quality=50` (a setting's mean), `n_ok@jpeg/quality=50` (how many
images it rests on), `bd_rate/psnr/webp@jpeg` (BD-rate in % against the anchor, by `bd_method`). The run's
dataset, split, preprocessing and image count sit beside them. A value that could not be computed is left
out, never written as 0 or NaN; what was left out is listed under `unavailable`, and a metric some rows could not
score (images under MS-SSIM's 161 px) says so under `metric_gaps`.
"""

from __future__ import annotations

import json
import math
import pathlib

import pandas as pd

from benchmark.analysis import leaderboard
from benchmark.analysis.curves import Curve, compare_curves
from benchmark.analysis.leaderboard import pick_anchor, table_metrics
from benchmark.run.integrity import atomic_write_bytes
from benchmark.run.record import RunRecord, read_record
from benchmark.run.results import load_summary, per_image_gaps

METRICS_JSON = "metrics.json"
RD_CSV = "rd.csv"


def metric_columns(summary: pd.DataFrame) -> list[str]:
    """bpp and every quality metric the run has a value of, in registry order."""
    return ["bpp"] + table_metrics(summary)


def setting_key(codec: str, rate_parameter: str | None, setting_label) -> str:
    """'jpeg/quality=50': a codec's setting as its spec writes it."""
    return f"{codec}/{rate_parameter}={setting_label}" if rate_parameter else f"{codec}/{setting_label}"


def rd_table(record: RunRecord, summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (codec, setting): codec, setting, rate parameter, n_ok, n_failed, bpp and each metric,
    with the dataset on every row (so files of several runs can be concatenated)."""
    rate_of = {c.label: c.rate_parameter for c in record.codecs}
    d = record.dataset
    columns = metric_columns(summary)
    table = pd.DataFrame({
        "codec": summary.codec.astype(str), "setting": summary.setting_label.astype(str),
        "rate_parameter": [rate_of.get(c) or "" for c in summary.codec],
        "n_ok": summary.n_ok.astype(int), "n_failed": summary.n_failed.astype(int),
        **{m: summary[m].astype(float) for m in columns},
        "dataset": f"{d.name}/{d.split}", "preprocess": d.preprocess or "none"})
    return table.reset_index(drop=True)


def bd_rates(summary: pd.DataFrame, anchor: str, bd_method: str = "akima",
             run_dir: str | pathlib.Path | None = None) -> dict[str, float | str]:
    """BD-rate (%) of every other codec against `anchor`, per metric; the reason where it is undefined. Given the
    run's folder, the leaderboard's numbers: a codec with failed images is paired with the anchor on the images
    both scored, rather than its curve on some images against the anchor's on all."""
    out: dict[str, float | str] = {}
    if anchor not in set(summary.codec):
        return out
    board = leaderboard.build([run_dir], anchor, resamples=0, bd_method=bd_method).bd.set_index(
        ["codec", "metric"]) if run_dir is not None else None
    for metric in metric_columns(summary)[1:]:
        anchor_curve = Curve.from_summary(summary, anchor, metric)
        for codec in dict.fromkeys(summary.codec):
            curve = Curve.from_summary(summary, codec, metric)
            if codec != anchor and len(anchor_curve) and len(curve):  # both measured this metric (as the leaderboard)
                result = dict(board.loc[(codec, metric)]) if board is not None else \
                    compare_curves(anchor_curve, curve, bd_method)
                out[f"bd_rate/{metric}/{codec}@{anchor}"] = result["bd_rate"] if math.isfinite(result["bd_rate"]) \
                    else (result["note"] or "BD-rate undefined")
    return out


def flat_metrics(record: RunRecord, summary: pd.DataFrame, anchor: str | None = None, bd_method: str = "akima",
                 run_dir: str | pathlib.Path | None = None) -> dict:
    """The run as one flat JSON object (see the module's docstring); `run_dir` pairs BD as `bd_rates` says."""
    d = record.dataset
    doc: dict = {"run_id": record.run_id, "dataset": d.name, "split": d.split, "preprocess": d.preprocess or "none",
                 "n_images": int(d.n_images), "git_sha": record.git_sha, "config_hash": record.config_hash}
    unavailable: dict[str, str] = {}
    table = rd_table(record, summary)
    for row in table.itertuples(index=False):
        key = setting_key(row.codec, row.rate_parameter, row.setting)
        doc[f"n_ok@{key}"] = int(row.n_ok)
        doc[f"n_failed@{key}"] = int(row.n_failed)
        for m in metric_columns(summary):
            value = float(getattr(row, m))
            if math.isfinite(value):
                doc[f"{m}@{key}"] = value
            else:
                unavailable[f"{m}@{key}"] = "no image of this setting has a value"
    anchor = pick_anchor(summary, anchor) if len(summary) else None  # the leaderboard's choice: jpeg by default
    if anchor:
        doc["bd_anchor"], doc["bd_method"] = anchor, bd_method
        for key, value in bd_rates(summary, anchor, bd_method, run_dir).items():
            if isinstance(value, str):
                unavailable[key] = value
            else:
                doc[key] = value
    if unavailable:
        doc["unavailable"] = unavailable
    if run_dir is not None and (gaps := per_image_gaps(run_dir)):
        doc["metric_gaps"] = gaps  # rows a metric could not score, and why: its values there rest on the others
    return doc


def write(run_dir: str | pathlib.Path, out_dir: str | pathlib.Path | None = None, anchor: str | None = None,
          bd_method: str = "akima") -> list[pathlib.Path]:
    """metrics.json and rd.csv of a run, into `out_dir` (default: the run's folder), each written whole."""
    run_dir = pathlib.Path(run_dir)
    out_dir = pathlib.Path(out_dir) if out_dir else run_dir
    record = read_record(run_dir)
    summary = load_summary(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = flat_metrics(record, summary, anchor, bd_method, run_dir)
    atomic_write_bytes(out_dir / METRICS_JSON, (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode())
    atomic_write_bytes(out_dir / RD_CSV, rd_table(record, summary).to_csv(index=False).encode())
    return [out_dir / METRICS_JSON, out_dir / RD_CSV]
