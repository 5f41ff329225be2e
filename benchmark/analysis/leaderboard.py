"""Leaderboard tables from one or more runs: metrics at chosen rates, BD against an anchor, and every
setting with its bootstrap interval, as Markdown, LaTeX, CSV and HTML.

Values at a rate are interpolated along each codec's own curve and never extrapolated (an empty cell
means the codec's settings do not span that rate). Their intervals, and those of BD-rate and BD-metric,
come from computing the same quantity on the codec's curve in each bootstrap resample of the run's
images (one draw shared by every codec of a run, so BD against an anchor of the same run is paired; against an
anchor in another run of the same images, both are recomputed on the images both runs scored, on one draw).
BD over too small a share of the curves' ranges is marked unreliable (†); a value of a run's codec shown without an
interval says why (‡, and the CSV's `interval_note`), since its missing spread is not a zero spread.
"""

from __future__ import annotations

import math
import pathlib
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmark.analysis import bootstrap
from benchmark.analysis.curves import BD_METHODS, MIN_RELIABLE_OVERLAP, Curve, compare_curves
from benchmark.analysis.latex import render_tex
from benchmark.analysis.plots import dataset_title
from benchmark.analysis.references import fewest_images
from benchmark.run.integrity import atomic_write_bytes
from benchmark.run.record import RunRecord, read_record
from benchmark.run.results import images_of, load_summary, per_image_gaps, space_notes, unfinished
from benchmark.analysis.table_format import NO_INTERVAL, format_value, run_names, short_label
from metrics import defaults, registry
from metrics.registry import METRICS
from metrics.suggest import did_you_mean

DEFAULT_RATES = defaults.RATES
FORMATS = ("md", "tex", "csv", "html")


@dataclass
class Leaderboard:
    at_rates: pd.DataFrame  # codec, metric, bpp, value, low, high, interval_note
    bd: pd.DataFrame  # codec, metric, bd_rate, bd_metric, note, fallback, interval_note
    settings: pd.DataFrame  # long: codec, setting, metric, value, low, high, interval_note
    anchor: str
    metrics: list[str]
    rates: list[float]
    notes: list[str] = field(default_factory=list)
    # codec -> (images its values rest on, the dataset's images), for codecs resting on fewer than all
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    resamples: int = 0  # behind its intervals (0: none, and no title or caption speaks of them)
    unfinished: list[str] = field(default_factory=list)  # why a run's values are not its final ones yet

    @property
    def empty(self) -> bool:
        """Nothing to table: no setting has a value (every row of the runs failed, and no published curve)."""
        return self.settings.empty

    def shown(self, codec: str) -> str:
        """The codec as a table prints it: 'jpeg (4/24)' when its values rest on fewer than the dataset's images."""
        return f"{codec} ({self.counts[codec][0]}/{self.counts[codec][1]})" if codec in self.counts else codec


PUBLISHED = " [published]"


def with_references(summary: pd.DataFrame, references: pd.DataFrame) -> pd.DataFrame:
    """A runs' summary plus published curves, marked in their codec name and never given intervals."""
    if references is None or not len(references):
        return summary
    refs = references.copy()
    refs["codec"] = [c if c.endswith(PUBLISHED) else c + PUBLISHED for c in refs.codec]
    refs["codec_in_run"] = refs["codec"]
    refs["run_dir"] = ""
    return pd.concat([summary, refs], ignore_index=True)


def dataset_label(record: RunRecord) -> str:
    d = record.dataset
    return f"{pathlib.Path(str(d.name)).name}/{d.split}, {d.n_images} images, {d.preprocess}"


def load_summaries(run_dirs: list[str | pathlib.Path], allow_mixed: bool = False) -> pd.DataFrame:
    """Summaries of several runs; codec labels that repeat across runs get the run's name appended. Runs of
    different datasets or preprocessing are refused unless `allow_mixed`; then every codec is labelled
    with its dataset."""
    frames, datasets = [], {}
    for run_dir in run_dirs:
        record = read_record(run_dir)
        datasets.setdefault((record.dataset.fingerprint, record.dataset.preprocess), []).append(
            f"{pathlib.Path(run_dir).name} ({dataset_label(record)})")
        summary = load_summary(run_dir).copy()
        summary["run_dir"] = str(run_dir)
        summary["codec_in_run"] = summary["codec"]
        summary["dataset_label"] = dataset_label(record)
        frames.append(summary)
    if len(datasets) > 1 and not allow_mixed:
        raise ValueError("These runs are of different datasets or preprocessing (" + "; ".join(
            ", ".join(v) for v in datasets.values()) + "): their numbers are not comparable; pass --allow-mixed "
            "to table them anyway, each codec labelled with its dataset.")
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(datasets) > 1 and len(data):
        data["codec"] = [f"{c} [{d}]" for c, d in zip(data.codec, data.dataset_label)]
    if len(run_dirs) > 1 and len(data):
        owners = data.groupby("codec")["run_dir"].nunique()
        clash, names = set(owners[owners > 1].index), run_names(run_dirs)
        data["codec"] = [f"{c} ({names[r]})" if c in clash else c for c, r in zip(data.codec, data.run_dir)]
    return data


def unmeasured(run_dirs: list, metrics: list[str]) -> list[str]:
    """Why a run's codecs have no value of a metric shown from another run (– in a table, no curve in a plot): it
    was turned off there, or unavailable (weights that failed to download), as its config.json records it; and
    where some or all of a run's rows have no value of a metric it ran (images too small for MS-SSIM), why."""
    names = run_names(run_dirs)
    out = []
    for run_dir in run_dirs:
        record = read_record(run_dir)
        for metric in metrics:
            state = record.metric_state(metric)
            if state.get("status") not in (None, "ok"):
                out.append(f"Run {names[str(run_dir)]} has no {metric}: {state['status']}, "
                           f"{state.get('reason') or 'no reason recorded'}.")
        out += [f"Run {names[str(run_dir)]}: {gap}." for gap in per_image_gaps(run_dir).values()]
    return out


def table_metrics(summary: pd.DataFrame, wanted: list[str] | None = None, why: str = "") -> list[str]:
    for m in wanted or []:
        registry.measured(m)  # an unknown name (or bpp) is an error, with the known ones
    present = [m for m in registry.quality_metrics() if m in summary and pd.api.types.is_numeric_dtype(summary[m])
               and summary[m].notna().any()]
    if wanted:
        unknown = [m for m in wanted if m not in present]
        if unknown:
            raise ValueError(f"No values for metric(s) {', '.join(unknown)} in these runs{f' ({why})' if why else ''}; "
                             f"present: {', '.join(present)}.")
        return list(wanted)
    return present


def pick_anchor(summary: pd.DataFrame, anchor: str | None) -> str:
    codecs = list(dict.fromkeys(summary.codec))
    if anchor and anchor not in codecs and anchor + PUBLISHED in codecs:
        anchor += PUBLISHED
    if anchor:
        if anchor not in codecs:
            close = did_you_mean(anchor, codecs)
            raise ValueError(f"Anchor codec {anchor!r} is not in these runs; {close}codecs: {', '.join(codecs)}.")
        return anchor
    for candidate in ("jpeg", "jpeg@bpp"):
        if candidate in codecs:
            return candidate
    jpeg = [c for c in codecs if summary.loc[summary.codec == c, "codec_target"].iloc[0] == "jpeg"]
    return jpeg[0] if jpeg else codecs[0]


def build(run_dirs: list, anchor: str | None = None, rates=DEFAULT_RATES, metrics: list[str] | None = None,
          resamples: int = bootstrap.DEFAULT_RESAMPLES, seed: int = bootstrap.DEFAULT_SEED,
          level: float = bootstrap.DEFAULT_LEVEL, bd_method: str = "akima", references=(),
          allow_mixed: bool = False) -> Leaderboard:
    """`references`: published-curve files (benchmark.analysis.references), tabled beside the runs' codecs."""
    from benchmark.analysis.references import load_references

    if bd_method not in BD_METHODS:
        raise ValueError(f"BD method must be one of {', '.join(BD_METHODS)}, not {bd_method!r}.")
    summary = load_summaries(run_dirs, allow_mixed)
    if not len(summary):
        raise ValueError("These runs have no results yet.")
    refs, ref_notes = load_references(references, summary)
    runs_only = summary  # the runs' own rows: what their numbers rest on (published curves say their own)
    summary = with_references(summary, refs)
    empty = [m for m in metrics or [] if m not in summary or not summary[m].notna().any()]  # asked for, no value
    why = "; ".join(gap for r in run_dirs for m, gap in per_image_gaps(r).items() if m in empty) if empty else ""
    metrics = table_metrics(summary, metrics, why)
    anchor = pick_anchor(summary, anchor)
    # Intervals, keyed like the summary rows (codec label as shown, setting index).
    ci_frames = []
    for run_dir in run_dirs:
        if resamples <= 0:
            break
        ci = bootstrap.intervals(run_dir, resamples, seed, level)
        ci["run_dir"] = str(run_dir)
        ci_frames.append(ci)
    ci = pd.concat(ci_frames, ignore_index=True) if ci_frames else pd.DataFrame(
        columns=["codec", "setting_index", "metric", "low", "high", "run_dir"])
    values = ["bpp", *metrics]
    frame = summary.assign(row=range(len(summary)), rate=summary.bpp, images_ok=images_of(summary, "n_ok"))
    settings = frame.melt(id_vars=["row", "run_dir", "codec", "codec_in_run", "setting_label", "setting_index", "rate",
                                   "n_ok", "images_ok"], value_vars=values, var_name="metric", value_name="value")
    settings = settings[settings.value.notna()].merge(
        ci[["run_dir", "codec", "setting_index", "metric", "low", "high"]].rename(columns={"codec": "codec_in_run"}),
        on=["run_dir", "codec_in_run", "setting_index", "metric"], how="left")
    settings = settings.assign(order=settings.metric.map(values.index)).sort_values(["row", "order"])
    if "rate_n_matched" in summary:  # rate-matched settings say how many images reached their target
        reached = {(r, c, s): (m, n) for r, c, s, m, n in zip(summary.run_dir, summary.codec_in_run,
                                                               summary.setting_index, summary.rate_n_matched,
                                                               summary.n_ok) if pd.notna(m)}
        settings["setting_label"] = [
            f"{label} (target reached {int(reached[k][0])}/{int(reached[k][1])})" if k in reached
            and reached[k][0] < reached[k][1] else label
            for label, k in zip(settings.setting_label, zip(settings.run_dir, settings.codec_in_run,
                                                             settings.setting_index))]
    n_dataset = dataset_sizes(summary)
    settings["n_dataset"] = [n_dataset.get(r) for r in settings.run_dir]
    settings["setting_label"] = [f"{label} ({int(n)}/{int(d)})" if pd.notna(n) and d and n < d else label
                                 for label, n, d in zip(settings.setting_label, settings.images_ok,
                                                        settings.n_dataset)]
    drawn = {r: bootstrap.run_resamples(r, resamples, seed) for r in dict.fromkeys(summary.run_dir) if r} \
        if resamples > 0 else {}
    settings["interval_note"] = [_setting_without_interval(drawn.get(r), (c, s), m, lo) for r, c, s, m, lo in zip(
        settings.run_dir, settings.codec_in_run, settings.setting_index, settings.metric, settings.low)]
    settings = settings.rename(columns={"setting_label": "setting", "rate": "bpp"})[
        ["codec", "setting", "setting_index", "bpp", "metric", "value", "low", "high", "n_ok", "n_dataset",
         "interval_note"]].reset_index(drop=True)
    counts = partial_counts(summary, n_dataset)
    if len(refs):  # a published curve from a cmcbench export says what its points rest on, as a run's codec does
        published = summary[summary["published"].fillna(False).astype(bool)]
        counts.update({c: behind for c, curve in published.groupby("codec", sort=False)
                       if (behind := fewest_images(curve)) is not None})
    at_rates, bd = [], []
    codecs = list(dict.fromkeys(summary.codec))
    matched = rate_matched(summary, rates)
    where = summary.groupby("codec", sort=False)[["run_dir", "codec_in_run"]].first()
    loaded: dict = {}  # run folder -> its settings, read for pairing where no resamples were drawn
    anchor_curves: dict = {}  # run folder -> {the images paired on: the anchor's curves}, computed once for all codecs

    def settings_of(run: str) -> dict:
        return drawn[run].settings if run in drawn else loaded.setdefault(run, bootstrap.load_settings(run))

    same_data = {r: (d.fingerprint, d.preprocess) for r in dict.fromkeys(runs_only.run_dir)
                 for d in [read_record(r).dataset]}
    scored_spans: dict[str, dict[str, tuple[float, float]]] = {}  # metric with gaps -> codec -> its rates there
    for codec in codecs:
        run_dir, in_run = where.loc[codec]
        anchor_run, anchor_in_run = where.loc[anchor]
        pairs = None
        # Images failed, or the anchor in another run of the same images: paired. A metric with per-image gaps
        # alone: that metric paired, on the images it scored, its bpp too
        both_measured = codec != anchor and bool(run_dir) and bool(anchor_run)
        pair_all = both_measured and (codec in counts or anchor in counts if anchor_run == run_dir
                                      else same_data[run_dir] == same_data[anchor_run])
        if pair_all or both_measured and anchor_run == run_dir and per_image_gaps(run_dir):
            pairs = _paired_curves(settings_of(anchor_run), settings_of(run_dir), anchor_in_run, in_run, resamples,
                                   seed, anchor_curves.setdefault(anchor_run, {}))
        scored = _scored_curves(settings_of(run_dir), in_run, codec, resamples, seed) \
            if run_dir and per_image_gaps(run_dir) else {}
        for metric in metrics:
            curve = Curve.from_summary(summary, codec, metric)
            resampled = _resampled_curves(drawn.get(run_dir), in_run, codec, metric)
            if metric in scored:  # some images lack it: its bpp over the images it scored, as its values
                curve, *resampled = scored[metric]
                resampled = resampled or None
                scored_spans.setdefault(metric, {})[codec] = (float(curve.bpp.min()), float(curve.bpp.max()))
            for rate in rates:
                if (index := matched.get((codec, rate))) is not None:  # the setting rate-matched to it, as measured
                    own = settings[(settings.codec == codec) & (settings.setting_index == index)
                                   & (settings.metric == metric)]
                    value, low, high, why = (*own[["value", "low", "high", "interval_note"]].iloc[0],) if len(own) \
                        else (math.nan, math.nan, math.nan, "")
                    at_rates.append({"codec": codec, "metric": metric, "bpp": rate, "value": value, "low": low,
                                     "high": high, "interval_note": why})
                    continue
                value = curve.at_rate(rate)
                drawn_at_rate = [c.at_rate(rate) for c in resampled or []]
                low, high, why = _interval(value, drawn_at_rate, level, f"{rate:g} bpp lies beyond the codec's curve")
                low, high = bootstrap.within_bounds(metric, low, high)
                at_rates.append({"codec": codec, "metric": metric, "bpp": rate, "value": value, "low": low,
                                 "high": high, "interval_note": why or _not_resampled(resampled, run_dir, drawn,
                                                                                       value, metric)})
            anchor_curve = Curve.from_summary(summary, anchor, metric)
            if codec != anchor and len(anchor_curve) and len(curve):  # both measured this metric
                a_draws = _resampled_curves(drawn.get(anchor_run), anchor_in_run, anchor, metric) \
                    if anchor_run == run_dir else None  # the run's shared draw; another run's anchor: `pairs`
                a_curve, c_curve, c_draws = anchor_curve, curve, resampled
                # a metric without gaps, paired for another's alone: the run's own draw, as without any gaps
                pairing = pairs if pairs and (pair_all or metric in pairs[3]) else None
                n_paired = pairing[3].get(metric, pairing[0]) if pairing else None  # fewer for a metric with gaps
                paired_on = n_paired if pairing and metric in pairing[1] and metric in pairing[2] else None
                if paired_on:  # failed images, or the anchor in another run: both on the images both scored
                    a_curve, *a_draws = _curves(anchor, metric, *pairing[1][metric])
                    c_curve, *c_draws = _curves(codec, metric, *pairing[2][metric])
                    a_draws, c_draws = a_draws or None, c_draws or None
                unpairable = bool(pairing) and n_paired < 2  # no BD rather than one on different images
                result = _NO_BD if unpairable else compare_curves(a_curve, c_curve, bd_method)
                row = {"codec": codec, "metric": metric, **{k: result.get(k) for k in ("bd_rate", "bd_metric", "note")},
                       "fallback": "" if unpairable else _fallback_text(result, anchor, metric),
                       **{k: result.get(k, math.nan) for k in ("overlap", "rate_overlap", "metric_overlap")},
                       "reliable": not result["overlap"] < MIN_RELIABLE_OVERLAP,
                       "n_paired": n_paired if paired_on or unpairable else None}
                if pairing:
                    row["note"] = "; ".join(filter(None, [_pairing_note(n_paired, paired_on, metric,
                                                                        anchor_run != run_dir), row["note"]]))
                if c_draws and a_draws:
                    draws = [_compare_or_undefined(a, c, bd_method) for a, c in zip(a_draws, c_draws)]
                    whys = []
                    for key in ("bd_rate", "bd_metric"):
                        row[f"{key}_low"], row[f"{key}_high"], why = _interval(result[key], [d[key] for d in draws],
                                                                               level, "BD is undefined")
                        whys.append(why)
                    row["interval_note"] = next(filter(None, whys), "")
                elif resampled and not (math.isnan(result["bd_rate"]) and math.isnan(result["bd_metric"])):
                    row["interval_note"] = f"{anchor} is in a run of other images (resamples pair the same images)" \
                        if drawn.get(anchor_run) else f"{anchor} has no resamples (a published curve)"
                else:
                    row["interval_note"] = _not_resampled(resampled, run_dir, drawn, result["bd_rate"], metric)
                bd.append(row)
    notes = [f"Measured on {rest_on}."] if (rest_on := dataset_title(runs_only)) else []  # what the numbers rest on
    running = [why for why in map(unfinished, run_dirs) if why]  # a run whose values may still move
    notes += [f"Warning: {why}." for why in running]
    notes += [f"BD against {anchor} ({bd_method} interpolation, bjontegaard package); BD-rate in % "
             f"(negative: fewer bits for the same quality), BD-metric = codec - {anchor} at equal rate."]
    if resamples > 0:
        notes.append(f"Intervals: {level:.0%} bootstrap over images ({resamples} resamples, seed {seed}): BCa for "
                     "per-image means, bias-corrected percentile for set metrics (FID, KID, IS and those computed in "
                     "a feature space, such as FD-DINOv2 or classification agreement).")
    if len(refs):
        notes.append(f"Codecs marked{PUBLISHED} are published curves (" + "; ".join(
            f"{c}: {s}" for c, s in refs.groupby("codec", sort=False)["source"].first().items())
            + "): their values are as published, without intervals.")
    notes += [f"Warning: {w}." for w in ref_notes]
    if "n_samples" in summary:  # stochastic decoders decoded K times: say what the numbers average
        sampled = summary[summary.n_samples > 1].groupby("codec", sort=False).n_samples.max()
        notes += [f"{codec}: each value is the mean over {int(k)} decodes of every bitstream (decoder seeds seed.."
                  f"seed+{int(k) - 1}; set metrics the mean of the {int(k)} samples' sets); its intervals are over "
                  "images, and the spread over samples is the summary's <metric>_sample_std."
                  for codec, k in sampled.items()]
    if note := _rates_outside(summary, codecs, rates, matched, at_rates, scored_spans):
        notes.append(note)
    if matched:
        shown = summary.set_index(["codec", "setting_index"]).bpp
        notes.append("At a chosen rate a codec was rate-matched to, its values are that setting's own (every image's "
                     "bitstream within the matching tolerance of the rate): " + ", ".join(
                         f"{c} at {r:g} bpp ({shown[c, i]:.4g} measured)" for (c, r), i in matched.items()) + ".")
    notes += space_notes(runs_only, metrics)  # what the set metrics shown rest on (FID from few images is biased)
    notes += unmeasured(run_dirs, metrics)
    if counts:
        notes.append("(n/N): the codec's values rest on n of the dataset's N images (the fewest over its settings; "
                     "a setting shows its own), the others failed (the run's failure_reasons say why)"
                     + (" or are not done yet (a run not finished)" if running else "") + "; its means and "
                     "set metrics are over those n. Its BD numbers against an anchor of its run, or of another run of "
                     "the same images, compare both on the images both scored at every setting (the BD note says how "
                     "many); against a published anchor, each on its own images.")
    bd_columns = ["codec", "metric", "bd_rate", "bd_rate_low", "bd_rate_high", "bd_metric", "bd_metric_low",
                  "bd_metric_high", "overlap", "rate_overlap", "metric_overlap", "reliable", "note", "fallback",
                  "n_paired"]
    if any(d for r in bd for d in _daggers(r)):
        notes.append(f"† BD over less than {MIN_RELIABLE_OVERLAP:.0%} of the two curves' wider range along the axis "
                     "it averages over (the metric for BD-rate, log rate for BD-metric): it rests on their ends and is "
                     "not a headline number.")
    reasons = dict.fromkeys(_general(r) for r in [*(r["interval_note"] for r in at_rates + bd),
                                                   *settings.interval_note] if r)
    if reasons:  # the general form of each reason; the CSV's interval_note has each value's own
        notes.append(f"{NO_INTERVAL} No interval: " + "; ".join(reasons) + ".")
    at_rates, bd = pd.DataFrame(at_rates), pd.DataFrame(bd, columns=[*bd_columns, "interval_note"])
    for frame in (at_rates, bd):  # machine-readable counts beside the numbers (CSV)
        frame["n_images"] = [counts[c][0] if c in counts else n_dataset.get(where.loc[c, "run_dir"])
                             for c in frame.codec] if len(frame) else []
        frame["n_dataset"] = [n_dataset.get(where.loc[c, "run_dir"]) for c in frame.codec] if len(frame) else []
    if len(bd):  # a paired BD rests on the images both codecs scored
        bd["n_images"] = [int(p) if pd.notna(p) else n for p, n in zip(bd.n_paired, bd.n_images)]
    return Leaderboard(at_rates, bd, settings, anchor, metrics, list(rates), notes, counts, max(resamples, 0),
                       running)


def dataset_sizes(summary: pd.DataFrame) -> dict[str, int]:
    """run folder -> the number of images its dataset holds (published curves have none): the most any codec was
    asked for, counted in images (a samples=K codec has K rows per image)."""
    runs = summary[summary.run_dir.astype(bool)] if "run_dir" in summary else summary.iloc[:0]
    if "n_images" not in runs:
        return {}
    return {r: int(n) for r, n in images_of(runs, "n_images").groupby(runs.run_dir).max().items()}


def partial_counts(summary: pd.DataFrame, n_dataset: dict[str, int]) -> dict[str, tuple[int, int]]:
    """codec -> (the fewest images any of its settings rests on, the dataset's), where fewer than all."""
    out = {}
    for (codec, run_dir), rows in summary[summary.run_dir.astype(bool)].groupby(["codec", "run_dir"], sort=False):
        n, total = int(images_of(rows, "n_ok").min()), n_dataset.get(run_dir)
        if total and n < total:
            out[codec] = (n, total)
    return out


def _paired_curves(anchor_sets: dict, codec_sets: dict, anchor: str, codec: str, resamples: int, seed: int,
                   cache: dict) -> tuple[int, dict, dict, dict]:
    """(n, the anchor's curves, the codec's, n per metric where fewer) on the n images both scored at every setting
    (the settings of one run, or of two runs of the same images), as `bootstrap.codec_curves` gives them: row 0 on
    all n, then one row per resample, the same draw for both; a metric with per-image gaps (MS-SSIM on small
    images) on the images it has values for at every setting, its bpp too. The draw depends on the images alone,
    so the anchor's curves on a set of images are computed once (`cache`) for every codec paired on that set."""
    ids = bootstrap.shared_images([*(d for (c, _), d in anchor_sets.items() if c == anchor),
                                   *(d for (c, _), d in codec_sets.items() if c == codec)])
    if len(ids) < 2:
        return len(ids), {}, {}, {}
    key = (anchor, "\0".join(ids))
    positions = bootstrap.resample_positions(len(ids), resamples, bootstrap._rng(seed, anchor, "paired", key[1]))
    if key not in cache:
        cache[key] = bootstrap.codec_curves(anchor_sets, anchor, ids, positions)
    anchor_curves, codec_curves, fewer = dict(cache[key]), bootstrap.codec_curves(codec_sets, codec, ids, positions), {}
    def draw(metric: str, on: np.ndarray) -> np.ndarray:
        return bootstrap.resample_positions(len(on), resamples, bootstrap._rng(seed, anchor, "paired", metric,
                                                                                "\0".join(on)))

    scored = bootstrap.scored_curves([(anchor_sets, anchor), (codec_sets, codec)], ids, draw)
    for metric, (n, (on_anchor, on_codec)) in scored.items():  # on the images it scored, not those of all
        fewer[metric] = n
        anchor_curves.pop(metric, None)
        codec_curves.pop(metric, None)
        if on_anchor is not None and on_codec is not None:
            anchor_curves[metric], codec_curves[metric] = on_anchor, on_codec
    return len(ids), anchor_curves, codec_curves, fewer


def _scored_curves(sets: dict, codec_in_run: str, codec: str, resamples: int, seed: int) -> dict[str, list[Curve]]:
    """Per metric some of the codec's images have no value of (MS-SSIM under 161 px): its curve with the bpp over
    the images it scored at every setting, then one per resample of those images."""
    ids = bootstrap.shared_images(d for (c, _), d in sets.items() if c == codec_in_run)
    scored = bootstrap.scored_curves([(sets, codec_in_run)], ids, lambda metric, on: bootstrap.resample_positions(
        len(on), resamples, bootstrap._rng(seed, codec, "scored", metric)))
    return {metric: _curves(codec, metric, *found) for metric, (_, [found]) in scored.items() if found is not None}


def _curves(codec: str, metric: str, bpp: np.ndarray, value: np.ndarray) -> list[Curve]:
    """One curve per row of `bootstrap.codec_curves`' arrays: the point estimate, then each resample."""
    return [Curve.from_points(codec, metric, b, v) for b, v in zip(bpp, value)]


def _pairing_note(n: int, paired_on: int | None, metric: str, two_runs: bool = False) -> str:
    both = "both runs" if two_runs else "both"
    if n < 2:
        return f"no BD: the codec and the anchor share {n} image{'' if n == 1 else 's'} scored at every setting"
    if paired_on:
        return f"paired on the {n} images {both} scored at every setting"
    return f"not paired: {bootstrap.not_resampled(metric)}, so each codec on its own images"


_NO_BD = {"bd_rate": math.nan, "bd_metric": math.nan, "note": "", "overlap": math.nan}


def _compare_or_undefined(anchor: Curve, curve: Curve, bd_method: str) -> dict:
    """compare_curves, or undefined BD numbers for a degenerate resample (e.g. two settings at one rate)."""
    try:
        return compare_curves(anchor, curve, bd_method)
    except ValueError:
        return _NO_BD


def _resampled_curves(drawn, codec_in_run: str, codec: str, metric: str) -> list[Curve] | None:
    """The codec's curve in each resample of its run (None without resamples or values for the metric)."""
    if drawn is None:
        return None
    keys = sorted(k for k in drawn.values if k[0] == codec_in_run)
    if not keys or any(metric not in drawn.values[k] or "bpp" not in drawn.values[k] for k in keys):
        return None
    bpp = np.stack([drawn.values[k]["bpp"] for k in keys], 1)
    value = np.stack([drawn.values[k][metric] for k in keys], 1)
    return [Curve.from_points(codec, metric, bpp[b], value[b]) for b in range(drawn.resamples)]


def _general(reason: str) -> str:
    """A value's reason for having no interval, as the notes say it of every such value."""
    reason = re.sub(r"^[0-9.e+-]+ bpp lies", "the rate lies", reason)
    return re.sub(r" in \d+% of the resamples$", " in over a fifth of the resamples", reason)


def _not_resampled(resampled, run_dir: str, drawn: dict, value: float, metric: str) -> str:
    """A run's value whose metric the bootstrap does not recompute per resample (PRDC, patch FID) says so."""
    if resampled is not None or not drawn.get(run_dir) or math.isnan(value):
        return ""
    return bootstrap.not_resampled(metric)


def _setting_without_interval(drawn, key: tuple[str, int], metric: str, low: float) -> str:
    """Why a run's setting has no interval for a value it has ('' when it has one), read from the resamples
    `bootstrap.intervals` computes its intervals from."""
    if drawn is None or not np.isnan(low) or key not in drawn.settings:
        return ""
    if len(drawn.settings[key].image_ids) < 2:
        return "it rests on one image"
    values = drawn.values.get(key, {}).get(metric)
    if values is None:
        return bootstrap.not_resampled(metric)
    finite = values[np.isfinite(values)]
    if not len(finite):
        return "it is undefined in every resample"
    return "the same in every resample" if bootstrap.no_spread(finite) else ""


def _interval(point: float, resampled: list[float], level: float, undefined: str) -> tuple[float, float, str]:
    """Bias-corrected percentile interval of a curve quantity computed in each resample, and why there is none
    for a defined point ('' otherwise): the quantity is undefined in over a fifth of the resamples (`undefined`
    says how), or the same in all."""
    values = np.asarray(resampled, float)
    finite = values[np.isfinite(values)]
    if not len(values) or math.isnan(point):
        return float("nan"), float("nan"), ""
    if len(finite) < bootstrap.MIN_DEFINED_SHARE * len(values):
        return float("nan"), float("nan"), f"{undefined} in {1 - len(finite) / len(values):.0%} of the resamples"
    if bootstrap.no_spread(finite):
        return float("nan"), float("nan"), "the same in every resample"
    return (*bootstrap.bias_corrected_percentile(finite, point, level), "")


def _daggers(row: dict) -> tuple[str, str]:
    """'†' for a BD-rate and a BD-metric that exist but average over less than MIN_RELIABLE_OVERLAP of their axis:
    BD-rate along the metric, BD-metric along log rate (a BD-rate of curves whose rates never meet is sound)."""
    def mark(value, share) -> str:
        return "†" if pd.notna(value) and share < MIN_RELIABLE_OVERLAP else ""

    return mark(row["bd_rate"], row["metric_overlap"]), mark(row["bd_metric"], row["rate_overlap"])


def _fallback_text(result: dict, anchor: str, metric: str) -> str:
    parts = []
    for bpp, anchor_value, value in result.get("anchor_at_test_rate", [])[:3]:
        parts.append(f"at {bpp:.3g} bpp: {format_value(value, metric)} vs {anchor} {format_value(anchor_value, metric)}")
    for bpp, value, saving in result.get("rate_saving_at_equal_metric", [])[:3]:
        parts.append(f"{format_value(value, metric)} at {bpp:.3g} bpp: {abs(saving):.1%} "
                     f"{'fewer' if saving >= 0 else 'more'} bits than {anchor}")
    if not parts and (math.isnan(result.get("bd_rate", math.nan)) or math.isnan(result.get("bd_metric", math.nan))):
        parts.append(f"{anchor} reaches neither this codec's rates nor its {metric} values")
    return "; ".join(parts)


def _cell(value, low, high, metric) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return format_value(value, metric)
    return f"{format_value(value, metric)} [{format_value(low, metric)}, {format_value(high, metric)}]"


def _label(metric: str) -> str:
    info = METRICS.get(metric)
    if metric == "bpp":
        return "bpp"
    return (info.label if info else metric) + (" ↑" if info and info.higher_is_better else " ↓" if info else "")


def rate_matched(summary: pd.DataFrame, rates) -> dict[tuple[str, float], int]:
    """(codec, chosen rate) -> the index of its setting rate-matched to that rate with every image matched: that
    setting is measured at the rate (0.4995 bpp for 0.5 is within the tolerance), however its curve's ends fall."""
    if "rate_n_matched" not in summary:
        return {}
    done = summary[summary.rate_target_bpp.notna() & (summary.rate_n_matched == summary.n_ok) & (summary.n_ok > 0)]
    return {(c, r): int(i) for c, target, i in zip(done.codec, done.rate_target_bpp, done.setting_index)
            for r in rates if math.isclose(r, target, rel_tol=1e-9)}


def _rates_outside(summary: pd.DataFrame, codecs: list[str], rates, matched: dict, at_rates: list[dict],
                   scored_spans: dict) -> str:
    """What the at-rate table does with a chosen rate beyond a codec's measured rates (it never extrapolates):
    the cell is –, and a codec that reaches none of the rates, or a table that no codec reaches, is left out. A
    metric some images lack has its curve over the images it scored (`scored_spans`: its rates there)."""
    codecs = [c for c in codecs if summary.bpp[summary.codec == c].notna().any()]  # every row failed: no rates
    if not codecs:
        return ""
    spans = {c: (summary.bpp[summary.codec == c].min(), summary.bpp[summary.codec == c].max()) for c in codecs}
    outside = {c: [r for r in rates if not lo * (1 - 1e-9) <= r <= hi * (1 + 1e-9) and (c, r) not in matched]
               for c, (lo, hi) in spans.items()}
    beyond_scored = any(not lo * (1 - 1e-9) <= r <= hi * (1 + 1e-9) for by_codec in scored_spans.values()
                        for lo, hi in by_codec.values() for r in rates)
    if not rates or not any(outside.values()) and not beyond_scored:
        return ""
    measured = ", ".join(f"{c} {lo:.3g}–{hi:.3g}" for c, (lo, hi) in spans.items() if outside[c]) + " bpp"
    chosen = ", ".join(f"{r:g}" for r in rates) + " bpp"
    valued = {r["codec"] for r in at_rates if not math.isnan(r["value"])}
    missed = [c for c in codecs if len(outside[c]) == len(rates) and c not in valued]
    if len(missed) == len(codecs):
        return f"No codec reaches the chosen rates ({chosen}; measured: {measured}): no table of metrics at them."
    own = "; ".join(f"{metric} along its curve over the images it scored ("
                    + ", ".join(f"{c} {lo:.3g}–{hi:.3g}" for c, (lo, hi) in spans.items()) + " bpp there)"
                    for metric, spans in scored_spans.items())
    return ("Metrics at chosen rates: – where the rate lies outside the codec's measured rates"
            + (f" ({measured})" if any(outside.values()) else "") + ", never "
            "extrapolated" + (f"; {', '.join(missed)} reach{'es' if len(missed) == 1 else ''} none of {chosen} "
                              f"and {'is' if len(missed) == 1 else 'are'} left out of that table" if missed else "")
            + (f"; {own}" if own else "") + ".")


def wide_tables(board: Leaderboard, label=_label, cell=_cell) -> dict[str, pd.DataFrame]:
    """The three tables as display DataFrames (cells are text with intervals, or what `cell` makes of
    (value, low, high, metric)); `label` names the metric columns."""
    tables = {}
    at = board.at_rates.copy()
    if len(at) and at.value.notna().any():
        at["cell"] = [_marked(cell(v, lo, hi, m), why) for v, lo, hi, m, why in
                      zip(at.value, at.low, at.high, at.metric, at.interval_note)]
        at["column"] = [f"@ {b:g} bpp" for b in at.bpp]
        wide = at.pivot_table(index=["metric", "codec"], columns="column", values="cell", aggfunc="first")
        wide = wide.reindex(columns=[f"@ {b:g} bpp" for b in board.rates])
        wide = wide[wide.map(_has_value).any(axis=1)].reset_index()  # a codec with no value at any of the rates
        wide["order"] = [board.metrics.index(m) for m in wide.metric]
        wide = wide.sort_values(["order", "codec"], kind="stable").drop(columns="order")
        wide["metric"] = [label(m) for m in wide.metric]
        wide["codec"] = [board.shown(c) for c in wide.codec]
        tables["at_rates"] = wide.rename_axis(columns=None)
    else:
        tables["at_rates"] = pd.DataFrame()
    bd = board.bd.copy()
    if len(bd):
        rate_dagger, metric_dagger = zip(*(_daggers(r) for r in bd.to_dict("records")))
        bd["BD-rate (%)"] = [("–" if pd.isna(v) else f"{v:+.2f}" + ("" if pd.isna(lo) else f" [{lo:+.2f}, {hi:+.2f}]")
                              + d + (NO_INTERVAL if why and pd.isna(lo) else ""))
                             for v, lo, hi, d, why in zip(bd.bd_rate, bd.bd_rate_low, bd.bd_rate_high, rate_dagger,
                                                          bd.interval_note)]
        bd["BD-metric"] = [("–" if pd.isna(v) else f"{v + 0.0:+.4g}"  # + 0.0: a negative zero is '+0', not '-0'
                            + ("" if pd.isna(lo) else f" [{lo:+.4g}, {hi:+.4g}]")
                            + d + (NO_INTERVAL if why and pd.isna(lo) else ""))
                           for v, lo, hi, d, why in zip(bd.bd_metric, bd.bd_metric_low, bd.bd_metric_high,
                                                        metric_dagger, bd.interval_note)]
        bd["metric"] = [label(m) for m in bd.metric]
        bd["note"] = [" — ".join(filter(None, [n, f])) for n, f in zip(bd.note.fillna(""), bd.fallback.fillna(""))]
        bd["codec"] = [board.shown(c) for c in bd.codec]
        tables["bd"] = bd[["codec", "metric", "BD-rate (%)", "BD-metric", "note"]]
    else:
        tables["bd"] = pd.DataFrame()
    st = board.settings.copy()
    if len(st):
        st["cell"] = [_marked(cell(v, lo, hi, m), why) for v, lo, hi, m, why in
                      zip(st.value, st.low, st.high, st.metric, st.interval_note)]
        st["metric"] = [label(m) for m in st.metric]
        wide = st.pivot_table(index=["codec", "setting_index", "setting"], columns="metric", values="cell",
                              aggfunc="first").reset_index()
        cols = ["codec", "setting"] + [label(m) for m in ["bpp", *board.metrics] if label(m) in wide]
        tables["settings"] = wide.sort_values(["codec", "setting_index"])[cols].rename_axis(columns=None)
    else:
        tables["settings"] = pd.DataFrame()
    return tables


def _marked(cell, why: str):
    """A cell (text, or LaTeX's (value, low, high, metric) tuple) marked when its value has no interval."""
    if not why:
        return cell
    return (*cell, NO_INTERVAL) if isinstance(cell, tuple) else cell + NO_INTERVAL


def _has_value(cell) -> bool:
    if isinstance(cell, tuple):
        return not (cell[0] is None or (isinstance(cell[0], float) and math.isnan(cell[0])))
    return isinstance(cell, str) and cell != "–"


TITLES = {"at_rates": "Metrics at chosen rates (interpolated along each codec's curve; – outside its range)",
          "bd": "Bjontegaard deltas against the anchor",
          "settings": "Every setting, with bootstrap intervals"}


def titles(board: Leaderboard) -> dict[str, str]:
    """The tables' titles; without resamples (--bootstrap 0) none claims intervals."""
    return TITLES if board.resamples else {**TITLES, "settings": "Every setting"}


def render(board: Leaderboard, fmt: str, only: tuple = ("at_rates", "bd", "settings"), notes: bool = True) -> str:
    if fmt == "csv":  # machine-readable: long format with numbers, not formatted text
        parts = [board.at_rates.assign(table="at_rates"), board.bd.assign(table="bd"),
                 board.settings.assign(table="settings")]
        return pd.concat(parts, ignore_index=True).to_csv(index=False)
    if fmt == "tex":
        return render_tex(board, wide_tables(board, label=short_label, cell=lambda *a: a), titles(board), only, notes)
    tables = {k: v for k, v in wide_tables(board).items() if k in only}
    out = []
    for key, table in tables.items():
        if table.empty:
            continue
        title = titles(board)[key] + (f" ({board.anchor})" if key == "bd" else "")
        table = table.fillna("–")
        if fmt == "md":
            out.append(f"### {title}\n\n{table.to_markdown(index=False)}\n")
        elif fmt == "html":
            out.append(f"<h3>{_html_escape(title)}</h3>\n{table.to_html(index=False, classes='leaderboard', border=0)}")
        else:
            raise ValueError(f"Unknown format {fmt!r}: use one of {', '.join(FORMATS)}.")
    notes = board.notes if notes else []
    if not notes:
        return "\n".join(out)
    if fmt == "md":
        out.append("\n".join(f"- {n}" for n in notes) + "\n")
    elif fmt == "tex":
        out.append("\n".join(f"% {n}" for n in notes) + "\n")
    elif fmt == "html":
        out.append("<ul class='notes'>" + "".join(f"<li>{_html_escape(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(out)


TABLE_CSS = """body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1500px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0 1.2em; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: left; } th { background: #f4f4f4; }
td { font-variant-numeric: tabular-nums; } .notes { font-size: .85em; color: #444; }"""


def standalone_html(body: str, title: str) -> str:
    """A whole page around rendered tables: doctype, charset and table styling, so it opens as it should."""
    import html

    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>\n"
            f"<style>\n{TABLE_CSS}\n</style></head><body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def _html_escape(text: str) -> str:
    import html

    return html.escape(text)


def write(board: Leaderboard, out_dir: str | pathlib.Path, formats=FORMATS) -> list[pathlib.Path]:
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = out_dir / f"leaderboard.{fmt}"
        text = render(board, fmt)
        atomic_write_bytes(path, (standalone_html(text, "cmcbench leaderboard") if fmt == "html" else text).encode(),
                           durable=False)
        written.append(path)
    return written
