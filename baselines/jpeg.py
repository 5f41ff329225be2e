"""JPEG through Pillow (libjpeg-turbo in Pillow's wheels); bpp counts the whole JFIF file.

Integer qualities use libjpeg's own `quality`. A fractional quality (which rate matching needs: one
quality step is about 8% of the rate near 0.25 bpp) scales the standard IJG tables exactly as
`jpeg_set_quality` does, so quality 37.0 and 37 give the same bytes.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, features

from benchmark.codecs.codec import Codec

SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
# ITU-T T.81 Annex K tables in natural (row-major) order, as libjpeg's jpeg_set_quality scales them.
LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
        14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
CHROMA = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
          47, 66, 99, 99, 99, 99, 99, 99) + (99,) * 32


def quality_tables(quality: float) -> list[list[int]]:
    """libjpeg's quality scaling (integer division below 50, linear above), extended to fractional qualities."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [[int(min(255, max(1, (q * scale + 50) // 100))) for q in table] for table in (LUMA, CHROMA)]


class JPEG(Codec):
    name = "jpeg"
    rate_parameter = "quality"
    default_sweep = tuple(range(5, 100, 5))
    rate_range = (1.0, 100.0)
    defaults = {"subsampling": "4:2:0", "optimize": False, "progressive": False}
    option_choices = {"subsampling": tuple(SUBSAMPLING)}

    def encode(self, image: np.ndarray, setting) -> bytes:
        quality = float(setting)
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, not {setting!r}.")
        rate = {"quality": int(quality)} if quality.is_integer() else {"qtables": quality_tables(quality)}
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", **rate,
                                    subsampling=SUBSAMPLING[self.options["subsampling"]],
                                    optimize=self.options["optimize"], progressive=self.options["progressive"])
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as im:  # its own format, no other Pillow reads
            return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))

    def versions(self) -> dict[str, str]:
        # features.version("jpg") is the libjpeg API level Pillow was built against (6.2 for libjpeg-turbo 3.x);
        # the library's own version is its own feature's
        if features.check_feature("libjpeg_turbo"):
            return {"pillow": Image.__version__, "libjpeg-turbo": str(features.version("libjpeg_turbo"))}
        return {"pillow": Image.__version__, "libjpeg": str(features.version("jpg"))}
