"""AVIF through Pillow (libavif with the libaom AV1 encoder, built into Pillow >= 11.3 wheels).

Lossy 4:2:0 by default, full range. Quality is libavif's 0..100, which it maps onto libaom's 64
quantizer levels, so the rate moves in steps (about 8% near 0.25 bpp): rate matching reports `closest`
where a step jumps over the target. `speed` is libavif's effort knob (0 slowest/best .. 10 fastest).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, features

from benchmark.codecs.codec import Codec, CodecUnavailable


class AVIF(Codec):
    name = "avif"
    rate_parameter = "quality"
    default_sweep = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90)
    defaults = {"speed": 6, "subsampling": "4:2:0", "range": "full"}
    rate_range = (0, 100)
    rate_integer = True
    option_ranges = {"speed": (0, 10)}
    option_choices = {"subsampling": ("4:4:4", "4:2:2", "4:2:0"), "range": ("full", "limited")}

    @classmethod
    def check_available(cls) -> None:
        if not features.check("avif"):
            raise CodecUnavailable("this Pillow has no AVIF support: pip install 'pillow>=11.3'")
        from PIL import _avif

        if not _avif.encoder_codec_available("aom"):
            raise CodecUnavailable("Pillow's libavif has no AV1 encoder (aom): pip install --force-reinstall pillow")

    def encode(self, image: np.ndarray, setting) -> bytes:
        quality = int(setting)
        if quality != setting or not 0 <= quality <= 100:
            raise ValueError(f"AVIF quality must be an integer in 0..100, not {setting!r}.")
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="AVIF", quality=quality, speed=self.options["speed"],
                                    subsampling=self.options["subsampling"], range=self.options["range"],
                                    codec="aom", max_threads=1)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data), formats=["AVIF"]) as im:  # its own format, no other Pillow reads
            return np.asarray(im.convert("RGB"))

    def versions(self) -> dict[str, str]:
        from PIL import _avif

        return {"pillow": Image.__version__, "libavif": str(features.version("avif")),
                "codecs": _avif.codec_versions()}
