"""Reading any image file into 8-bit RGB, saying what was done to it or exactly why it failed.

Every codec and metric must see the same pixels, so odd inputs (grayscale, alpha, CMYK, 16-bit,
palette, EXIF-rotated) are normalised here, once, and each step is recorded in the rows.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own decompression-bomb threshold


class BadImage(ValueError):
    """An input that cannot become an 8-bit RGB image; the message is the failed row's reason."""


@dataclass
class LoadedImage:
    pixels: np.ndarray  # H x W x 3 uint8
    source_mode: str
    notes: list[str] = field(default_factory=list)


def load_rgb8(source: str | os.PathLike | Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    if isinstance(source, Image.Image):
        return _normalise(source, [])
    path = os.fspath(source)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise BadImage(f"cannot read file: {exc.strerror or exc}") from None
    if size == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise BadImage(f"cannot read file: {exc.strerror or exc}") from None
    return decode_image_bytes(data, max_pixels)


def decode_image_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    saved = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = max_pixels
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                im = Image.open(io.BytesIO(data))
            except UnidentifiedImageError:
                raise BadImage("not a recognised image format") from None
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise BadImage(_bomb_message(data, max_pixels)) from None
            w, h = im.size
            if w * h > max_pixels:
                raise BadImage(_bomb_message(data, max_pixels))
            notes = []
            if getattr(im, "n_frames", 1) > 1:
                notes.append(f"first of {im.n_frames} frames")
            try:
                im.load()
            except (OSError, SyntaxError, ValueError) as exc:
                raise BadImage(f"truncated or corrupt image data ({exc})") from None
            return _normalise(im, notes)
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _bomb_message(data: bytes, max_pixels: int) -> str:
    Image.MAX_IMAGE_PIXELS = None  # reading the header alone is safe at any size; the caller restores it
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
        pixels = f"{w}x{h} = {w * h:,} pixels"
    except Exception:  # noqa: BLE001 - the header was already judged unsafe; keep the reason short
        pixels = "too many pixels"
    return f"decompression bomb guard: {pixels}, over the limit of {max_pixels:,} (raise --max-pixels to allow)"


def _normalise(im: Image.Image, notes: list[str]) -> LoadedImage:
    source_mode = im.mode
    orientation = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
    if orientation not in (0, 1):
        im = ImageOps.exif_transpose(im)
        notes.append(f"exif orientation {orientation} applied")
    mode = im.mode
    if mode == "RGB":
        pass
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im).astype(np.int64)
        if mode == "I" and a.max(initial=0) <= 255 and a.min(initial=0) >= 0:
            a8 = a.astype(np.uint8)
        else:
            a8 = ((np.clip(a, 0, 65535) + 128) // 257).astype(np.uint8)
            notes.append("16-bit scaled to 8-bit")
        im = Image.fromarray(a8, "L").convert("RGB")
        notes.append("grayscale replicated to RGB")
    elif mode == "F":
        raise BadImage("floating-point image (mode F) has no defined 8-bit range")
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im).convert("RGB")
        notes.append(f"{mode} alpha composited on white")
    elif mode == "P":
        im = im.convert("RGB")
        notes.append("palette expanded to RGB")
    elif mode in ("L", "1"):
        im = im.convert("RGB")
        notes.append("grayscale replicated to RGB")
    elif mode == "CMYK":
        im = im.convert("RGB")
        notes.append("CMYK converted to RGB")
    else:
        try:
            im = im.convert("RGB")
        except (ValueError, OSError) as exc:
            raise BadImage(f"cannot convert mode {mode} to RGB ({exc})") from None
        notes.append(f"{mode} converted to RGB")
    pixels = np.asarray(im, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise BadImage(f"unexpected pixel layout {pixels.shape} after conversion")
    return LoadedImage(np.ascontiguousarray(pixels), source_mode, notes)
