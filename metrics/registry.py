"""The metric registry: every number cmcbench reports, declared once.

Each entry (a `metrics.spec.MetricInfo`) says which columns it writes and their types, how it is labelled,
which direction is better, when it is computed (`kind`), what it needs, which resolved state of the run says
whether it is available, its default `compare` tolerance, and (for per-image metrics) its pure function. The
entries below are cmcbench's first metrics; any other module of this package that declares a `SPECS` list is
collected after them (by file name), with its feature spaces, so a new metric is one new file. The runner, the
schema, the summary, plots, leaderboard, bootstrap, compare and report read the registry.
"""

from __future__ import annotations

import difflib
import pathlib
import pkgutil

from metrics import iqa as _iqa
from metrics.spec import KINDS, PER_IMAGE_KINDS, FeatureSpace, MetricInfo  # noqa: F401 - re-exported

# PSNR above 100 dB (MSE below 6.5e-6: fewer than one 1-level error per 150,000 8-bit samples) is lossless
# for every practical purpose; averages count such an image at 100 dB, as compression benchmarks cap it.
PSNR_CAP_DB = 100.0
TEXT_COLUMN = "caption"  # the row column in which a text-transmitting codec reports the text it sent


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
               columns=(("n_dinov2", "float64"),), needs=("features",), state="dinov2", tolerance=5.0,
               space="dinov2", fn="metrics.dinov2:frechet_distance", resample="metrics.fid:fid"),
    *[MetricInfo(f"dinov2_{name}", f"{label} (DINOv2 k-NN)", True, "set", short, needs=("features",), state="dinov2",
                 tolerance=0.02, space="dinov2", fn="metrics.dinov2:precision_recall")
      for name, label, short in (("precision", "Precision", "Prec."), ("recall", "Recall", "Rec."),
                                 ("density", "Density", "Dens."), ("coverage", "Coverage", "Cov."))],
    MetricInfo("caption_bleu4", "Caption BLEU-4 (transmitted vs reference captions)", True, "text", "BLEU-4",
               needs=("transmitted text", "captions"), state="caption_metrics.caption_bleu4", tolerance=0.005,
               fn="metrics.caption:bleu4"),
    MetricInfo("caption_cosine", "Caption cosine similarity (sentence embeddings)", True, "text", "Cap. cos",
               needs=("transmitted text", "captions", "network:sentence-embedder"),
               state="caption_metrics.caption_cosine", tolerance=0.005, fn="metrics.caption:cosine"),
]}


# The metrics above, which every run's config.json lists (disabled ones too); a metric file's is listed only
# when a run asks for it, so runs that do not read as they did before the file was added.
FIRST = frozenset(METRICS)
SPACES: dict[str, FeatureSpace] = {s.name: s for s in [
    FeatureSpace("dinov2", "DINOv2", "dinov2", "metrics.dinov2:extractor"),
]}
# Modules that are not metric files (they hold the registry's own machinery); every other module is read for SPECS.
_MACHINERY = {"registry", "spec", "defaults", "download", "hub"}


def _collect() -> None:
    """Add the entries of every metric file (a module of this package with a module-level `SPECS` list), by file
    name: a new metric is one new file. A file is imported only if its source assigns SPECS."""
    import importlib

    folder = pathlib.Path(__file__).parent
    for module in sorted(m.name for m in pkgutil.iter_modules([str(folder)])):
        if module in _MACHINERY or "\nSPECS" not in (folder / f"{module}.py").read_text():
            continue
        for entry in importlib.import_module(f"metrics.{module}").SPECS:
            if isinstance(entry, FeatureSpace):
                if entry.name in SPACES:
                    raise ValueError(f"metrics/{module}.py declares the feature space {entry.name!r} again.")
                SPACES[entry.name] = entry
            elif entry.column in METRICS:
                raise ValueError(f"metrics/{module}.py declares the metric {entry.column!r} again.")
            else:
                METRICS[entry.column] = entry


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


def in_space(space: str) -> list[MetricInfo]:
    """The set metrics computed in one feature space, in registry order."""
    return [m for m in METRICS.values() if m.space == space]


_collect()
