"""Compare two runs, setting by setting: what changed, with a paired bootstrap interval, and whether NEW
is worse than BASE beyond a per-metric tolerance. Meant for CI: the exit status says "regressed".

Settings are matched by codec label and setting label; images by id, so the interval is that of the
paired difference on the images both runs share. Direction comes from the metric registry (lower FID,
KID, IPD, LPIPS and bpp are better; higher IS, PSNR and MS-SSIM are better). Runs that differ in
dataset, preprocessing, extractor weights or library versions are still compared, with a warning.
"""

from __future__ import annotations

import json
import math
import pathlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmark import bootstrap
from benchmark.results import load_run, read_config
from metrics import registry
from metrics.registry import higher_is_better

# Absolute tolerances, or relative with a % suffix: changes within them are "same" (from the registry).
DEFAULT_TOLERANCES = {name: m.tolerance for name, m in registry.METRICS.items()}


def parse_tolerances(items: list[str] | None) -> dict:
    """'fid=1.0', 'bpp=1%', or several comma-separated: 'psnr=0.05,ms_ssim=0.001'."""
    out = dict(DEFAULT_TOLERANCES)
    for item in items or []:
        for pair in filter(None, item.split(",")):
            key, eq, value = pair.partition("=")
            if not eq:
                raise ValueError(f"Tolerance {pair!r}: expected METRIC=VALUE, e.g. fid=0.5 or bpp=1%.")
            try:
                float(value.rstrip("%"))
            except ValueError:
                raise ValueError(f"Tolerance {pair!r}: {value!r} is not a number.") from None
            out[key.strip()] = value.strip() if value.strip().endswith("%") else float(value)
    return out


def tolerance_for(tolerances: dict, metric: str, base: float) -> float:
    tol = tolerances.get(metric, 0.0)
    if isinstance(tol, str) and tol.endswith("%"):
        return abs(base) * float(tol[:-1]) / 100
    return float(tol)


@dataclass
class Comparison:
    rows: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> pd.DataFrame:
        return self.rows[self.rows.verdict == "worse"] if len(self.rows) else self.rows

    def to_json(self) -> dict:
        rows = self.rows.replace({np.nan: None}).to_dict(orient="records")
        return {"regressed": bool(len(self.regressions)), "n_regressions": int(len(self.regressions)),
                "warnings": self.warnings, "missing": self.missing, "rows": rows}


def provenance_warnings(base: dict, new: dict) -> list[str]:
    out = []
    if base["dataset"]["fingerprint"] != new["dataset"]["fingerprint"]:
        out.append(f"datasets differ: {base['dataset']['name']} ({base['dataset']['split']}, "
                   f"{base['dataset']['n_images']} images) vs {new['dataset']['name']} ({new['dataset']['split']}, "
                   f"{new['dataset']['n_images']} images); only shared image ids are compared")
    if base["dataset"].get("preprocess") != new["dataset"].get("preprocess"):
        out.append(f"preprocessing differs: {base['dataset'].get('preprocess')} vs {new['dataset'].get('preprocess')}")
    bw, nw = base.get("inception", {}).get("weights_sha256"), new.get("inception", {}).get("weights_sha256")
    if bw != nw:
        out.append(f"Inception weights differ: {str(bw)[:12]} vs {str(nw)[:12]} (IS, FID, KID, IPD not comparable)")
    bl = base.get("image_metrics", {}).get("lpips", {}).get("backbone_sha256")
    nl = new.get("image_metrics", {}).get("lpips", {}).get("backbone_sha256")
    if bl != nl:
        out.append(f"LPIPS weights differ: {str(bl)[:12]} vs {str(nl)[:12]}")
    bv, nv = base.get("versions", {}), new.get("versions", {})
    changed = sorted(k for k in set(bv) | set(nv) if bv.get(k) != nv.get(k))
    if changed:
        out.append("library versions differ: " + ", ".join(f"{k} {bv.get(k, '-')} -> {nv.get(k, '-')}"
                                                           for k in changed[:8]))
    bc = {c["label"]: c for c in base.get("codecs", [])}
    for c in new.get("codecs", []):
        old = bc.get(c["label"])
        if old and old.get("versions") != c.get("versions"):
            out.append(f"codec {c['label']}: library versions differ: {old.get('versions')} -> {c.get('versions')}")
        if old and old.get("options") != c.get("options"):
            out.append(f"codec {c['label']}: options differ: {old.get('options')} -> {c.get('options')}")
    return out


def compare_runs(base_dir, new_dir, tolerances: dict | None = None, resamples: int = bootstrap.DEFAULT_RESAMPLES,
                 seed: int = bootstrap.DEFAULT_SEED, level: float = bootstrap.DEFAULT_LEVEL) -> Comparison:
    tolerances = tolerances or dict(DEFAULT_TOLERANCES)
    base_info, new_info = read_config(pathlib.Path(base_dir)), read_config(pathlib.Path(new_dir))
    warnings = provenance_warnings(base_info, new_info)
    base_sets, new_sets = bootstrap.load_settings(base_dir), bootstrap.load_settings(new_dir)
    _, base_summary = load_run(base_dir)
    _, new_summary = load_run(new_dir)
    missing = [f"{c} {s}: in BASE only" for c, s in base_sets if (c, s) not in new_sets]
    missing += [f"{c} {s}: in NEW only" for c, s in new_sets if (c, s) not in base_sets]
    rows = []
    for key in [k for k in base_sets if k in new_sets]:
        codec, setting = key
        diffs = bootstrap.paired_difference(base_sets[key], new_sets[key], max(resamples, 1), seed, level)
        for metric, d in diffs.items():
            if resamples <= 0:
                d["low"] = d["high"] = float("nan")
            rows.append(_verdict(codec, setting, metric, d, tolerances))
        # Set-level metrics without per-image data (patch FID) and failure counts, from the summaries.
        b = base_summary[(base_summary.codec == codec) & (base_summary.setting_label == setting)]
        n = new_summary[(new_summary.codec == codec) & (new_summary.setting_label == setting)]
        for metric in ("patch_fid",):
            if metric in b and metric in n and b[metric].notna().any() and n[metric].notna().any():
                bv, nv = float(b[metric].iloc[0]), float(n[metric].iloc[0])
                rows.append(_verdict(codec, setting, metric, {"base": bv, "new": nv, "change": nv - bv,
                                                              "low": np.nan, "high": np.nan}, tolerances))
        if len(b) and len(n) and int(n.n_failed.iloc[0]) > int(b.n_failed.iloc[0]):
            rows.append({"codec": codec, "setting": setting, "metric": "n_failed", "base": int(b.n_failed.iloc[0]),
                         "new": int(n.n_failed.iloc[0]), "change": int(n.n_failed.iloc[0] - b.n_failed.iloc[0]),
                         "low": np.nan, "high": np.nan, "tolerance": 0.0, "direction": "lower is better",
                         "verdict": "worse", "significant": None})
    columns = ["codec", "setting", "metric", "base", "new", "change", "low", "high", "tolerance", "direction",
               "verdict", "significant", "n_images"]
    return Comparison(pd.DataFrame(rows, columns=columns), warnings, missing)


def _verdict(codec: str, setting: str, metric: str, d: dict, tolerances: dict) -> dict:
    up = higher_is_better(metric)
    tol = tolerance_for(tolerances, metric, d["base"])
    gain = d["change"] if up else -d["change"]  # positive: NEW is better
    verdict = "same" if abs(gain) <= tol or math.isnan(gain) else ("better" if gain > 0 else "worse")
    low, high = d.get("low", np.nan), d.get("high", np.nan)
    significant = None if math.isnan(low) or math.isnan(high) else bool(low > 0 or high < 0)
    return {"codec": codec, "setting": setting, "metric": metric, "base": d["base"], "new": d["new"],
            "change": d["change"], "low": low, "high": high, "tolerance": tol,
            "direction": "higher is better" if up else "lower is better", "verdict": verdict,
            "significant": significant, "n_images": d.get("n_images")}


def render_text(result: Comparison, show_all: bool = False) -> str:
    lines = []
    for w in result.warnings:
        lines.append(f"warning: {w}")
    for m in result.missing:
        lines.append(f"note: {m}")
    rows = result.rows if show_all else result.rows[result.rows.verdict != "same"]
    if len(rows):
        table = rows.copy()
        table["change [interval]"] = [
            f"{c:+.4g}" + ("" if pd.isna(lo) else f" [{lo:+.4g}, {hi:+.4g}]")
            for c, lo, hi in zip(table.change, table.low, table.high)]
        table["sig."] = ["" if s is None or pd.isna(s) else ("yes" if s else "no") for s in table.significant]
        cols = ["codec", "setting", "metric", "base", "new", "change [interval]", "tolerance", "verdict", "sig."]
        lines.append(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    n_same = int((result.rows.verdict == "same").sum()) if len(result.rows) else 0
    regressions = result.regressions
    lines.append(f"{len(result.rows)} comparisons: {len(regressions)} worse, "
                 f"{int((result.rows.verdict == 'better').sum()) if len(result.rows) else 0} better, {n_same} within tolerance.")
    if len(regressions):
        named = sorted({f"{r.metric} ({r.codec} {r.setting})" for r in regressions.itertuples()})
        lines.append("REGRESSION: NEW is worse than BASE beyond tolerance in " + ", ".join(named[:12])
                     + (" ..." if len(named) > 12 else ""))
    return "\n".join(lines)


def dumps(result: Comparison) -> str:
    return json.dumps(result.to_json(), indent=2, default=float)
