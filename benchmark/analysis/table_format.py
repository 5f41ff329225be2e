"""How tables print numbers, metric names and run names (Markdown, HTML and LaTeX alike)."""

from __future__ import annotations

import math
import pathlib

from metrics.registry import METRICS

NO_INTERVAL = "‡"  # marks a value shown without an interval wherever a table also shows intervals; a note says why


def format_value(value, metric: str = "") -> str:
    """A number as the tables print it: the metric's usual decimals; – for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    digits = {"psnr": 2, "fid": 2, "inception_score": 2, "bpp": 4, "ms_ssim": 4, "lpips": 4, "kid": 4, "ipd": 3}
    return f"{value:.{digits.get(metric, 4)}f}"


def short_label(metric: str) -> str:
    """A column header for narrow tables: the registry's short name and direction arrow."""
    info = METRICS.get(metric)
    if metric == "bpp" or info is None:
        return metric
    return (info.short or info.label) + (" ↑" if info.higher_is_better else " ↓")


def run_names(run_dirs: list[str | pathlib.Path]) -> dict[str, str]:
    """A short name per run (keyed by str(run_dir)) where several are shown together: its folder's name,
    with as many of the folders above it as it takes to tell it from another run of the same name (runs named
    `tour` in results/main and results/branch are main/tour and branch/tour, not both `tour`)."""
    parts = {str(r): pathlib.Path(r).resolve().parts for r in run_dirs}
    names = {}
    for run, own in parts.items():
        k = 1
        while k < len(own) and any(other[-k:] == own[-k:] for other in parts.values() if other != own):
            k += 1
        names[run] = "/".join(own[-k:])
    return names
