"""Rate-quality curves: a metric at a chosen rate, and Bjontegaard deltas between two codecs.

A curve is one codec's (bpp, metric) points from a run's summary. Values at a rate are interpolated
along the codec's own curve (PCHIP on log bpp) and never extrapolated: outside its rate range there is
no value. BD-rate and BD-metric come from the maintained `bjontegaard` package (Akima by default).
Metrics where lower is better (FID, LPIPS...) are negated for the package, which expects quality to
rise with rate, and BD-metric is reported back in the metric's own units and sign (test - anchor).

When two curves do not overlap (a text codec at 0.005 bpp against JPEG's 0.2 bpp and up), BD values do
not exist; `compare_curves` says so and gives what does exist: the anchor's metric interpolated at the
codec's rates, and the rate saving at equal metric where the codec's metric lies in the anchor's range.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator

from metrics.registry import higher_is_better

BD_METHODS = ("akima", "pchip", "cubic")
# BD averages over the range two curves share; below half of the wider range it rests on the ends of the
# curves, and leaderboards mark it unreliable rather than print it as a headline number.
MIN_RELIABLE_OVERLAP = 0.5


@dataclass
class Curve:
    codec: str
    metric: str
    bpp: np.ndarray  # increasing
    value: np.ndarray

    @classmethod
    def from_summary(cls, summary: pd.DataFrame, codec: str, metric: str) -> "Curve":
        rows = summary[(summary.codec == codec)]
        if metric not in rows:
            return cls(codec, metric, np.array([]), np.array([]))
        rows = rows[["bpp", metric]].dropna()
        rows = rows.groupby("bpp", as_index=False)[metric].mean().sort_values("bpp")
        return cls(codec, metric, rows.bpp.to_numpy(float), rows[metric].to_numpy(float))

    @classmethod
    def from_points(cls, codec: str, metric: str, bpp, value) -> "Curve":
        """A curve from one resample's points: NaN points dropped, settings at the same rate merged (mean)."""
        bpp, value = np.asarray(bpp, float), np.asarray(value, float)
        keep = np.isfinite(bpp) & np.isfinite(value)
        rates, inverse = np.unique(bpp[keep], return_inverse=True)
        merged = np.bincount(inverse, weights=value[keep], minlength=len(rates)) / np.bincount(inverse,
                                                                                              minlength=len(rates))
        return cls(codec, metric, rates, merged)

    def __len__(self) -> int:
        return len(self.bpp)

    def at_rate(self, bpp: float) -> float:
        """The metric at `bpp` along this curve; NaN outside the measured rate range."""
        if len(self) == 0 or not self.bpp[0] * (1 - 1e-9) <= bpp <= self.bpp[-1] * (1 + 1e-9):
            return float("nan")
        if len(self) == 1:
            return float(self.value[0])
        return float(PchipInterpolator(np.log(self.bpp), self.value)(math.log(bpp)))

    def rate_at(self, value: float) -> float:
        """The bpp at which this curve reaches `value`; NaN outside its metric range or if not monotone."""
        if len(self) < 2:
            return float("nan")
        order = np.argsort(self.value)
        v, r = self.value[order], np.log(self.bpp[order])
        if np.any(np.diff(v) <= 0) or not (np.all(np.diff(r) > 0) or np.all(np.diff(r) < 0)):
            return float("nan")  # the metric does not move monotonically with rate: no unique answer
        if not v[0] <= value <= v[-1]:
            return float("nan")
        return float(math.exp(PchipInterpolator(v, r)(value)))


def bd_rate(anchor: Curve, test: Curve, method: str = "akima") -> float:
    """Average rate difference in percent at equal metric (negative: the test codec needs fewer bits)."""
    import bjontegaard

    sign = 1.0 if higher_is_better(anchor.metric) else -1.0
    ra, da = _by_metric(anchor, sign)
    rt, dt = _by_metric(test, sign)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(bjontegaard.bd_rate(ra, da, rt, dt, method=method, require_matching_points=False, min_overlap=0))


def bd_metric(anchor: Curve, test: Curve, method: str = "akima") -> float:
    """Average metric difference (test - anchor, in the metric's units) at equal rate."""
    import bjontegaard

    sign = 1.0 if higher_is_better(anchor.metric) else -1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = bjontegaard.bd_psnr(anchor.bpp, sign * anchor.value, test.bpp, sign * test.value, method=method,
                                    require_matching_points=False, min_overlap=0)
    return sign * float(value)


def _by_metric(curve: Curve, sign: float) -> tuple[np.ndarray, np.ndarray]:
    d = sign * curve.value
    order = np.argsort(d)
    return curve.bpp[order], d[order]


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    return max(hi - lo, 0.0) / (max(a.max(), b.max()) - min(a.min(), b.min()) or 1.0)


def monotone(curve: Curve) -> bool:
    sign = 1.0 if higher_is_better(curve.metric) else -1.0
    return bool(np.all(np.diff(sign * curve.value) > 0))


def compare_curves(anchor: Curve, test: Curve, method: str = "akima") -> dict:
    """BD-rate and BD-metric of `test` against `anchor`, or, where they do not exist, why not and what does."""
    out: dict = {"bd_rate": float("nan"), "bd_metric": float("nan"), "note": "", "overlap": float("nan"),
                 "rate_overlap": float("nan"), "metric_overlap": float("nan")}
    if len(anchor) < 2 or len(test) < 2:
        out["note"] = "fewer than 2 points on a curve"
    elif not (monotone(anchor) and monotone(test)):
        which = [c.codec for c in (anchor, test) if not monotone(c)]
        out["note"] = f"{' and '.join(which)} not monotone in {anchor.metric}: BD undefined"
    else:
        # Each BD integrates along one axis, over the range both curves cover there (as the bjontegaard package
        # checks it): BD-rate along the metric, BD-metric along log rate.
        rate_overlap = _overlap(np.log(anchor.bpp), np.log(test.bpp))
        metric_overlap = _overlap(anchor.value, test.value)
        out.update(rate_overlap=rate_overlap, metric_overlap=metric_overlap)
        if metric_overlap > 0:
            out["bd_rate"] = bd_rate(anchor, test, method)
        if rate_overlap > 0:
            out["bd_metric"] = bd_metric(anchor, test, method)
        # the least share a BD that exists rests on (0 when none does)
        shares = ((metric_overlap, out["bd_rate"]), (rate_overlap, out["bd_metric"]))
        out["overlap"] = min([share for share, bd in shares if not math.isnan(bd)] or [0.0])
        axes = ((rate_overlap, "rate", "BD-metric"), (metric_overlap, anchor.metric, "BD-rate"))
        notes = [f"{axis} ranges do not overlap" for share, axis, _ in axes if share == 0]
        partial = [(share, axis, bd) for share, axis, bd in axes if 0 < share < 0.75]
        if partial:
            notes.append(f"partial overlap ({', '.join(f'{axis} {share:.0%}' for share, axis, _ in partial)}): "
                         f"{partial[0][2] if len(partial) == 1 else 'each BD'} covers only the shared range")
        out["note"] = "; ".join(notes)
    if (math.isnan(out["bd_rate"]) or math.isnan(out["bd_metric"])) and len(test):
        # What can still be said: the anchor at the test codec's rates, and the rate saving at equal quality.
        at_rate = [(b, anchor.at_rate(b), v) for b, v in zip(test.bpp, test.value)]
        at_rate = [x for x in at_rate if not math.isnan(x[1])]
        if at_rate:
            out["anchor_at_test_rate"] = at_rate
        savings = [(b, v, anchor.rate_at(v)) for b, v in zip(test.bpp, test.value)]
        savings = [(b, v, 1 - b / ra) for b, v, ra in savings if not math.isnan(ra)]
        if savings:
            out["rate_saving_at_equal_metric"] = savings
    return out


def fit_error(anchor: Curve, test: Curve, method: str = "akima") -> tuple[float, str]:
    """How much of a BD-metric may be the fitting of curves through a few points rather than the codecs, and
    where the estimate comes from: the spread of the BD-metric over the interpolation methods the field uses
    (Akima, PCHIP as JVET's tools and the bjontegaard package, cubic), and its largest move when one interior
    point of either curve is left out (the end points fix the range and stay). NaN when BD is undefined.

    A codec that only moved along its own curve changes its BD-metric by about this much, which the bootstrap
    over images does not see (the curves are refitted through the same kind of points in every resample)."""
    full = compare_curves(anchor, test, method)["bd_metric"]
    if math.isnan(full):
        return float("nan"), ""
    methods = [compare_curves(anchor, test, m)["bd_metric"] for m in BD_METHODS]
    spread = float(np.nanmax(methods) - np.nanmin(methods)) if np.isfinite(methods).any() else 0.0
    moves = []
    for k in range(1, len(anchor) - 1):
        moves.append(compare_curves(_without(anchor, k), test, method)["bd_metric"] - full)
    for k in range(1, len(test) - 1):
        moves.append(compare_curves(anchor, _without(test, k), method)["bd_metric"] - full)
    held_out = float(np.nanmax(np.abs(moves))) if np.isfinite(moves).any() else 0.0
    if not moves:  # two-point curves: how much one point moves the number cannot be measured, so is not said
        return spread, f"interpolation methods disagree by {spread:.3g}; no curve has an interior point to leave out"
    which = "interpolation methods disagree" if spread >= held_out else "leaving one point out moves it"
    return max(spread, held_out), f"{which} (methods {spread:.3g}, one point out {held_out:.3g})"


def _without(curve: Curve, k: int) -> Curve:
    return Curve(curve.codec, curve.metric, np.delete(curve.bpp, k), np.delete(curve.value, k))
