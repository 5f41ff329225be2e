"""Rate: bits per pixel of the input image, counting every byte of the bitstream."""

from metrics.spec import MetricInfo


def bits_per_pixel(num_bytes: int, width: int, height: int) -> float:
    return 8.0 * num_bytes / (width * height)


SPECS = [
    MetricInfo("bpp", "bits per pixel (bpp)", False, "rate", "bpp", tolerance="0.5%"),
]
