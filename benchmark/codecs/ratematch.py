"""Rate matching: encode each image at the setting of a codec that reaches a target bpp.

Tables and visual comparisons are fairest at equal rate, but a codec's quality knob gives a different
bpp on every image. For a codec that declares a monotone rate parameter (`rate_range`, `rate_integer`,
`rate_increasing`), `match_rate` bisects that parameter per image until the whole bitstream is within a
relative tolerance of the target, keeping the closest bitstream it has seen. When a target lies outside
what the codec can reach (CMC's 0.005 bpp is far below JPEG's quality 1), or an integer knob steps over
it, the closest bitstream is kept and the row says so instead of pretending: `rate_match` is
`matched`, `closest` (the knob is too coarse), `below-range` or `above-range`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from benchmark.codecs.codec import Codec, encode_image
from benchmark.codecs.wrapper import Wrapper
from metrics.rate import bits_per_pixel

MAX_TRIALS = 40


@dataclass
class RateMatch:
    data: bytes
    setting: float
    bpp: float
    target: float
    trials: int
    status: str  # matched, closest, below-range, above-range

    @property
    def error(self) -> float:
        return self.bpp / self.target - 1.0


def match_rate(encode: Callable[[Any], bytes], n_pixels: int, target: float, lo: float, hi: float, *,
               integer: bool = False, increasing: bool = True, log: bool = False, tolerance: float = 0.01,
               max_trials: int = MAX_TRIALS) -> RateMatch:
    """Bisect the rate parameter in [lo, hi] for `encode(setting)` to give `target` bpp within `tolerance`."""
    best: RateMatch | None = None
    trials = 0

    def trial(setting) -> float:
        nonlocal best, trials
        setting = int(setting) if integer else float(setting)
        data = encode(setting)
        trials += 1
        bpp = bits_per_pixel(len(data), n_pixels, 1)
        if best is None or abs(math.log(bpp / target)) < abs(math.log(best.bpp / target)):
            best = RateMatch(data, setting, bpp, target, 0, "closest")
        return bpp

    def done(status: str) -> RateMatch:
        best.trials = trials
        best.status = "matched" if abs(best.error) <= tolerance else status
        return best

    # Orient so that `low` is the end spending the fewest bits.
    low, high = (lo, hi) if increasing else (hi, lo)
    if integer:
        low, high = (math.ceil(low), math.floor(high)) if increasing else (math.floor(low), math.ceil(high))
    if trial(low) > target * (1 + tolerance):
        return done("below-range")
    if best.status == "closest" and abs(best.error) <= tolerance:
        return done("matched")
    if trial(high) < target * (1 - tolerance):
        return done("above-range")
    resolution = 1 if integer else abs(high - low) * 1e-6 if not log else min(low, high) * 1e-6
    while trials < max_trials and abs(best.error) > tolerance and abs(high - low) > resolution:
        mid = math.sqrt(low * high) if log and low > 0 and high > 0 else (low + high) / 2
        if integer:
            mid = math.floor(mid) if increasing else math.ceil(mid)
            if mid in (low, high):
                break
        if trial(mid) < target:
            low = mid
        else:
            high = mid
    return done("closest")


class RateMatched(Wrapper):
    """A codec encoded at the setting reaching each target bpp; its decoder is the inner codec's."""

    OWN = ("rate_parameter",)
    rate_parameter = "target_bpp"
    columns = {"rate_target_bpp": "float64", "rate_setting": "float64", "rate_trials": "int64",
               "rate_error": "float64", "rate_match": "string", "rate_match_note": "string"}

    def __init__(self, tolerance: float = 0.01, **options: Any):
        super().__init__(**options)
        self.tolerance = float(tolerance)
        self.last: RateMatch | None = None

    def encode(self, image: np.ndarray, setting, record=None) -> bytes:
        cls = self.inner_class
        lo, hi = cls.rate_range
        self.last = match_rate(lambda s: encode_image(self.inner, image, s, record), image.shape[0] * image.shape[1],
                               float(setting), lo, hi, integer=cls.rate_integer, increasing=cls.rate_increasing,
                               log=cls.rate_log, tolerance=self.tolerance)
        return self.last.data

    def encode_columns(self) -> dict[str, Any]:
        m = self.last
        if m is None:
            return {}
        notes = {"below-range": f"target {m.target:g} bpp is below the lowest rate {self.inner_class.name} reaches "
                                f"({m.bpp:.4g} bpp at {self.inner_class.rate_parameter} {m.setting:g})",
                 "above-range": f"target {m.target:g} bpp is above the highest rate {self.inner_class.name} reaches "
                                f"({m.bpp:.4g} bpp at {self.inner_class.rate_parameter} {m.setting:g})",
                 "closest": f"{self.inner_class.rate_parameter} steps over the target; closest rate kept",
                 "matched": ""}
        return {"rate_target_bpp": m.target, "rate_setting": float(m.setting), "rate_trials": m.trials,
                "rate_error": m.error, "rate_match": m.status, "rate_match_note": notes[m.status]}


def rate_matched(cls: type[Codec]) -> type[RateMatched]:
    """The rate-matched variant of a codec class (keeps its name, availability check and process needs)."""
    if cls.rate_range is None:
        raise ValueError(f"Codec {cls.name!r} cannot be rate-matched: it declares no rate_range.")
    return RateMatched.around(cls, defaults={"tolerance": 0.01, **cls.defaults})
