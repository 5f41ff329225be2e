"""How tables print numbers and metric names (Markdown, HTML and LaTeX alike)."""

from __future__ import annotations

import math

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
