"""Compare two runs for CI: per codec and metric, is NEW's rate-quality curve worse than BASE's?

The verdict is taken on curves, not settings: a codec that moves along its own curve (fewer bits and a
little less quality) has not regressed. For each codec both runs have, and each metric, the BD-metric of
NEW against BASE (NEW - BASE at equal rate, in the metric's units) and the BD-rate are computed on the
images both runs share, and again inside each of the same paired bootstrap resamples of those images
(set-level metrics recomputed from stored features), which gives their intervals. A regression is a
change that is worse than the metric's tolerance and significant (the interval excludes zero on the worse
side). Per-setting changes (matched by setting label) are kept as detail; more failed rows always count.

Not comparable is an error with its own exit status, never a pass: runs of different datasets or
preprocessing (unless allowed), BASE codecs or settings that NEW lacks (unless allowed), or nothing that
could be compared at all. Direction and default tolerances come from the metric registry.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmark.analysis import bootstrap
from benchmark.run import weights
from benchmark.run.record import RunRecord, read_record
from benchmark.run.results import load_summary, per_image_gaps, unfinished
from metrics import registry
from metrics.registry import higher_is_better

# Absolute tolerances, or relative with a % suffix: changes within them are "same" (from the registry).
DEFAULT_TOLERANCES = {name: m.tolerance for name, m in registry.METRICS.items()}
SUMMARY_ONLY = tuple(m.column for m in registry.of_kind("set") if m.column not in bootstrap.SET_METRICS)


class NotComparable(ValueError):
    """BASE and NEW cannot be compared as asked; the message says why and what would allow it."""


def parse_tolerances(items: list[str] | None) -> dict:
    """'fid=1.0', 'bpp=1%', or several comma-separated: 'psnr=0.05,ms_ssim=0.001'."""
    out = dict(DEFAULT_TOLERANCES)
    for item in items or []:
        for pair in filter(None, item.split(",")):
            key, eq, value = pair.partition("=")
            key, value = key.strip(), value.strip()
            if not eq:
                raise ValueError(f"Tolerance {pair!r}: expected METRIC=VALUE, e.g. fid=0.5 or bpp=1%.")
            registry.get(key)  # an unknown metric is an argument error, never silently ignored
            try:
                number = float(value.removesuffix("%"))  # one %: '1%%' is no number, not 1 % read as '1%%' later
            except ValueError:
                raise ValueError(f"Tolerance {pair!r}: {value!r} is not a number.") from None
            if number < 0 or not np.isfinite(number):
                raise ValueError(f"Tolerance {pair!r}: a tolerance is an allowed worsening, so it must be 0 or more.")
            out[key] = value if value.endswith("%") else number
    return out


def tolerance_for(tolerances: dict, metric: str, base: float) -> float:
    tol = tolerances.get(metric, 0.0)
    if isinstance(tol, str) and tol.endswith("%"):
        return abs(base) * float(tol[:-1]) / 100
    return float(tol)


@dataclass
class Comparison:
    rows: pd.DataFrame  # per setting (detail)
    warnings: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)  # per codec and metric: the verdict
    n_dataset: int | None = None  # BASE's dataset size: comparisons on fewer images say so
    new_only: list[str] = field(default_factory=list)  # NEW's codecs and settings BASE lacks: named, not compared
    unfinished: bool = False  # BASE or NEW is not finished: the images one lacks may not be done yet

    @property
    def paired(self) -> list[str]:
        """One line per codec compared on fewer images than the dataset's: the images both runs scored."""
        if not self.n_dataset:
            return []
        counts = {}
        # A curve of a metric with per-image gaps rests on the images it scored (a warning names those gaps): the
        # images both runs scored are the most any of the codec's curves rests on
        for frame, how in ((self.curves, "max"), (self.rows, "min")):
            if len(frame) and "n_images" in frame:
                fewest = frame.dropna(subset=["n_images"]).groupby("codec", sort=False).n_images.agg(how)
                for codec, n in fewest.items():
                    counts[codec] = min(int(n), counts.get(codec, int(n)))
        return [f"{codec} compared on the {n} of {self.n_dataset} images both runs scored ({n}/{self.n_dataset}, "
                f"paired: the others failed{', or are not done yet,' if self.unfinished else ''} in BASE or NEW)"
                for codec, n in counts.items() if n < self.n_dataset]

    @property
    def regressions(self) -> pd.DataFrame:
        """Curve regressions, and settings that lost rows (more failures always count)."""
        parts = []
        if len(self.curves):
            parts.append(self.curves[self.curves.verdict == "worse"].assign(setting="(curve)"))
        if len(self.rows):
            parts.append(self.rows[(self.rows.verdict == "worse") & (self.rows.decisive.astype(bool))])
        parts = [p for p in parts if len(p)]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["codec", "metric", "setting"])

    def to_json(self) -> dict:
        rows = self.rows.replace({np.nan: None}).to_dict(orient="records")
        curves = self.curves.replace({np.nan: None}).to_dict(orient="records")
        return {"regressed": bool(len(self.regressions)), "n_regressions": int(len(self.regressions)),
                "warnings": self.warnings, "missing": self.missing, "new_only": self.new_only,
                "paired": self.paired,
                "n_dataset": self.n_dataset, "curves": curves, "rows": rows}


def provenance_warnings(base: RunRecord, new: RunRecord) -> list[str]:
    out = []
    bd, nd = base.dataset, new.dataset
    if bd.fingerprint != nd.fingerprint:
        out.append(f"datasets differ: {bd.name} ({bd.split}, {bd.n_images} images) vs {nd.name} ({nd.split}, "
                   f"{nd.n_images} images); only shared image ids are compared")
    if bd.preprocess != nd.preprocess:
        out.append(f"preprocessing differs: {bd.preprocess} vs {nd.preprocess}")
    bw, nw = base.inception.get("weights_sha256"), new.inception.get("weights_sha256")
    if bw != nw and bw and nw:  # one run without Inception: its metrics are named as missing, not as differing
        out.append(f"Inception weights differ: {str(bw)[:12]} vs {str(nw)[:12]} (IS, FID, KID, IPD not comparable)")
    bl, nl = (r.stage("image_metrics.lpips").get("backbone_sha256") for r in (base, new))
    if bl != nl:
        out.append(f"LPIPS weights differ: {str(bl)[:12]} vs {str(nl)[:12]}")
    # Every other weight file both runs used (DINOv2, LPIPS-VGG, DISTS, CLIP, pyiqa's): one list, run.weights.
    files_b, files_n = weights.recorded(base), weights.recorded(new)
    for what in sorted(set(files_b) & set(files_n) - {"Inception", "lpips backbone"}):
        if files_b[what][1] != files_n[what][1]:
            out.append(f"{what} weights differ: {files_b[what][1][:12]} vs {files_n[what][1][:12]} (the metrics computed "
                       "with them are not comparable)")
    bv, nv = base.versions, new.versions
    changed = sorted(k for k in set(bv) | set(nv) if bv.get(k) != nv.get(k))
    if changed:
        out.append("library versions differ: " + ", ".join(f"{k} {bv.get(k, '-')} -> {nv.get(k, '-')}"
                                                           for k in changed[:8]))
    for c in new.codecs:
        old = base.codec(c.label)
        if old and old.versions != c.versions:
            out.append(f"codec {c.label}: versions differ (its libraries or its code): {old.versions} -> {c.versions}")
        if old and old.options != c.options:
            out.append(f"codec {c.label}: options differ: {old.options} -> {c.options}")
    return out


def _missing(base_summary: pd.DataFrame, new_summary: pd.DataFrame, new_record: RunRecord,
             new_gaps: dict[str, str]) -> list[str]:
    """BASE codecs NEW lacks, settings NEW dropped from a sweep it otherwise kept (a sweep that was shifted as a
    whole is compared as a curve, not reported missing), and metrics BASE measured that NEW did not (with NEW's
    reason: a metric that became unavailable, say its weights failed to download, must not pass a gate; or the
    reason its rows give, `new_gaps`)."""
    out = []
    dropped: dict[str, list[str]] = {}
    for codec, rows in base_summary.groupby("codec", sort=False):
        new = new_summary[new_summary.codec == codec]
        if not len(new):
            out.append(f"codec {codec} is in BASE but not in NEW")
            continue
        base_labels, new_labels = set(rows.setting_label), set(new.setting_label)
        if base_labels & new_labels and base_labels - new_labels:
            out.append(f"codec {codec}: settings {', '.join(sorted(base_labels - new_labels))} are in BASE but not "
                       "in NEW")
        scored = new[new.n_ok > 0] if "n_ok" in new else new  # a setting whose rows all failed counts as n_failed
        for metric in registry.METRICS if len(scored) else ():
            if _measured(rows, metric) and not _measured(scored, metric):
                dropped.setdefault(metric, []).append(codec)
    for metric, codecs in dropped.items():
        state = new_record.metric_state(metric)
        why = f" ({state['status']} in NEW: {state['reason']})" if state.get("reason") else \
            f" (in NEW, {new_gaps[metric]})" if metric in new_gaps else ""
        out.append(f"metric {metric} is in BASE but not in NEW{why}, for {', '.join(codecs)}")
    return out


def _measured(rows: pd.DataFrame, metric: str) -> bool:
    """Whether a codec's summary rows hold a value of the metric (a column of NaN was not measured)."""
    return metric in rows and bool(rows[metric].notna().any())


def _new_only(base_summary: pd.DataFrame, new_summary: pd.DataFrame) -> list[str]:
    """NEW's codecs BASE lacks, settings NEW added to a sweep it shares with BASE, and metrics only NEW measured:
    named, since nothing compares them (as `_missing` names what NEW dropped)."""
    out = []
    added_metrics: dict[str, list[str]] = {}
    for codec, rows in (new_summary.groupby("codec", sort=False) if len(new_summary) else ()):
        base = base_summary[base_summary.codec == codec] if len(base_summary) else base_summary
        shared = set(rows.setting_label) & set(base.setting_label) if len(base) else set()
        added = sorted(set(rows.setting_label) - shared) if shared else []  # a sweep shifted whole: its curve
        if not len(base):
            out.append(f"codec {codec} is in NEW but not in BASE: nothing to compare it with")
        elif not shared:
            out.append(f"codec {codec}: no setting is in both runs (BASE {', '.join(_labels(base))}; NEW "
                       f"{', '.join(_labels(rows))}): compared as a curve, with no per-setting detail")
        elif added:
            settings = f"settings {', '.join(added)} are" if len(added) > 1 else f"setting {added[0]} is"
            out.append(f"codec {codec}: {settings} in NEW but not in BASE: part of its curve, with no per-setting "
                       "detail")
        for metric in registry.METRICS if len(base) else ():
            if _measured(rows, metric) and not _measured(base, metric):
                added_metrics.setdefault(metric, []).append(codec)
    out += [f"metric {metric} is in NEW but not in BASE, for {', '.join(codecs)}: nothing to compare it with"
            for metric, codecs in added_metrics.items()]
    return out


def _labels(rows: pd.DataFrame) -> list[str]:
    """A codec's setting labels in the order of its rates."""
    return list(dict.fromkeys(rows.sort_values("bpp").setting_label)) if "bpp" in rows else list(rows.setting_label)


def compare_runs(base_dir, new_dir, tolerances: dict | None = None, resamples: int = bootstrap.DEFAULT_RESAMPLES,
                 seed: int = bootstrap.DEFAULT_SEED, level: float = bootstrap.DEFAULT_LEVEL,
                 allow_missing: bool = False, allow_different_data: bool = False,
                 bd_method: str = "akima") -> Comparison:
    tolerances = tolerances or dict(DEFAULT_TOLERANCES)
    base_record, new_record = read_record(base_dir), read_record(new_dir)
    bd, nd = base_record.dataset, new_record.dataset
    if (bd.fingerprint, bd.preprocess) != (nd.fingerprint, nd.preprocess) and not allow_different_data:
        raise NotComparable(f"BASE and NEW are of different data ({bd.name}/{bd.split}, {bd.n_images} images, "
                            f"preprocessing {bd.preprocess} vs {nd.name}/{nd.split}, {nd.n_images} images, "
                            f"preprocessing {nd.preprocess}): pass --allow-different-data to compare the images they "
                            "share anyway.")
    base_running, new_running = unfinished(base_dir), unfinished(new_dir)  # each "" for a finished run
    running = [why for why in (base_running, new_running) if why]
    warnings = running + provenance_warnings(base_record, new_record)
    gaps = {"BASE": per_image_gaps(base_dir), "NEW": per_image_gaps(new_dir)}  # rows a metric could not score
    for metric in dict.fromkeys([*gaps["BASE"], *gaps["NEW"]]):
        said = {which: gap[metric] for which, gap in gaps.items() if metric in gap}
        warnings += [f"in BASE and NEW, {said['BASE']}"] if len(set(said.values())) == 1 and len(said) == 2 else \
            [f"in {which}, {gap}" for which, gap in said.items()]
    base_sets, new_sets = bootstrap.load_settings(base_dir), bootstrap.load_settings(new_dir)
    base_summary, new_summary = load_summary(base_dir), load_summary(new_dir)
    missing = _missing(base_summary, new_summary, new_record, gaps["NEW"]) if len(base_summary) else []
    if missing and not allow_missing:
        why = (f"{new_running}; or" if new_running else  # not done yet, rather than left out
               "a gate must not pass on what it did not run;")
        raise NotComparable(f"NEW lacks part of BASE ({'; '.join(missing)}): {why} pass --allow-missing to compare "
                            "the rest.")
    def curve_noise(codec: str, metric: str) -> float:
        """The mean over the codec's settings of seed noise's standard error (the BD-metric averages them)."""
        values = [seed_noise(b, new_summary[(new_summary.codec == codec) & (new_summary.setting_label == label)],
                             metric)
                  for label, b in base_summary[base_summary.codec == codec].groupby("setting_label")] \
            if len(base_summary) and len(new_summary) else []
        values = [v for v in values if v == v]
        return float(np.mean(values)) if values else float("nan")

    curves = curve_verdicts(base_sets, new_sets, tolerances, resamples, seed, level, curve_noise, bd_method)
    rows = []
    for key in [k for k in base_sets if k in new_sets]:
        codec, setting = key
        diffs = bootstrap.paired_difference(base_sets[key], new_sets[key], max(resamples, 1), seed, level)
        b = base_summary[(base_summary.codec == codec) & (base_summary.setting_label == setting)]
        n = new_summary[(new_summary.codec == codec) & (new_summary.setting_label == setting)]
        for metric, d in diffs.items():
            if resamples <= 0:
                d["low"] = d["high"] = float("nan")
            note = "" if not math.isnan(d["low"]) else "no interval: " + (
                "no resamples (--bootstrap 0)" if resamples <= 0 else "the change is undefined in every resample")
            rows.append(_verdict(codec, setting, metric, {**d, "seed_noise": seed_noise(b, n, metric), "note": note},
                                 tolerances))
        # Set-level metrics the bootstrap does not resample (patch FID, PRDC) and failure counts, from the
        # summaries: point values, no interval, and the note says why.
        for metric in SUMMARY_ONLY + tuple(m for m in bootstrap.SET_METRICS if m not in diffs):
            if metric in b and metric in n and b[metric].notna().any() and n[metric].notna().any():
                bv, nv = float(b[metric].iloc[0]), float(n[metric].iloc[0])
                rows.append(_verdict(codec, setting, metric, {"base": bv, "new": nv, "change": nv - bv,
                                                              "low": np.nan, "high": np.nan,
                                                              "seed_noise": seed_noise(b, n, metric),
                                                              "note": _summary_only(metric, diffs)}, tolerances))
        if len(b) and len(n) and int(n.n_failed.iloc[0]) > int(b.n_failed.iloc[0]):
            rows.append({"codec": codec, "setting": setting, "metric": "n_failed", "base": int(b.n_failed.iloc[0]),
                         "new": int(n.n_failed.iloc[0]), "change": int(n.n_failed.iloc[0] - b.n_failed.iloc[0]),
                         "low": np.nan, "high": np.nan, "tolerance": 0.0, "direction": "lower is better",
                         "verdict": "worse", "significant": None, "decisive": True,
                         "note": "a count of failed rows: more always counts"})
    columns = ["codec", "setting", "metric", "base", "new", "change", "low", "high", "tolerance", "direction",
               "verdict", "significant", "n_images", "seed_noise", "decisive", "note"]
    detail = pd.DataFrame(rows, columns=columns)
    if len(detail):
        detail["decisive"] = [_decisive(r, detail, curves, tolerances) for r in detail.itertuples()]
    new_only = _new_only(base_summary, new_summary)
    result = Comparison(detail, warnings, missing, curves, int(bd.n_images), new_only, bool(running))
    if not len(detail) and not (len(curves) and curves.bd_metric.notna().any()):
        raise NotComparable("Nothing could be compared: BASE and NEW share no codec whose curves overlap, no "
                            "setting and no images; check that they ran the same codecs on the same data.")
    return result


def _summary_only(metric: str, diffs: dict) -> str:
    """Why a per-setting change read from the two summaries has no interval."""
    if metric not in bootstrap.SET_METRICS:
        why = bootstrap.not_resampled(metric)
    elif not diffs:
        why = "the runs share fewer than 2 images of this setting"
    else:
        why = "it is undefined on the images both runs share"
    return f"no interval: {why}; each run's summary value, on its own images"


def _decisive(row, detail: pd.DataFrame, curves: pd.DataFrame, tolerances: dict) -> bool:
    """Whether a per-setting change decides the verdict: more failed rows always do; a metric's change does
    where the codec has no curve verdict for it (its settings do not span two rates) and the setting's rate
    did not move (so the two points are at equal rate), when it is significant or no interval exists."""
    if row.metric == "n_failed":
        return True
    if row.metric == "bpp":
        return False
    if len(curves) and ((curves.codec == row.codec) & (curves.metric == row.metric)
                        & curves.verdict.isin(["same", "better", "worse"])).any():
        return False
    rate = detail[(detail.codec == row.codec) & (detail.setting == row.setting) & (detail.metric == "bpp")]
    if len(rate) and abs(rate.change.iloc[0]) > tolerance_for(tolerances, "bpp", rate.base.iloc[0]):
        return False
    return row.significant is not False


def curve_verdicts(base_sets: dict, new_sets: dict, tolerances: dict, resamples: int, seed: int,
                   level: float, noise=lambda codec, metric: float("nan"), bd_method: str = "akima",
                   intervals: bool = True) -> pd.DataFrame:
    """Per codec and metric: BD-metric and BD-rate of NEW against BASE, with paired bootstrap intervals, by the
    interpolation `bd_method` (recorded in each row). `noise(codec, metric)`: the standard error seed noise alone
    gives a change (stochastic decoders). With `intervals` false, a curve whose BD is within the allowance (so
    "same" whatever its interval) gets none: the verdicts are the same, the resamples are spent only where
    they decide."""
    from benchmark.analysis.curves import BD_METHODS, Curve, compare_curves, fit_error

    if bd_method not in BD_METHODS:
        raise ValueError(f"BD method must be one of {', '.join(BD_METHODS)}, not {bd_method!r}.")

    out = []
    codecs = sorted({c for c, _ in base_sets} & {c for c, _ in new_sets})
    for codec in codecs:
        ids = bootstrap.shared_images(d for (c, _), d in [*base_sets.items(), *new_sets.items()] if c == codec)
        if len(ids) < 2:
            continue
        positions = bootstrap.resample_positions(len(ids), max(resamples, 1),
                                                 bootstrap._rng(seed, codec, "curve"))
        base = bootstrap.codec_curves(base_sets, codec, ids, positions)
        new = bootstrap.codec_curves(new_sets, codec, ids, positions)
        n_of = dict.fromkeys(base, len(ids))
        scored = bootstrap.scored_curves([(base_sets, codec), (new_sets, codec)], ids, lambda metric, fewer: (
            bootstrap.resample_positions(len(fewer), max(resamples, 1), bootstrap._rng(seed, codec, "curve", metric))))
        for metric, (n, (on_base, on_new)) in scored.items():  # its bpp over the images it scored too
            n_of[metric], base[metric], new[metric] = n, on_base, on_new
        for metric in sorted(set(base) & set(new), key=lambda m: list(registry.METRICS).index(m)):
            if base[metric] is None or new[metric] is None:
                continue
            (bb, bv), (nb, nv) = base[metric], new[metric]
            if bb.shape[1] < 2 or nb.shape[1] < 2:
                continue  # a curve needs two settings; single settings are compared as detail
            tol = tolerance_for(tolerances, metric, float(np.mean(bv[0])))
            fit = fit_error(Curve.from_points(codec, metric, bb[0], bv[0]),
                            Curve.from_points(codec, metric, nb[0], nv[0]), bd_method)
            values = []
            for k in range(len(bb)):
                if k == 1 and not intervals and _within_allowance(metric, values[0][0], tol, noise(codec, metric), fit):
                    break
                try:
                    result = compare_curves(Curve.from_points(codec, metric, bb[k], bv[k]),
                                            Curve.from_points(codec, metric, nb[k], nv[k]), bd_method)
                except ValueError as exc:  # a degenerate resample (e.g. settings at the same rate)
                    result = {"bd_metric": np.nan, "bd_rate": np.nan, "note": str(exc)}
                values.append((result["bd_metric"], result["bd_rate"], result["note"]))
            out.append(_curve_verdict(codec, metric, values, tol, level, n_of[metric],
                                      resamples if len(values) > 1 else 0, noise(codec, metric), fit, bd_method))
            if len(values) == 1 and resamples > 0:  # within the allowance: no interval was needed, none is claimed
                out[-1]["note"] = values[0][2]
    columns = ["codec", "metric", "bd_metric", "low", "high", "bd_rate", "bd_rate_low", "bd_rate_high", "tolerance",
               "direction", "verdict", "significant", "n_images", "note", "fit_error", "bd_method", "why"]
    return pd.DataFrame(out, columns=columns)


def _allowance(tol: float, noise: float, fit: tuple[float, str]) -> tuple[float, str]:
    """What a change must exceed, and in words: the tolerance (or twice the seed noise, if larger) plus the
    curve-fit error, the part of BD that fitting curves through a few points alone can produce (a codec moving
    along its own curve)."""
    which, base = max((("tolerance", tol), ("2 x seed noise", 2 * noise if noise == noise else 0.0)),
                      key=lambda item: item[1])
    fit_part = fit[0] if fit[0] == fit[0] else 0.0
    words = f"the {which} {base:.3g}" + (f" plus the curve-fit error {fit_part:.3g} ({fit[1]})" if fit_part else "")
    return base + fit_part, words


def _within_allowance(metric: str, point: float, tol: float, noise: float, fit: tuple[float, str]) -> bool:
    return bool(np.isfinite(point)) and abs(point) <= _allowance(tol, noise, fit)[0]


def _curve_verdict(codec: str, metric: str, values: list, tol: float, level: float, n: int,
                   resamples: int, noise: float = float("nan"), fit: tuple[float, str] = (float("nan"), ""),
                   bd_method: str = "akima") -> dict:
    """The verdict on one curve: a change counts when it is beyond the metric's tolerance (or twice a stochastic
    decoder's seed noise, if larger) plus the error of fitting curves through the points (`curves.fit_error`:
    moving along one's own curve changes BD by about that much), and its bootstrap interval excludes zero;
    `why` says in one line what decided."""
    up = higher_is_better(metric)
    point, point_rate, note = values[0]
    row = {"codec": codec, "metric": metric, "bd_metric": point, "bd_rate": point_rate, "n_images": n, "note": note,
           "direction": registry.get(metric).direction, "low": np.nan, "high": np.nan,
           "bd_rate_low": np.nan, "bd_rate_high": np.nan, "significant": None, "fit_error": fit[0],
           "bd_method": bd_method}
    row["tolerance"] = tol
    if np.isnan(point):
        row["verdict"] = "not compared"
        row["note"] = note or "BD undefined"
        row["why"] = f"not compared: {row['note']}"
        return row
    resampled = np.array([v[0] for v in values[1:]], float)
    rates = np.array([v[1] for v in values[1:]], float)
    if resamples > 0 and np.isfinite(resampled).sum() >= bootstrap.MIN_DEFINED_SHARE * len(resampled):
        row["low"], row["high"] = bootstrap.bias_corrected_percentile(resampled[np.isfinite(resampled)], point, level)
        if np.isfinite(rates).sum() >= bootstrap.MIN_DEFINED_SHARE * len(rates) and np.isfinite(point_rate):
            row["bd_rate_low"], row["bd_rate_high"] = bootstrap.bias_corrected_percentile(
                rates[np.isfinite(rates)], point_rate, level)
        elif np.isfinite(point_rate):  # the curves overlap in the metric too rarely across the resamples
            row["note"] = "; ".join(filter(None, [note, f"BD-rate: no interval (undefined in "
                                                        f"{1 - np.isfinite(rates).mean():.0%} of the resamples)"]))
        worse_side = row["high"] < 0 if up else row["low"] > 0
        row["significant"] = bool(row["high"] < 0 or row["low"] > 0)
    else:
        worse_side = point < 0 if up else point > 0
        row["note"] = "; ".join(filter(None, [note, "no interval (no resamples, or BD undefined in too many): "
                                                    "judged on the tolerance alone"]))
    gain = point if up else -point  # positive: NEW is better at equal rate
    if noise == noise and abs(gain) <= 2 * noise:
        row["note"] = "; ".join(filter(None, [row["note"], f"within 2 x the seed noise ({noise:.3g}) of a stochastic "
                                                          "decoder's samples"]))
    allowed, allowance = _allowance(tol, noise, fit)
    interval = "" if np.isnan(row["low"]) else f"[{row['low']:+.3g}, {row['high']:+.3g}]"
    if abs(gain) <= allowed:
        row["verdict"] = "same"
        row["why"] = f"same: |BD| {abs(point):.3g} is within {allowance}"
    elif row["significant"] is False:
        row["verdict"] = "same"
        row["why"] = f"same: beyond {allowance}, but its interval {interval} includes 0"
    else:
        row["verdict"] = "better" if gain > 0 else ("worse" if worse_side else "same")
        evidence = f"its interval {interval} excludes 0" if interval else "no interval: the allowance alone decides"
        row["why"] = f"{row['verdict']}: BD {point:+.3g} is beyond {allowance}; {evidence}"
    return row


def seed_noise(base: pd.DataFrame, new: pd.DataFrame, metric: str) -> float:
    """The standard error of a change that seed noise alone gives, from the spreads over samples both runs
    report for a stochastic decoder (`<metric>_sample_std` over K samples): sqrt(sb^2/Kb + sn^2/Kn); NaN
    when either run decoded one sample."""
    column = f"{metric}_sample_std"
    if not (len(base) and len(new)) or column not in base or column not in new:
        return float("nan")
    kb = float(base["n_samples"].iloc[0]) if "n_samples" in base else float("nan")
    kn = float(new["n_samples"].iloc[0]) if "n_samples" in new else float("nan")
    sb, sn = float(base[column].iloc[0]), float(new[column].iloc[0])
    return float(math.sqrt(sb ** 2 / kb + sn ** 2 / kn)) if kb > 1 and kn > 1 else float("nan")


def _verdict(codec: str, setting: str, metric: str, d: dict, tolerances: dict) -> dict:
    up = higher_is_better(metric)
    tol = tolerance_for(tolerances, metric, d["base"])
    gain = d["change"] if up else -d["change"]  # positive: NEW is better
    noise = d.get("seed_noise", float("nan"))
    # a change within two standard errors of seed noise is the decoder's luck, not a regression
    allowed = max(tol, 2 * noise) if noise == noise else tol
    verdict = "same" if abs(gain) <= allowed or math.isnan(gain) else ("better" if gain > 0 else "worse")
    low, high = d.get("low", np.nan), d.get("high", np.nan)
    significant = None if math.isnan(low) or math.isnan(high) else bool(low > 0 or high < 0)
    return {"codec": codec, "setting": setting, "metric": metric, "base": d["base"], "new": d["new"],
            "change": d["change"], "low": low, "high": high, "tolerance": tol,
            "direction": registry.get(metric).direction, "verdict": verdict,
            "significant": significant, "n_images": d.get("n_images"), "seed_noise": noise, "note": d.get("note", "")}


def render_text(result: Comparison, show_all: bool = False) -> str:
    lines = []
    for w in result.warnings:
        lines.append(f"warning: {w}")
    for m in result.missing + result.new_only:
        lines.append(f"note: {m}")
    for p in result.paired:
        lines.append(f"note: {p}")
    curves = result.curves
    if len(curves):
        table = curves.copy()
        table["BD-metric [interval]"] = [
            "–" if pd.isna(v) else f"{v:+.4g}" + ("" if pd.isna(lo) else f" [{lo:+.4g}, {hi:+.4g}]")
            for v, lo, hi in zip(table.bd_metric, table.low, table.high)]
        table["BD-rate % [interval]"] = [
            "–" if pd.isna(v) else f"{v:+.2f}" + ("" if pd.isna(lo) else f" [{lo:+.2f}, {hi:+.2f}]")
            for v, lo, hi in zip(table.bd_rate, table.bd_rate_low, table.bd_rate_high)]
        table["sig."] = ["" if s is None or pd.isna(s) else ("yes" if s else "no") for s in table.significant]
        lines.append(f"Curves (NEW against BASE, at equal rate, BD by {curves.bd_method.iloc[0]} interpolation; the "
                     "verdict):")
        lines.append(table[["codec", "metric", "BD-metric [interval]", "BD-rate % [interval]", "tolerance", "verdict",
                            "sig.", "note"]].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        lines += [f"  {r.codec} {r.metric}: {r.why}" for r in curves.itertuples()]  # what decided, in one line
        lines.append("")
        lines.append("Per setting (detail):")
    rows = result.rows if show_all else result.rows[result.rows.verdict != "same"]
    if len(rows):
        table = rows.copy()
        table["change [interval]"] = [
            f"{c:+.4g}" + ("" if pd.isna(lo) else f" [{lo:+.4g}, {hi:+.4g}]")
            for c, lo, hi in zip(table.change, table.low, table.high)]
        table["sig."] = ["" if s is None or pd.isna(s) else ("yes" if s else "no") for s in table.significant]
        cols = ["codec", "setting", "metric", "base", "new", "change [interval]", "tolerance", "verdict", "sig."]
        cols += ["note"] if table.note.fillna("").astype(bool).any() else []
        lines.append(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    elif len(result.rows):
        lines.append("(every setting's verdict is same; --all lists them)")
    n_curves = int(curves.verdict.isin(["same", "better", "worse"]).sum()) if len(curves) else 0
    regressions = result.regressions
    lines.append(f"{n_curves} curve comparisons ({int((curves.verdict == 'worse').sum()) if len(curves) else 0} worse, "
                 f"{int((curves.verdict == 'better').sum()) if len(curves) else 0} better), {len(result.rows)} "
                 f"per-setting details{_resting_on(result)}.")
    if len(regressions):
        named = sorted({f"{r.metric} ({r.codec}{'' if r.setting == '(curve)' else ' ' + str(r.setting)})"
                        + ("" if r.setting != "(curve)" else f" BD {r.bd_metric:+.4g}"
                           + ("" if pd.isna(r.low) else f" [{r.low:+.4g}, {r.high:+.4g}]"))
                        for r in regressions.itertuples()})
        lines.append("REGRESSION: NEW is worse than BASE beyond tolerance in " + ", ".join(named[:12])
                     + (" ..." if len(named) > 12 else ""))
    return "\n".join(lines)


def _resting_on(result: Comparison) -> str:
    """What the numbers rest on: the most images a comparison paired (fewer where a note above says)."""
    counts = [frame.n_images.dropna().max() for frame in (result.curves, result.rows)
              if len(frame) and "n_images" in frame and frame.n_images.notna().any()]
    if not counts:
        return ""
    n = int(max(counts))
    of = f" of {result.n_dataset}" if result.n_dataset and n < result.n_dataset else ""
    return f", paired on the {n}{of} images both runs scored" + (" (fewer where a note above says)" if result.paired
                                                                    else "")


def dumps(result: Comparison) -> str:
    return json.dumps(result.to_json(), indent=2, default=float)
