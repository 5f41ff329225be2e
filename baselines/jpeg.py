"""JPEG through Pillow (libjpeg-turbo in Pillow's wheels); bpp counts the whole JFIF file."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, features

from benchmark.codec import Codec

SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


class JPEG(Codec):
    name = "jpeg"
    rate_parameter = "quality"
    default_sweep = tuple(range(5, 100, 5))
    defaults = {"subsampling": "4:2:0", "optimize": False, "progressive": False}

    def __init__(self, **options):
        super().__init__(**options)
        if self.options["subsampling"] not in SUBSAMPLING:
            raise ValueError(f"jpeg subsampling must be one of {', '.join(SUBSAMPLING)}, "
                             f"not {self.options['subsampling']!r}.")

    def encode(self, image: np.ndarray, setting) -> bytes:
        quality = int(setting)
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, not {setting!r}.")
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=quality,
                                    subsampling=SUBSAMPLING[self.options["subsampling"]],
                                    optimize=self.options["optimize"], progressive=self.options["progressive"])
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))

    def versions(self) -> dict[str, str]:
        variant = "libjpeg-turbo" if features.check_feature("libjpeg_turbo") else "libjpeg"
        return {"pillow": Image.__version__, variant: str(features.version("jpg"))}
