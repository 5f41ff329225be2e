"""JPEG 2000 through glymur (OpenJPEG): lossy 9/7 irreversible wavelet with the colour transform.

OpenJPEG's defaults are the lossless 5/3 wavelet, which is not what papers compare against, so the
adapter always asks for `irreversible=True, mct=True`. The rate is set by compression ratio (relative
to 24 bpp, so bpp is about 24/ratio) or, with `jpeg2000-psnr`, by target PSNR.

glymur needs an OpenJPEG (>= 2.4) shared library that its wheel does not ship. When the user has not
configured one and the system has none, glymur is pointed, through a glymurrc of cmcbench's own, at
the copy bundled in Pillow's wheel; the library used is recorded in every row.
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import pathlib
import sys
import tempfile

import numpy as np

from benchmark.codecs.codec import Codec, CodecUnavailable

MIN_OPENJPEG = (2, 4)
HOW_TO_FIX = ("Install OpenJPEG >= 2.4 (Debian/Ubuntu: apt install libopenjp2-7; macOS: brew install openjpeg; "
              "conda: conda install openjpeg), or point glymur at one with a glymurrc file containing "
              "'[library]\\nopenjp2: /path/to/libopenjp2.so' (see glymur's documentation).")

_glymur = None
_library_source = ""


def _user_glymurrc_exists() -> bool:
    candidates = [pathlib.Path.cwd() / "glymurrc"]
    if "XDG_CONFIG_HOME" in os.environ:
        candidates.append(pathlib.Path(os.environ["XDG_CONFIG_HOME"]) / "glymur" / "glymurrc")
    elif "HOME" in os.environ:
        candidates.append(pathlib.Path(os.environ["HOME"]) / ".config" / "glymur" / "glymurrc")
    return any(p.exists() for p in candidates)


def pillow_openjpeg() -> str | None:
    """Path of the libopenjp2 bundled in Pillow's wheel, if any."""
    import PIL

    site = pathlib.Path(PIL.__file__).resolve().parent.parent
    patterns = ["pillow.libs/libopenjp2*.so*", "PIL/.dylibs/libopenjp2*.dylib", "pillow.libs/openjp2*.dll",
                "PIL/openjp2*.dll"]
    for pattern in patterns:
        found = sorted(glob.glob(str(site / pattern)))
        if found:
            return found[0]
    return None


def import_glymur():
    """Import glymur with a working OpenJPEG, or raise CodecUnavailable saying how to get one."""
    global _glymur, _library_source
    if _glymur is not None:
        return _glymur
    use_pillow = "glymur" not in sys.modules and not _user_glymurrc_exists() and not ctypes.util.find_library("openjp2")
    lib = pillow_openjpeg() if use_pillow else None
    saved = os.environ.get("XDG_CONFIG_HOME")
    if lib:
        confdir = pathlib.Path(tempfile.gettempdir()) / f"cmcbench-glymur-{os.getuid() if hasattr(os, 'getuid') else 0}"
        (confdir / "glymur").mkdir(parents=True, exist_ok=True)
        rc = confdir / "glymur" / "glymurrc"
        text = f"[library]\nopenjp2: {lib}\n"
        if not rc.exists() or rc.read_text() != text:
            tmp = rc.with_suffix(f".{os.getpid()}")
            tmp.write_text(text)
            os.replace(tmp, rc)
        os.environ["XDG_CONFIG_HOME"] = str(confdir)
    try:
        import glymur
    except ImportError as exc:
        raise CodecUnavailable(f"JPEG 2000 needs glymur: pip install glymur ({exc}).") from exc
    finally:
        if lib:
            if saved is None:
                os.environ.pop("XDG_CONFIG_HOME", None)
            else:
                os.environ["XDG_CONFIG_HOME"] = saved
    version = glymur.version.openjpeg_version
    if tuple(glymur.version.openjpeg_version_tuple[:2]) < MIN_OPENJPEG:
        found = "no OpenJPEG library" if version == "0.0.0" else f"OpenJPEG {version}"
        raise CodecUnavailable(f"JPEG 2000: glymur found {found}, and it needs OpenJPEG >= 2.4. {HOW_TO_FIX}")
    _library_source = f"Pillow's bundled {pathlib.Path(lib).name}" if lib else "system or glymurrc"
    _glymur = glymur
    return glymur


class JPEG2000(Codec):
    name = "jpeg2000"
    rate_parameter = "ratio"
    # Compression ratios against 24 bpp: about 2 bpp down to 0.05 bpp.
    default_sweep = (12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 480)
    rate_range = (1.0, 4800.0)
    rate_increasing = False
    rate_log = True
    defaults = {"numres": 6, "container": "j2k", "irreversible": True, "mct": True}
    option_ranges = {"numres": (1, 32)}
    option_choices = {"container": ("j2k", "jp2")}  # bare codestream or the JP2 file format

    @classmethod
    def check_available(cls) -> None:
        import_glymur()

    def _rate_kwargs(self, setting) -> dict:
        ratio = float(setting)
        if ratio < 1:
            raise ValueError(f"JPEG 2000 compression ratio must be >= 1, not {setting!r}.")
        return {"cratios": [ratio]}

    def encode(self, image: np.ndarray, setting) -> bytes:
        glymur = import_glymur()
        h, w = image.shape[:2]
        numres = self.options["numres"]
        if min(h, w) < 2 ** (numres - 1):
            raise ValueError(f"image {w}x{h} is too small for JPEG 2000 with {numres} resolution levels "
                             f"(needs at least {2 ** (numres - 1)} pixels per side).")
        with tempfile.TemporaryDirectory(prefix="cmcbench-j2k-") as tmp:
            path = os.path.join(tmp, "image." + self.options["container"])
            glymur.Jp2k(path, data=np.ascontiguousarray(image), irreversible=self.options["irreversible"],
                        mct=self.options["mct"], numres=numres, **self._rate_kwargs(setting))
            with open(path, "rb") as f:
                return f.read()

    def decode(self, data: bytes) -> np.ndarray:
        glymur = import_glymur()
        suffix = "jp2" if data[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" else "j2k"
        with tempfile.TemporaryDirectory(prefix="cmcbench-j2k-") as tmp:
            path = os.path.join(tmp, "image." + suffix)
            with open(path, "wb") as f:
                f.write(data)
            return np.asarray(glymur.Jp2k(path)[:])

    def versions(self) -> dict[str, str]:
        glymur = import_glymur()
        return {"glymur": glymur.__version__, "openjpeg": f"{glymur.version.openjpeg_version} ({_library_source})"}


class JPEG2000PSNR(JPEG2000):
    """JPEG 2000 with the rate set by a target PSNR (OpenJPEG's -q), as some papers sweep it."""

    name = "jpeg2000-psnr"
    rate_parameter = "psnr_target"
    default_sweep = (24, 26, 28, 30, 32, 34, 36, 38, 40)
    rate_range = (15.0, 60.0)
    rate_increasing = True
    rate_log = False

    def _rate_kwargs(self, setting) -> dict:
        return {"psnr": [float(setting)]}
