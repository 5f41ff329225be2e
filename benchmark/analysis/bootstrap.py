"""Bootstrap confidence intervals over images, for every metric of every setting.

A resample draws the setting's images with replacement; per-image metrics are averaged over it and the
set-level ones (FID, KID, IS) are recomputed from the stored features of exactly those images (the
originals' features paired with their reconstructions'; KID without the bias duplicates bring). Intervals
are BCa for per-image means and bias-corrected percentile intervals for set-level metrics (whose
resamples are biased by duplicates), so each contains its estimate. For a stochastic decoder's K samples,
each resample's set metrics are the mean of the K sample sets' on the same drawn images, as the summary's
are the mean over the K sets. Seeded: the same run, resample count
and seed always give the same intervals. Comparing two runs resamples the images they
share, the same draw for both, so the interval is that of the paired difference.

A run's settings are read without their features (a setting's Inception features at 30,000 images are about
370 MB); each setting reads its own when a computation needs them and drops them after, so memory holds one
or two settings' features however many settings a run has.
"""

from __future__ import annotations

import functools
import os
import pathlib
import warnings
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmark.run import feature_stage
from benchmark.run.console import bar
from benchmark.run.integrity import checksum_path, problem
from benchmark.run.record import read_record
from benchmark.run.results import load_summary, read_rows, read_summary, shard_files
from metrics import defaults, registry, spec
from metrics.fid import FIDReference

# Per-image columns whose mean over images is a reported metric (the registry's per-image metrics).
MEAN_METRICS = tuple(m.column for m in registry.METRICS.values() if m.per_image)
# What a setting's per-image values are read with: which image, codec, setting and sample, and whether it succeeded
SETTING_COLUMNS = ["codec", "setting_index", "setting_label", "image_id", "image_index", "sample", "status"]
# Recomputed from stored features in each resample: Inception's, and those of each feature space that declare
# `resample` (by the function the summary computes them with)
SET_METRICS = ("fid", "kid", "inception_score", *(m.column for m in registry.of_kind("set") if m.resample))
DEFAULT_RESAMPLES = defaults.BOOTSTRAP_RESAMPLES
DEFAULT_SEED = defaults.BOOTSTRAP_SEED
DEFAULT_LEVEL = defaults.BOOTSTRAP_LEVEL
# A curve quantity (a value at a rate, BD) gets an interval only where it is defined in at least this share of
# the resamples: fewer would make the interval that of the resamples that happened to reach it.
MIN_DEFINED_SHARE = 0.8


def no_spread(values: np.ndarray) -> bool:
    """Whether resampled values are all the same, up to the rounding of summing them in another order (a
    constant bpp resampled is 0.15 and 0.15 + 6e-17): such an interval would be a point, so there is none."""
    return bool(np.ptp(values) <= 1e-12 * np.max(np.abs(values)))


@dataclass
class SettingData:
    """What one (codec, setting) needs for any of its metrics on any subset of its images."""

    codec: str
    setting_index: int
    setting_label: str
    image_ids: np.ndarray  # sorted; rows with status ok only
    per_image: dict[str, np.ndarray] = field(default_factory=dict)
    pool: np.ndarray | None = None  # reconstructions' Inception pool features, aligned with image_ids
    logits: np.ndarray | None = None
    ref_pool: np.ndarray | None = None  # the originals' features, aligned with image_ids
    options: dict = field(default_factory=dict)
    # per feature space (DINOv2, CLIP, ...): (reconstructions' features, their originals', aligned with image_ids;
    # the options its metrics take)
    spaces: dict[str, tuple[np.ndarray, np.ndarray, dict]] = field(default_factory=dict)
    # A stochastic decoder's K samples: each sample's set (its features only); set metrics are their mean
    sample_sets: list["SettingData"] = field(default_factory=list)
    _kernels: tuple | None = field(default=None, repr=False)
    # Reads the stored features into this setting (its feature spaces limited to `wanted`, None for all) when a
    # computation needs them; None where they were given (an in-memory set, a subset).
    reader: Callable[["SettingData"], None] | None = field(default=None, repr=False)
    wanted: frozenset[str] | None = None  # "inception" and feature space names
    _holds: int = field(default=0, init=False, repr=False)

    @contextmanager
    def held(self):
        """This setting's features (and its samples') in memory for the block: read from the run on entry
        where they were not, dropped on leaving the outermost block that read them."""
        if self.reader is not None and not self._holds:
            self.reader(self)
        self._holds += 1
        try:
            with _all_held(self.sample_sets):
                yield self
        finally:
            self._holds -= 1
            if self.reader is not None and not self._holds:
                self.pool = self.logits = self.ref_pool = self._kernels = None
                self.spaces = {}

    def subset(self, ids: np.ndarray) -> "SettingData":
        """The setting on `ids` alone, its features copied into memory (it reads nothing later)."""
        pos = np.searchsorted(self.image_ids, ids)
        take = (lambda a: None if a is None else a[pos])  # noqa: E731
        with self.held():
            return SettingData(self.codec, self.setting_index, self.setting_label, self.image_ids[pos],
                               {k: v[pos] for k, v in self.per_image.items()}, take(self.pool), take(self.logits),
                               take(self.ref_pool), self.options,
                               {k: (f[pos], r[pos], o) for k, (f, r, o) in self.spaces.items()},
                               [d.subset(ids) for d in self.sample_sets])

    def metric_names(self) -> list[str]:
        names = [m for m in MEAN_METRICS if m in self.per_image and not np.all(np.isnan(self.per_image[m]))]
        sets = self.sample_sets or [self]
        with self.held():
            return names + [m for m in sets[0]._set_names() if all(m in d._set_names() for d in sets[1:])]

    def _set_names(self) -> list[str]:
        names = []
        if self.pool is not None and len(self.pool) >= 2:
            names += ["fid", "kid"]
            if len(self.pool) >= self.options.get("isc_splits", defaults.ISC_SPLITS):
                names.append("inception_score")
        for space, (features, *_) in self.spaces.items():
            if len(features) >= 2:
                names += [m.column for m in registry.in_space(space) if m.resample]
        return names

    def kernels(self):
        """KID's Gram matrices of this setting, computed once for all its resamples."""
        if self._kernels is None:
            from metrics.kid import kernels

            self._kernels = kernels(self.pool, self.ref_pool)
        return self._kernels

    def evaluate_counts(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Each metric on each resample given as counts (B x n: how often each of this setting's images is
        drawn), so resamples of a run's images can hold this setting's images a varying number of times."""
        with self.held():
            return self._evaluate_counts(np.asarray(counts))

    def _evaluate_counts(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        w = counts.astype(np.float64)
        out = {}
        for name in self.metric_names():
            if name in self.per_image:
                values = registry.capped(name, self.per_image[name])
                ok = ~np.isnan(values)
                total = w[:, ok].sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[name] = np.where(total > 0, w[:, ok] @ values[ok] / total, np.nan)
        draws = [np.repeat(np.arange(counts.shape[1]), c) for c in counts]
        return {**out, **self._over_samples(lambda d: d._set_metrics(draws, counts))}

    def _over_samples(self, evaluate) -> dict[str, np.ndarray]:
        """Set metrics of this set, or of a stochastic decoder's K sample sets their mean (as the summary
        reports it), each sample's set drawn on the same resampled images."""
        if not self.sample_sets:
            return evaluate(self)
        each = [evaluate(d) for d in self.sample_sets]
        return {m: np.mean([e[m] for e in each], axis=0) for m in self.metric_names() if m in each[0]}

    def _set_metrics(self, draws: list[np.ndarray], counts: np.ndarray) -> dict[str, np.ndarray]:
        """Set metrics on each resample, given both as its drawn positions (FID, IS: IS depends on their order)
        and as counts per image (KID's weighted MMD^2); NaN where a resample holds too few images."""
        from metrics.fid import fid
        from metrics.inception_score import inception_score
        out = {}
        names = self._set_names()
        if "fid" in names:
            out["fid"] = np.array([fid(self.pool[p], self.ref_pool[p]) if len(p) >= 2 else np.nan for p in draws])
            out["kid"] = self._kid(counts)
            if "inception_score" in names:
                splits = self.options.get("isc_splits", defaults.ISC_SPLITS)
                out["inception_score"] = np.array([
                    inception_score(self.logits[p], splits, self.options.get("seed", defaults.SEED))[0] if len(p) >= splits
                    else np.nan for p in draws])
        for space, (features, reference, options) in self.spaces.items():
            resampled = [m for m in registry.in_space(space) if m.column in names]
            for target in dict.fromkeys(m.fn for m in resampled):  # the summary's function, once per resample
                metrics = [m for m in resampled if m.fn == target]
                each = [feature_stage.columns_of(metrics, spec.resolve(target)(
                    features[p], FIDReference(reference[p]), options))[0] if len(p) >= 2 else {} for p in draws]
                out.update({m.column: np.array([e.get(m.column, np.nan) for e in each], np.float64) for m in metrics})
        return out

    def _kid(self, counts: np.ndarray) -> np.ndarray:
        """KID of each resample: from the Gram matrices computed once where they fit in `GRAM_MAX_ENTRIES`, else
        from blocks of them (memory bounded at any number of images); NaN where a resample holds too few."""
        from metrics.kid import GRAM_MAX_ENTRIES, mmd2_weighted, mmd2_weighted_blocked

        enough = counts.sum(axis=1) >= 2
        if 3 * len(self.pool) ** 2 <= GRAM_MAX_ENTRIES:
            k = self.kernels()
            return np.array([mmd2_weighted(*k, c) if ok else np.nan for c, ok in zip(counts, enough)])
        return np.where(enough, mmd2_weighted_blocked(self.pool, self.ref_pool, counts), np.nan)

    def evaluate(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """Each metric on each resample; `positions` is B x n indices into this setting's images.

        FID is the summary's own function; KID is the duplicate-aware unbiased MMD^2 over the whole resample
        (from Gram matrices computed once); IS is recomputed from the resampled logits."""
        with self.held():
            return self._evaluate(positions)

    def _evaluate(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for name in self.metric_names():
            if name in self.per_image:
                with warnings.catch_warnings():  # a resample of none of the images a metric scored: NaN, undefined
                    warnings.simplefilter("ignore", RuntimeWarning)
                    out[name] = np.nanmean(registry.capped(name, self.per_image[name])[positions], axis=1)
        n = len(self.image_ids)
        counts = np.array([np.bincount(p, minlength=n) for p in positions], int).reshape(len(positions), n)
        return {**out, **self._over_samples(lambda d: d._set_metrics(list(positions), counts))}


@contextmanager
def _all_held(sets: list[SettingData]):
    """Each of `sets` held for the block (a stochastic decoder's sample sets are read together)."""
    if not sets:
        yield
        return
    with sets[0].held(), _all_held(sets[1:]):
        yield


def load_settings(run_dir: str | pathlib.Path, features: bool = True) -> dict[tuple[str, str], SettingData]:
    """Every (codec, setting label) of a run, with its per-image metrics and (unless `features` is false, for
    readers of per-image values alone) a reader of its stored features: they are read when a computation
    needs them (`SettingData.held`), one setting at a time, never all of a run's at once."""
    from benchmark.run import feature_store, perceptual

    run_dir = pathlib.Path(run_dir)
    record = read_record(run_dir)
    images = read_rows(run_dir, columns=SETTING_COLUMNS + list(MEAN_METRICS))
    out = {}
    if not len(images):
        return out
    ok = images[images.status == "ok"]
    inception_ok = features and record.inception.get("status") == "ok"
    spaces = feature_stage.active(record) if features else []
    shas = feature_store.image_shas(run_dir) if inception_ok or spaces else {}
    readers = {**({"inception": perceptual.InceptionSets(run_dir, record, patches=False)} if inception_ok else {}),
               **{space.name: feature_stage.SpaceSets(run_dir, record, space) for space in spaces}}
    opts = record.config.get("inception", {})
    # The originals' features of the last image list read, per space: settings of the same images (and a
    # stochastic decoder's sample sets) share one copy, and at most one copy per space stays in memory.
    references: dict = {}

    def attach(data: SettingData, rows: pd.DataFrame, codec: str, s: int, sample: int) -> None:
        """The stored features of one setting's (one sample's) reconstructions and their originals."""
        wanted = (lambda space: data.wanted is None or space in data.wanted)  # noqa: E731
        found = [(name, sets.features(codec, s, sample)) for name, sets in readers.items() if wanted(name)]
        for space, stored in found:
            aligned = _aligned(stored[0], rows, data.image_ids) if stored is not None else None
            if aligned is None:
                continue
            key = tuple(aligned[1])
            if references.get(space, (None,))[0] != key:
                references[space] = (key, readers[space].originals(shas, aligned[1]))
            reference = references[space][1]
            if space == "inception":
                data.pool, data.logits, data.ref_pool = stored[1].pool[aligned[0]], stored[1].logits[aligned[0]], \
                    reference
            else:
                data.spaces[space] = (stored[1][aligned[0]], reference, readers[space].options())

    for (codec, s), rows in ok.groupby(["codec", "setting_index"], sort=True):
        samples = sorted(rows["sample"].dropna().astype(int).unique()) if "sample" in rows else []
        if samples:  # K decodes per bitstream: an image's value is its mean over its samples
            numeric = [m for m in MEAN_METRICS if m in rows]
            first = rows.groupby("image_id", as_index=False).first()
            rows = first.drop(columns=numeric).merge(
                rows.groupby("image_id", as_index=False)[numeric].mean(), on="image_id")
        rows = rows.sort_values("image_id")
        data = SettingData(codec, int(s), str(rows.setting_label.iloc[0]), rows.image_id.to_numpy(str),
                           {m: rows[m].to_numpy(float) for m in MEAN_METRICS if m in rows}, options=opts)
        reader = (lambda k: functools.partial(attach, rows=rows, codec=codec, s=int(s), sample=k)
                  if inception_ok or spaces else None)
        if samples:  # set metrics per sample's set, as the summary computes them, then their mean
            data.sample_sets = [SettingData(codec, int(s), data.setting_label, data.image_ids, options=opts,
                                            reader=reader(k)) for k in samples]
        else:
            data.reader = reader(0)
        out[(codec, data.setting_label)] = data
    return out


def _aligned(stored_indices: np.ndarray, rows: pd.DataFrame, image_ids: np.ndarray):
    """(positions in the stored features, image indices) of each of `image_ids`, or None if any is missing."""
    index_to_id = dict(zip(rows.image_index, rows.image_id))
    by_id = {index_to_id[i]: k for k, i in enumerate(stored_indices) if i in index_to_id}
    if set(by_id) != set(image_ids):
        return None
    id_to_index = {v: k for k, v in index_to_id.items()}
    return [by_id[i] for i in image_ids], [id_to_index[i] for i in image_ids]


def shared_images(settings) -> np.ndarray:
    """The image ids every one of `settings` scored (sorted): what a paired comparison of them rests on."""
    ids = None
    for d in settings:
        ids = d.image_ids if ids is None else np.intersect1d(ids, d.image_ids)
    return np.array([], str) if ids is None else ids


def codec_curves(sets: dict, codec: str, ids: np.ndarray, positions: np.ndarray) -> dict:
    """{metric: (bpp B+1 x S, value B+1 x S)} of one codec's settings in `sets` on the images `ids` alone: row 0
    on all of them, then each resample (`positions`, B x len(ids)); the metrics every setting has."""
    settings = sorted((d for (c, _), d in sets.items() if c == codec), key=lambda d: d.setting_index)
    both = np.concatenate([np.arange(len(ids))[None], positions])  # row 0: all shared images
    evaluated = [d.subset(ids).evaluate(both) for d in settings]  # one subset each: its Gram matrices once
    out = {}
    for metric in set.intersection(*(set(e) for e in evaluated)) - {"bpp"}:
        out[metric] = (np.stack([e["bpp"] for e in evaluated], 1), np.stack([e[metric] for e in evaluated], 1))
    return out


def scored_curves(sides: list[tuple[dict, str]], ids: np.ndarray,
                  draw: Callable[[str, np.ndarray], np.ndarray]) -> dict[str, tuple[int, list]]:
    """Per-image metrics that some of `ids` have no value of at some setting of `sides` ((settings, codec) pairs:
    the curves to compare; MS-SSIM on images under its 161 px), each with how many images every setting scored it
    on and each side's `codec_curves` (bpp, value) of it on those images alone, resampled by `draw(metric, those
    ids)` (None for a side, under two images): a curve of such a metric takes its bpp over the same images as its
    values, or it pairs the rate of all images with the quality of some."""
    mine = [d for sets, codec in sides for (c, _), d in sets.items() if c == codec]
    out = {}
    for metric, scored in _scored_images(mine, ids).items():
        positions = draw(metric, scored)
        out[metric] = (len(scored), [_metric_curve(sets, codec, metric, scored, positions) if len(scored) >= 2
                                     else None for sets, codec in sides])
    return out


def _scored_images(settings: list[SettingData], ids: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image metrics some of `ids` have no value of in one of `settings`, each with the ids every setting scored
    it on."""
    out = {}
    for metric in {m for d in settings for m in d.per_image} - {"bpp"}:
        keep = np.ones(len(ids), bool)
        for d in settings:
            if metric in d.per_image:
                keep &= ~np.isnan(d.per_image[metric][np.searchsorted(d.image_ids, ids)])
        if not keep.all():
            out[metric] = ids[keep]
    return out


def _metric_curve(sets: dict, codec: str, metric: str, ids: np.ndarray, positions: np.ndarray) -> tuple | None:
    """`codec_curves`' (bpp, value) of one per-image metric on `ids` alone (reading no features); None where a
    setting has no value of it."""
    settings = sorted((d for (c, _), d in sets.items() if c == codec), key=lambda d: d.setting_index)
    if any(metric not in d.per_image for d in settings):
        return None
    narrow = {(codec, d.setting_index): SettingData(codec, d.setting_index, d.setting_label, d.image_ids,
                                                    {k: d.per_image[k] for k in ("bpp", metric)}) for d in settings}
    return codec_curves(narrow, codec, ids, positions).get(metric)


def _rng(seed: int, *key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32("|".join(key).encode())])


def resample_positions(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n, size=(resamples, n))


@dataclass
class RunResamples:
    """One seeded draw of a run's images, shared by every codec and setting of the run: each setting's
    metrics on all its images (`points`) and on each resample (`values`, B per metric). Curves, values at a
    rate and BD numbers computed resample by resample from these get honest intervals."""

    settings: dict[tuple[str, int], "SettingData"]
    points: dict[tuple[str, int], dict[str, float]]
    values: dict[tuple[str, int], dict[str, np.ndarray]]
    resamples: int


_RESAMPLES_CACHE: dict = {}


def run_resamples(run_dir: str | pathlib.Path, resamples: int = DEFAULT_RESAMPLES,
                  seed: int = DEFAULT_SEED) -> RunResamples:
    run_dir = pathlib.Path(run_dir)
    summary = run_dir / "summary.parquet"
    key = (str(run_dir.resolve()), resamples, seed, summary.stat().st_mtime if summary.exists() else 0)
    if key in _RESAMPLES_CACHE:
        return _RESAMPLES_CACHE[key]
    settings = {(d.codec, d.setting_index): d for d in load_settings(run_dir).values()}
    ids = np.unique(np.concatenate([d.image_ids for d in settings.values()])) if settings else np.array([])
    rng = _rng(seed, "run")
    draws = rng.integers(0, max(len(ids), 1), size=(resamples, len(ids)))
    counts = np.stack([np.bincount(d, minlength=len(ids)) for d in draws]) if resamples else np.zeros((0, len(ids)))
    points, values = {}, {}
    for key_, data in bar(settings.items(), total=len(settings), desc=f"bootstrap ({resamples} resamples)",
                          unit="settings"):
        local = np.searchsorted(ids, data.image_ids)
        with data.held():  # its features read once for both, dropped before the next setting's
            points[key_] = {m: float(v[0]) for m, v in data.evaluate_counts(np.ones((1, len(local)), int)).items()}
            values[key_] = data.evaluate_counts(counts[:, local]) if resamples else {}
    result = RunResamples(settings, points, values, resamples)
    _RESAMPLES_CACHE.clear()
    _RESAMPLES_CACHE[key] = result
    return result


def bca_interval(resampled: np.ndarray, point: float, jackknife: np.ndarray, level: float) -> tuple[float, float]:
    """Efron's bias-corrected and accelerated interval from the resampled statistic, its value on the sample
    and its leave-one-out values (the same arithmetic as scipy.stats.bootstrap's BCa)."""
    from scipy.special import ndtr, ndtri

    resampled = np.asarray(resampled, np.float64)
    below = ((resampled < point).sum() + (resampled <= point).sum()) / (2 * len(resampled))
    z0 = ndtri(below)
    d = jackknife.mean() - jackknife
    den = 6 * ((d ** 2).sum()) ** 1.5
    a = (d ** 3).sum() / den if den > 0 else 0.0
    z = ndtri(np.array([(1 - level) / 2, (1 + level) / 2]))
    adjusted = ndtr(z0 + (z0 + z) / (1 - a * (z0 + z)))
    if not np.all(np.isfinite(adjusted)):  # every resample on one side: no correction can be estimated
        adjusted = np.array([(1 - level) / 2, (1 + level) / 2])
    low, high = np.percentile(resampled, 100 * adjusted)
    return float(low), float(high)


def bias_corrected_percentile(resampled: np.ndarray, point: float, level: float) -> tuple[float, float]:
    """A percentile interval of the resampled statistic shifted by its resampling bias (mean - point).

    Set-level metrics (FID, IS, KID) are biased by the duplicates a resample holds (FID rises as the
    effective sample shrinks): on 100 images every resample's FID can exceed the sample's, so a plain
    percentile interval would not contain its own estimate and BCa's bias correction is undefined."""
    resampled = np.asarray(resampled, np.float64)
    shifted = resampled - (resampled.mean() - point)
    low, high = np.quantile(shifted, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def metric_interval(data: "SettingData", metric: str, resampled: np.ndarray, point: float, level: float):
    """BCa for per-image means (jackknife of the mean, exact), the bias-corrected percentile for set metrics; within
    the values the metric can take (a share's shifted interval must not end above 1)."""
    return within_bounds(metric, *_metric_interval(data, metric, resampled, point, level))


def within_bounds(metric: str, low: float, high: float) -> tuple[float, float]:
    """An interval clipped to the values `metric` can take (its registry `bounds`, if it declares them)."""
    bounds = registry.METRICS[metric].bounds if metric in registry.METRICS else None
    return (low, high) if bounds is None else (float(np.clip(low, *bounds)), float(np.clip(high, *bounds)))


def _metric_interval(data: "SettingData", metric: str, resampled: np.ndarray, point: float, level: float):
    if metric in data.per_image:
        values = registry.capped(metric, data.per_image[metric])
        values = values[~np.isnan(values)]
        if len(values) < 2:
            return float("nan"), float("nan")
        jackknife = (values.sum() - values) / (len(values) - 1)
        return bca_interval(resampled, point, jackknife, level)
    return bias_corrected_percentile(resampled, point, level)


def intervals(run_dir: str | pathlib.Path, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
              level: float = DEFAULT_LEVEL, use_cache: bool = True) -> pd.DataFrame:
    """Long table: codec, setting_index, setting_label, metric, low, high, std, resamples, level, seed.

    Intervals are BCa for per-image means and bias-corrected percentile intervals for set-level metrics, so
    each contains its point estimate (the summary's value for the same images).

    Cached outside the run, which a reader leaves as it found it (it may be read-only, archived or shared): in
    the user's cache folder, keyed by the run's checked summary and by resamples, seed and level.
    """
    run_dir = pathlib.Path(run_dir)
    cache = cache_path(run_dir, f"n{resamples}-seed{seed}-level{level:g}") if use_cache else None
    if cache is not None and problem(cache, strict=True) is None:
        shard_files(run_dir)  # the run's shards and summary still pass their checks (a damaged one is named)
        read_summary(run_dir)
        return pd.read_parquet(cache)
    summary_rows = load_summary(run_dir)
    rows = []
    reported = summary_rows.set_index(["codec", "setting_index"]) if len(summary_rows) else None
    drawn = run_resamples(run_dir, resamples, seed)
    for (codec, s), data in drawn.settings.items():
        label, n = data.setting_label, len(data.image_ids)
        if n < 2:
            continue
        for metric, values in drawn.values[(codec, s)].items():
            values = values[np.isfinite(values)]
            point = drawn.points[(codec, s)][metric]
            if metric in SET_METRICS and reported is not None and metric in reported:
                # The summary's own value is the estimate (KID over subsets, IS over its splits' order).
                point = float(reported.loc[(codec, data.setting_index), metric])
            if not len(values) or not np.isfinite(point):
                continue
            if no_spread(values):
                continue  # identical resamples (one image's value, or a constant metric): no spread to report
            low, high = metric_interval(data, metric, values, point, level)
            rows.append({"codec": codec, "setting_index": data.setting_index, "setting_label": label,
                         "metric": metric, "low": float(low), "high": float(high), "std": float(np.std(values)),
                         "n_images": n, "resamples": resamples, "level": level, "seed": seed})
    table = pd.DataFrame(rows, columns=["codec", "setting_index", "setting_label", "metric", "low", "high", "std",
                                        "n_images", "resamples", "level", "seed"])
    if cache is not None:
        import pyarrow as pa

        from benchmark.run.results import write_table

        try:
            write_table(cache, pa.Table.from_pandas(table, preserve_index=False))
        except OSError:
            pass  # a cache that cannot be written is only a slower next time
    return table


def summary_checksum(run_dir: pathlib.Path) -> str | None:
    """The recorded sha256 of a run's summary: what a cache of numbers read from the run is keyed by, so a
    rewritten summary is never served stale numbers; None for a run without one (older, or unfinished)."""
    try:
        return checksum_path(pathlib.Path(run_dir) / "summary.parquet").read_text().split()[0]
    except (FileNotFoundError, IndexError):
        return None


def cache_folder(kind: str) -> pathlib.Path:
    """The user's cache folder for `kind` (XDG_CACHE_HOME, else ~/.cache): never inside a run."""
    home = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
    return home / "cmcbench" / kind


def cache_path(run_dir: pathlib.Path, options: str) -> pathlib.Path | None:
    """Where a run's intervals are cached, named by the checksum of the run's summary and by the code that
    computes them: after an upgrade that changes an interval, a run's cached intervals are computed again."""
    checksum = summary_checksum(run_dir)
    if checksum is None:
        return None
    return cache_folder("bootstrap") / f"ci-{checksum[:24]}-{options}-{code_key()}.parquet"


@functools.lru_cache(maxsize=1)
def code_key() -> str:
    """A digest of the code a cached interval comes from: this module, the metric files whose functions it calls on
    each resample (FID, KID, IS, and each resampled set metric's), and what the registry declares about resampling
    each metric. A fix to a metric's function recomputes the intervals cached before it."""
    import hashlib
    import importlib.util

    declared = repr(sorted((m.column, m.kind, m.resample, m.bounds, m.cap) for m in registry.METRICS.values()))
    modules = sorted({"metrics.fid", "metrics.kid", "metrics.inception_score",
                      *(m.fn.partition(":")[0] for m in registry.METRICS.values() if m.resample and m.fn)})
    sources = [pathlib.Path(importlib.util.find_spec(name).origin).read_bytes() for name in modules]
    return hashlib.sha256(b"".join([pathlib.Path(__file__).read_bytes(), *sources, declared.encode()])).hexdigest()[:12]


def not_resampled(metric: str) -> str:
    """Why a set metric's value has no interval: the bootstrap recomputes only `SET_METRICS` per resample."""
    info = registry.METRICS.get(metric)
    return f"the bootstrap does not recompute {info.label if info else metric} per resample"


def paired_difference(base: SettingData, new: SettingData, resamples: int = DEFAULT_RESAMPLES,
                      seed: int = DEFAULT_SEED, level: float = DEFAULT_LEVEL) -> dict[str, dict]:
    """new - base for each metric both have, on their shared images, with a paired bootstrap interval."""
    shared = np.intersect1d(base.image_ids, new.image_ids)
    out: dict[str, dict] = {}
    if len(shared) < 2:
        return out
    b, n = base.subset(shared), new.subset(shared)
    ident = np.arange(len(shared))[None]
    b0, n0 = b.evaluate(ident), n.evaluate(ident)
    positions = resample_positions(len(shared), resamples, _rng(seed, base.codec, base.setting_label, "paired"))
    bb, nb = b.evaluate(positions), n.evaluate(positions)
    alpha = (1 - level) / 2
    for metric in b0:
        if metric not in n0:
            continue
        diff = nb[metric] - bb[metric]
        diff = diff[np.isfinite(diff)]
        low, high = (np.quantile(diff, [alpha, 1 - alpha]) if len(diff) else (np.nan, np.nan))
        out[metric] = {"base": float(b0[metric][0]), "new": float(n0[metric][0]),
                       "change": float(n0[metric][0] - b0[metric][0]), "low": float(low), "high": float(high),
                       "n_images": len(shared)}
    return out

