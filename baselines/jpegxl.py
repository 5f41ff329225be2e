"""JPEG XL through imagecodecs (libjxl), an optional dependency: pip install imagecodecs.

The rate parameter is libjxl's butteraugli `distance` (0.1 is visually lossless, 1 the libjxl default,
up to 25); a larger distance spends fewer bits. cmcbench always passes `lossless=False`. `effort` is
libjxl's speed/effort knob (1 fastest .. 9 slowest), recorded with the options.
"""

from __future__ import annotations

import numpy as np

from benchmark.codecs.codec import Codec, CodecUnavailable


def _imagecodecs():
    try:
        import imagecodecs
    except ImportError:
        raise CodecUnavailable("JPEG XL needs imagecodecs (libjxl): pip install imagecodecs") from None
    if not imagecodecs.JPEGXL.available:
        raise CodecUnavailable(f"imagecodecs {imagecodecs.__version__} was built without JPEG XL: "
                               "pip install --force-reinstall imagecodecs") from None
    return imagecodecs


class JPEGXL(Codec):
    name = "jpegxl"
    rate_parameter = "distance"
    default_sweep = (0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 25)
    defaults = {"effort": 7}
    option_ranges = {"effort": (1, 10)}
    rate_range = (0.05, 25.0)
    rate_increasing = False
    rate_log = True

    @classmethod
    def check_available(cls) -> None:
        _imagecodecs()

    def encode(self, image: np.ndarray, setting) -> bytes:
        distance = float(setting)
        if not 0 < distance <= 25:
            raise ValueError(f"JPEG XL distance must be in (0, 25], not {setting!r}.")
        return bytes(_imagecodecs().jpegxl_encode(np.ascontiguousarray(image), distance=distance, lossless=False,
                                                  effort=self.options["effort"], numthreads=1))

    def decode(self, data: bytes) -> np.ndarray:
        out = np.asarray(_imagecodecs().jpegxl_decode(data))
        if out.dtype != np.uint8:
            raise ValueError(f"JPEG XL decoded {out.dtype}, expected uint8")
        return out[..., :3] if out.ndim == 3 else np.repeat(out[..., None], 3, axis=2)

    def versions(self) -> dict[str, str]:
        ic = _imagecodecs()
        return {"imagecodecs": ic.__version__, "libjxl": ic.jpegxl_version()}
