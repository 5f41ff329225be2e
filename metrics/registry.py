"""The metric registry: every number cmcbench reports, declared once.

Each entry says which columns it writes and their types, how it is labelled, which direction is better,
when it is computed (`kind`), what it needs, which resolved state of the run says whether it is
available, its default `compare` tolerance, and (for per-image metrics) its pure function. The runner,
the schema, the summary, plots, leaderboard, bootstrap, compare and report read it; adding a metric is
one entry here plus its function, with no edit to the runner.

Kinds:
- `rate`: bpp, written by the producer from the bitstream.
- `pixels`: per image, a pure function of (original, reconstruction): `fn(original, reconstruction)`
  returns a float, or (float, note) where the note says why the value is NaN.
- `network`: per image, from a network's features: `fn(model, original, reconstruction, cache)`, with the
  model built once per process by `load(state, device)` (shared by metrics with the same loader and state);
  `cache` keeps an original's features across its settings and holds the row's `captions`, `text` and a
  fresh `row` dict for what several metrics share about one reconstruction.
- `text`: per image, for codecs that transmit text: `fn(text, reference_captions, state)`.
- `features`: per image, from the Inception stage's stored features (IPD).
- `set`: per setting, from stored per-image features (IS, FID, KID, patch FID).

`state` names the key of the run's config.json that records availability (`status` ok, disabled or
unavailable, with a `reason`); a metric whose state is not ok is written as NaN with that reason, never 0.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Callable

from metrics import iqa as _iqa

KINDS = ("rate", "pixels", "network", "text", "features", "set")
# PSNR above 100 dB (MSE below 6.5e-6: fewer than one 1-level error per 150,000 8-bit samples) is lossless
# for every practical purpose; averages count such an image at 100 dB, as compression benchmarks cap it.
PSNR_CAP_DB = 100.0
TEXT_COLUMN = "caption"  # the row column in which a text-transmitting codec reports the text it sent
PER_IMAGE_KINDS = ("rate", "pixels", "network", "text", "features")


@dataclass(frozen=True)
class MetricInfo:
    column: str
    label: str
    higher_is_better: bool
    kind: str = "pixels"
    short: str = ""  # a short header for tables
    columns: tuple[tuple[str, str], ...] = ()  # further columns it writes, (name, arrow type name)
    needs: tuple[str, ...] = ()  # "pixels", "captions", "transmitted text", "network:<name>", "features"
    state: str = ""  # where config.json records its availability ("" = always available)
    tolerance: float | str = 0.0  # default allowed worsening in `compare` (absolute, or "x%" relative)
    fn: str = ""  # "module:function", the pure function (per-image kinds)
    load: str = ""  # "module:function" building the network once per process (kind network)
    default: bool = True  # computed unless asked not to; False: only with --add-metric NAME
    dtype: str = "float64"
    # Averages (summary, bootstrap, tables) clip per-image values at this cap, which marks a lossless image
    # (PSNR of identical images is inf): one lossless image must not turn a mean into inf. The per-image
    # value itself is kept exact; the summary counts the images at the cap (`n_lossless`).
    cap: float | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Metric {self.column!r}: kind must be one of {', '.join(KINDS)}, not {self.kind!r}.")

    @property
    def per_image(self) -> bool:
        return self.kind in PER_IMAGE_KINDS

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    def all_columns(self) -> list[tuple[str, str]]:
        return [(self.column, self.dtype), *self.columns]

    def function(self) -> Callable[..., Any]:
        return _resolve(self.fn)

    def loader(self) -> Callable[..., Any]:
        return _resolve(self.load)


def _resolve(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


METRICS: dict[str, MetricInfo] = {m.column: m for m in [
    MetricInfo("bpp", "bits per pixel (bpp)", False, "rate", "bpp", tolerance="0.5%"),
    MetricInfo("psnr", "PSNR (dB)", True, "pixels", "PSNR", needs=("pixels",), tolerance=0.01, fn="metrics.psnr:psnr",
               cap=PSNR_CAP_DB),
    MetricInfo("psnr_y", "PSNR-Y (dB, BT.601 luma)", True, "pixels", "PSNR-Y", needs=("pixels",), tolerance=0.01,
               fn="metrics.psnr:psnr_y", default=False, cap=PSNR_CAP_DB),
    MetricInfo("ms_ssim", "MS-SSIM (RGB)", True, "pixels", "MS-SSIM", needs=("pixels",), state="image_metrics.ms_ssim",
               tolerance=5e-4, fn="metrics.msssim:ms_ssim"),
    MetricInfo("lpips", "LPIPS (AlexNet)", False, "network", "LPIPS", needs=("pixels", "network:alexnet"),
               state="image_metrics.lpips", tolerance=5e-4, fn="metrics.lpips:score", load="metrics.lpips:load"),
    MetricInfo("lpips_vgg", "LPIPS (VGG16)", False, "network", "LPIPS-VGG", needs=("pixels", "network:vgg16"),
               state="image_metrics.lpips_vgg", tolerance=5e-4, fn="metrics.lpips:score", load="metrics.lpips:load"),
    MetricInfo("dists", "DISTS (VGG16)", False, "network", "DISTS", needs=("pixels", "network:vgg16"),
               state="image_metrics.dists", tolerance=5e-4, fn="metrics.dists:score", load="metrics.dists:load"),
    MetricInfo("clip_similarity", "CLIP image similarity (original vs reconstruction)", True, "network", "CLIP-I",
               needs=("pixels", "network:clip"), state="image_metrics.clip", tolerance=5e-3,
               fn="metrics.clip:similarity", load="metrics.clip:load"),
    MetricInfo("clip_score", "CLIP score vs reference captions (x100)", True, "network", "CLIP-S",
               needs=("pixels", "captions", "network:clip"), state="image_metrics.clip", tolerance=0.5,
               fn="metrics.clip:score_captions", load="metrics.clip:load"),
    MetricInfo("clip_score_text", "CLIP score vs the transmitted text (x100)", True, "network", "CLIP-T",
               needs=("pixels", "transmitted text", "network:clip"), state="image_metrics.clip", tolerance=0.5,
               fn="metrics.clip:score_text", load="metrics.clip:load"),
    *[MetricInfo(m.name, m.label, m.higher_is_better, "network", m.name.upper().replace("_", "-"),
                 needs=("pixels", f"network:{m.name}"), state=f"iqa.{m.name}", tolerance=m.tolerance,
                 fn="metrics.iqa:score", load="metrics.iqa:load") for m in _iqa.METRICS.values()],
    MetricInfo(_iqa.OVERALL, "CMC-Bench overall (2/3 TOPIQ-FR + 1/3 TOPIQ-NR)", True, "network", "CMC-Bench",
               needs=("pixels", "network:topiq_fr", "network:topiq_nr"), state=f"iqa.{_iqa.OVERALL}", tolerance=0.01,
               fn="metrics.iqa:overall", load="metrics.iqa:no_model"),
    MetricInfo("ipd", "IPD (instance perceptual distance)", False, "features", "IPD",
               needs=("network:inception-v3",), state="inception", tolerance=1e-3),
    MetricInfo("inception_score", "Inception Score", True, "set", "IS", columns=(("inception_score_std", "float64"),),
               needs=("features",), state="inception", tolerance=0.05),
    MetricInfo("fid", "FID", False, "set", "FID", needs=("features",), state="inception", tolerance=0.5),
    MetricInfo("kid", "KID", False, "set", "KID", columns=(("kid_std", "float64"),), needs=("features",),
               state="inception", tolerance=1e-3),
    MetricInfo("patch_fid", "Patch FID (FID/256)", False, "set", "pFID", columns=(("n_patches", "float64"),),
               needs=("features",), state="inception", tolerance=0.5, default=False),
    MetricInfo("fd_dinov2", "FD-DINOv2 (Frechet distance in DINOv2 space)", False, "set", "FD-DINOv2",
               columns=(("n_dinov2", "float64"),), needs=("features",), state="dinov2", tolerance=5.0),
    MetricInfo("dinov2_precision", "Precision (DINOv2 k-NN)", True, "set", "Prec.", needs=("features",),
               state="dinov2", tolerance=0.02),
    MetricInfo("dinov2_recall", "Recall (DINOv2 k-NN)", True, "set", "Rec.", needs=("features",), state="dinov2",
               tolerance=0.02),
    MetricInfo("dinov2_density", "Density (DINOv2 k-NN)", True, "set", "Dens.", needs=("features",),
               state="dinov2", tolerance=0.02),
    MetricInfo("dinov2_coverage", "Coverage (DINOv2 k-NN)", True, "set", "Cov.", needs=("features",),
               state="dinov2", tolerance=0.02),
    MetricInfo("caption_bleu4", "Caption BLEU-4 (transmitted vs reference captions)", True, "text", "BLEU-4",
               needs=("transmitted text", "captions"), state="caption_metrics.caption_bleu4", tolerance=0.005,
               fn="metrics.caption:bleu4"),
    MetricInfo("caption_cosine", "Caption cosine similarity (sentence embeddings)", True, "text", "Cap. cos",
               needs=("transmitted text", "captions", "network:sentence-embedder"),
               state="caption_metrics.caption_cosine", tolerance=0.005, fn="metrics.caption:cosine"),
]}


def capped(name: str, values):
    """Per-image values as they enter an average: clipped at the metric's cap, if it has one."""
    import numpy as np

    info = METRICS.get(name)
    return values if info is None or info.cap is None else np.minimum(values, info.cap)


def get(name: str) -> MetricInfo:
    """The registry entry of `name`; an unknown name is an error, never a guess."""
    info = METRICS.get(name)
    if info is None:
        close = "".join(f"did you mean {m!r}? " for m in difflib.get_close_matches(str(name), list(METRICS), 1))
        raise ValueError(f"Unknown metric {name!r}; {close}known metrics: {', '.join(METRICS)}.")
    return info


def higher_is_better(metric: str) -> bool:
    return get(metric).higher_is_better


def quality_metrics() -> list[str]:
    """Every metric that is plotted against rate (all but bpp itself), in registry order."""
    return [m for m, info in METRICS.items() if info.kind != "rate"]


def of_kind(*kinds: str) -> list[MetricInfo]:
    return [m for m in METRICS.values() if m.kind in kinds]


def register_metric(info: MetricInfo) -> None:
    METRICS[info.column] = info
