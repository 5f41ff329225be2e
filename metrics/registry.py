"""What each summary metric is called in plots and tables, and which direction is better."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    column: str
    label: str
    higher_is_better: bool


METRICS = {m.column: m for m in [
    MetricInfo("psnr", "PSNR (dB)", True),
    MetricInfo("ms_ssim", "MS-SSIM (RGB)", True),
    MetricInfo("lpips", "LPIPS (AlexNet)", False),
    MetricInfo("inception_score", "Inception Score", True),
    MetricInfo("fid", "FID", False),
    MetricInfo("kid", "KID", False),
    MetricInfo("ipd", "IPD (instance perceptual distance)", False),
    MetricInfo("patch_fid", "Patch FID (FID/256)", False),
    MetricInfo("caption_bleu4", "Caption BLEU-4 (transmitted vs reference captions)", True),
    MetricInfo("caption_cosine", "Caption cosine similarity (sentence embeddings)", True),
]}


def higher_is_better(metric: str) -> bool:
    """Direction of a metric column; bpp (not plotted as a metric) is lower-is-better, unknown columns higher."""
    if metric == "bpp":
        return False
    info = METRICS.get(metric)
    return True if info is None else info.higher_is_better


def register_metric(info: MetricInfo) -> None:
    METRICS[info.column] = info
