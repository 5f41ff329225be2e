"""Bootstrap confidence intervals over images, for every metric of every setting.

A resample draws the setting's images with replacement; per-image metrics are averaged over it and the
set-level ones (FID, KID, IS) are recomputed from the stored features of exactly those images (the
originals' features paired with their reconstructions'). Percentile intervals, seeded: the same run,
resample count and seed always give the same intervals. Comparing two runs resamples the images they
share, the same draw for both, so the interval is that of the paired difference.
"""

from __future__ import annotations

import pathlib
import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmark.results import load_run, read_config
from metrics import registry

# Per-image columns whose mean over images is a reported metric (the registry's per-image metrics).
MEAN_METRICS = tuple(m.column for m in registry.METRICS.values() if m.per_image)
DEFAULT_RESAMPLES = 200
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95


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

    def subset(self, ids: np.ndarray) -> "SettingData":
        pos = np.searchsorted(self.image_ids, ids)
        take = (lambda a: None if a is None else a[pos])  # noqa: E731
        return SettingData(self.codec, self.setting_index, self.setting_label, self.image_ids[pos],
                           {k: v[pos] for k, v in self.per_image.items()}, take(self.pool), take(self.logits),
                           take(self.ref_pool), self.options)

    def metric_names(self) -> list[str]:
        names = [m for m in MEAN_METRICS if m in self.per_image and not np.all(np.isnan(self.per_image[m]))]
        if self.pool is not None and len(self.pool) >= 2:
            names += ["fid", "kid"]
            if len(self.pool) >= self.options.get("isc_splits", 10):
                names.append("inception_score")
        return names

    def evaluate(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """Each metric on each resample; `positions` is B x n indices into this setting's images."""
        from metrics.fid import fid_low_rank
        from metrics.inception_score import inception_score
        from metrics.kid import kid

        out = {}
        for name in self.metric_names():
            if name in self.per_image:
                out[name] = np.nanmean(self.per_image[name][positions], axis=1)
        if self.pool is not None and "fid" in self.metric_names():
            opts = self.options
            out["fid"] = np.array([fid_low_rank(self.pool[p], self.ref_pool[p]) for p in positions])
            out["kid"] = np.array([kid(self.pool[p], self.ref_pool[p], opts.get("kid_subsets", 100),
                                       opts.get("kid_subset_size", 1000), opts.get("seed", 2020))[0]
                                   for p in positions])
            if "inception_score" in self.metric_names():
                out["inception_score"] = np.array([
                    inception_score(self.logits[p], opts.get("isc_splits", 10), opts.get("seed", 2020))[0]
                    for p in positions])
        return out


def load_settings(run_dir: str | pathlib.Path) -> dict[tuple[str, str], SettingData]:
    """Every (codec, setting label) of a run, with its per-image metrics and features."""
    from benchmark import perceptual

    run_dir = pathlib.Path(run_dir)
    info = read_config(run_dir)
    images, _ = load_run(run_dir)
    out = {}
    if not len(images):
        return out
    ok = images[images.status == "ok"]
    inception_ok = info.get("inception", {}).get("status") == "ok"
    shas = perceptual.image_shas(run_dir) if inception_ok else {}
    opts = info["config"].get("inception", {})
    for (codec, s), rows in ok.groupby(["codec", "setting_index"], sort=True):
        rows = rows.sort_values("image_id")
        data = SettingData(codec, int(s), str(rows.setting_label.iloc[0]), rows.image_id.to_numpy(str),
                           {m: rows[m].to_numpy(float) for m in MEAN_METRICS if m in rows}, options=opts)
        if inception_ok:
            found = perceptual.setting_features(run_dir, codec, int(s))
            if found is not None:
                index_to_id = dict(zip(rows.image_index, rows.image_id))
                idx, pool, logits = found
                keep = [k for k, i in enumerate(idx) if i in index_to_id]
                by_id = {index_to_id[idx[k]]: k for k in keep}
                if set(by_id) == set(data.image_ids):
                    order = [by_id[i] for i in data.image_ids]
                    data.pool, data.logits = pool[order], logits[order]
                    id_to_index = {v: k for k, v in index_to_id.items()}
                    data.ref_pool = perceptual.reference_features(info, shas, [id_to_index[i] for i in data.image_ids])
        out[(codec, data.setting_label)] = data
    return out


def _rng(seed: int, *key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32("|".join(key).encode())])


def resample_positions(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n, size=(resamples, n))


def intervals(run_dir: str | pathlib.Path, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
              level: float = DEFAULT_LEVEL, use_cache: bool = True) -> pd.DataFrame:
    """Long table: codec, setting_index, setting_label, metric, low, high, std, resamples, level, seed.

    Cached in RUN/bootstrap/ (keyed by resamples, seed and level, invalidated when the summary changes).
    """
    run_dir = pathlib.Path(run_dir)
    key = f"ci-n{resamples}-seed{seed}-level{level:g}.parquet"
    cache = run_dir / "bootstrap" / key
    summary = run_dir / "summary.parquet"
    if use_cache and cache.exists() and summary.exists() and cache.stat().st_mtime >= summary.stat().st_mtime:
        return pd.read_parquet(cache)
    rows = []
    alpha = (1 - level) / 2
    for (codec, label), data in load_settings(run_dir).items():
        n = len(data.image_ids)
        if n < 2:
            continue
        positions = resample_positions(n, resamples, _rng(seed, codec, label))
        for metric, values in data.evaluate(positions).items():
            values = values[np.isfinite(values)]
            if not len(values):
                continue
            low, high = np.quantile(values, [alpha, 1 - alpha])
            rows.append({"codec": codec, "setting_index": data.setting_index, "setting_label": label,
                         "metric": metric, "low": float(low), "high": float(high), "std": float(np.std(values)),
                         "n_images": n, "resamples": resamples, "level": level, "seed": seed})
    table = pd.DataFrame(rows, columns=["codec", "setting_index", "setting_label", "metric", "low", "high", "std",
                                        "n_images", "resamples", "level", "seed"])
    if use_cache and summary.exists():
        from benchmark.results import write_table
        import pyarrow as pa

        write_table(cache, pa.Table.from_pandas(table, preserve_index=False))
    return table


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

