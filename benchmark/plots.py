"""Rate-distortion curves: every summary metric against bpp, one line per codec, markers at settings."""

from __future__ import annotations

import pathlib

import pandas as pd

from metrics import registry
from metrics.registry import METRICS


def plottable_metrics(summary: pd.DataFrame) -> list[str]:
    return [m for m in registry.quality_metrics() if m in summary.columns and summary[m].notna().any()
            and pd.api.types.is_numeric_dtype(summary[m])]


def rd_plots(summary: pd.DataFrame, out_dir: str | pathlib.Path, log_x: bool | None = None,
             metrics: list[str] | None = None, formats=("png", "svg"),
             intervals: pd.DataFrame | None = None) -> list[pathlib.Path]:
    """One figure per metric. `intervals` (benchmark.bootstrap.intervals) adds error bars: the metric's
    bootstrap interval vertically, the bpp interval horizontally."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    data = summary[summary["bpp"].notna()].sort_values(["codec", "bpp"])
    if log_x is None:  # a caption codec at 0.002 bpp next to JPEG at 2 bpp needs a log axis to be seen
        positive = data.loc[data["bpp"] > 0, "bpp"]
        log_x = bool(len(positive)) and positive.max() / positive.min() > 100
    sns.set_theme(style="whitegrid", context="notebook")
    for metric in metrics or plottable_metrics(data):
        info = METRICS.get(metric)
        sub = data[data[metric].notna() & (data[metric] != float("inf"))]
        if sub.empty:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        codecs = list(dict.fromkeys(sub["codec"]))
        palette = dict(zip(codecs, sns.color_palette(n_colors=len(codecs))))
        published = sub["published"].fillna(False).astype(bool) if "published" in sub else pd.Series(False, sub.index)
        measured = sub[~published]
        if len(measured):
            order = [c for c in codecs if c in set(measured.codec)]
            sns.lineplot(data=measured, x="bpp", y=metric, hue="codec", style="codec", markers=True, dashes=False,
                         estimator=None, sort=False, ax=ax, hue_order=order, style_order=order,
                         palette={c: palette[c] for c in order})
        for codec, curve in sub[published].groupby("codec", sort=False):  # published curves: dashed, open marks
            curve = curve.sort_values("bpp")
            ax.plot(curve.bpp, curve[metric], linestyle="--", marker="o", markerfacecolor="none",
                    color=palette[codec], label=codec)
        if intervals is not None and len(intervals):
            _error_bars(ax, sub, intervals, metric, palette)
        if "rate_n_matched" in sub:  # rate-matched settings that missed their target for some images
            missed = sub[sub.rate_n_matched.notna() & (sub.rate_n_matched < sub.n_ok)]
            if len(missed):
                ax.scatter(missed.bpp, missed[metric], s=140, facecolors="none", edgecolors="crimson", linewidths=1.2,
                           label="rate target missed (at achieved bpp)", zorder=5)
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (bpp)" + (", log scale" if log_x else ""))
        ax.set_ylabel(info.label if info else metric)
        better = "" if info is None else (" (higher is better)" if info.higher_is_better else " (lower is better)")
        dataset = ", ".join(sorted(set(sub["dataset"].dropna().astype(str)))) if "dataset" in sub else ""
        ax.set_title(f"{info.label if info else metric} vs rate{better}\n{dataset}", fontsize=10)
        ax.legend(title="codec", fontsize=8)
        fig.tight_layout()
        for fmt in formats:
            path = out_dir / f"rd_{metric}.{fmt}"
            fig.savefig(path, dpi=150)
            written.append(path)
        plt.close(fig)
    return written


def _error_bars(ax, sub: pd.DataFrame, intervals: pd.DataFrame, metric: str, palette: dict) -> None:
    wide = intervals[intervals.metric.isin([metric, "bpp"])].pivot_table(
        index=["codec", "setting_index"], columns="metric", values=["low", "high"], aggfunc="first")
    for row in sub.itertuples():
        key = (row.codec, row.setting_index)
        if key not in wide.index:
            continue
        ci = wide.loc[key]
        y, x = getattr(row, metric), row.bpp
        yerr = xerr = None
        if ("low", metric) in ci.index and pd.notna(ci[("low", metric)]):
            yerr = [[max(y - ci[("low", metric)], 0)], [max(ci[("high", metric)] - y, 0)]]
        if ("low", "bpp") in ci.index and pd.notna(ci[("low", "bpp")]):
            xerr = [[max(x - ci[("low", "bpp")], 0)], [max(ci[("high", "bpp")] - x, 0)]]
        if yerr is not None or xerr is not None:
            ax.errorbar([x], [y], yerr=yerr, xerr=xerr, fmt="none", ecolor=palette[row.codec], elinewidth=1,
                        capsize=2, alpha=0.8)
