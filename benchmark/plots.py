"""Rate-distortion curves: every summary metric against bpp, one line per codec, markers at settings."""

from __future__ import annotations

import pathlib

import pandas as pd

from metrics.registry import METRICS


def plottable_metrics(summary: pd.DataFrame) -> list[str]:
    return [m for m in METRICS if m in summary.columns and summary[m].notna().any()
            and pd.api.types.is_numeric_dtype(summary[m])]


def rd_plots(summary: pd.DataFrame, out_dir: str | pathlib.Path, log_x: bool | None = None,
             metrics: list[str] | None = None, formats=("png", "svg")) -> list[pathlib.Path]:
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
        sns.lineplot(data=sub, x="bpp", y=metric, hue="codec", style="codec", markers=True, dashes=False,
                     estimator=None, sort=False, ax=ax)
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (bpp)" + (", log scale" if log_x else ""))
        ax.set_ylabel(info.label if info else metric)
        better = "" if info is None else (" (higher is better)" if info.higher_is_better else " (lower is better)")
        dataset = ", ".join(sorted(set(sub["dataset"].astype(str)))) if "dataset" in sub else ""
        ax.set_title(f"{info.label if info else metric} vs rate{better}\n{dataset}", fontsize=10)
        ax.legend(title="codec", fontsize=8)
        fig.tight_layout()
        for fmt in formats:
            path = out_dir / f"rd_{metric}.{fmt}"
            fig.savefig(path, dpi=150)
            written.append(path)
        plt.close(fig)
    return written
