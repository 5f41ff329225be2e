"""WebP through Pillow (libwebp, built into Pillow's wheels): lossy VP8 with 4:2:0 chroma.

Pillow's WebP writer is lossy unless `lossless=True`; cmcbench always passes `lossless=False` so a
library default can never turn the sweep lossless. Quality is libwebp's float 0..100; `method` is its
speed/effort trade-off (0 fast .. 6 slow, best), recorded with the codec's options.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, features

from benchmark.codecs.codec import Codec, CodecUnavailable


class WebP(Codec):
    name = "webp"
    rate_parameter = "quality"
    default_sweep = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
    defaults = {"method": 6, "sharp_yuv": False}
    rate_range = (0.0, 100.0)
    option_ranges = {"method": (0, 6)}

    @classmethod
    def check_available(cls) -> None:
        if not features.check("webp"):
            raise CodecUnavailable("this Pillow was built without WebP: pip install --force-reinstall pillow")

    def encode(self, image: np.ndarray, setting) -> bytes:
        quality = float(setting)
        if not 0 <= quality <= 100:
            raise ValueError(f"WebP quality must be in 0..100, not {setting!r}.")
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="WEBP", lossless=False, quality=quality, method=self.options["method"],
                                    use_sharp_yuv=self.options["sharp_yuv"], exact=False)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data), formats=["WEBP"]) as im:  # its own format, no other Pillow reads
            return np.asarray(im.convert("RGB"))

    def versions(self) -> dict[str, str]:
        return {"pillow": Image.__version__, "libwebp": str(features.version("webp"))}
