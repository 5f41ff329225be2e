"""WebP, AVIF and JPEG XL adapters, and JPEG at fractional quality."""

import io
import sys

import numpy as np
import pytest
from PIL import Image

from baselines.avif import AVIF
from baselines.jpeg import JPEG
from baselines.webp import WebP
from benchmark.codecs.codec import CodecUnavailable
from benchmark.codecs.codec_spec import load_codec_class
from metrics.psnr import psnr


def _images(folder):
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]


def _check_codec(codec, images, sweep, magic: bytes):
    for img in images:
        sizes, psnrs = [], []
        for setting in sweep:
            data = codec.encode(img, setting)
            assert data.startswith(magic) or magic in data[:12]  # a whole file, headers included
            rec = codec.decode(data)
            assert rec.shape == img.shape and rec.dtype == np.uint8
            assert not np.array_equal(rec, img)  # lossy, whatever the library's default
            sizes.append(len(data))
            psnrs.append(psnr(img, rec))
        assert sizes == sorted(sizes), f"rate not monotone along the sweep: {sizes}"
        assert psnrs[-1] > psnrs[0] + 3
    return sizes


def test_webp_round_trip_lossy_monotone(natural_images):
    codec = load_codec_class("webp")()
    _check_codec(codec, _images(natural_images), (0, 10, 30, 50, 70, 90), b"RIFF")
    img = _images(natural_images)[0]
    # The whole RIFF file is the bitstream: its size field plus 8 bytes is every byte returned.
    data = codec.encode(img, 50)
    assert int.from_bytes(data[4:8], "little") + 8 == len(data) and data[8:12] == b"WEBP"
    # quality is libwebp's float: a fractional value lands between its neighbours.
    assert len(codec.encode(img, 40)) <= len(codec.encode(img, 45.5)) <= len(codec.encode(img, 50))
    assert codec.encode(img, 50) != WebP(method=0).encode(img, 50)


def test_avif_round_trip_lossy_monotone(natural_images):
    codec = load_codec_class("avif")()
    _check_codec(codec, _images(natural_images), (0, 20, 40, 60, 80), b"ftypavif")
    img = _images(natural_images)[0]
    assert AVIF(subsampling="4:4:4").encode(img, 50) != codec.encode(img, 50)
    with pytest.raises(ValueError, match="integer"):
        codec.encode(img, 40.5)
    with pytest.raises(ValueError, match="subsampling"):
        AVIF(subsampling="4:1:1")


def test_jpegxl_round_trip_or_clear_skip(natural_images, monkeypatch):
    cls = load_codec_class("jpegxl")
    try:
        cls.check_available()
    except CodecUnavailable as exc:
        pytest.skip(f"JPEG XL not installed here: {exc}")
    codec = cls()
    sizes = _check_codec(codec, _images(natural_images), (25, 8, 3, 1, 0.3), b"\xff\x0a")
    assert len(sizes) == 5
    assert "libjxl" in codec.versions()["libjxl"]
    # Without imagecodecs the codec says what to install, and only it is skipped.
    monkeypatch.setitem(sys.modules, "imagecodecs", None)
    with pytest.raises(CodecUnavailable, match="pip install imagecodecs"):
        cls.check_available()


def test_jpegxl_missing_library_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "imagecodecs", None)
    with pytest.raises(CodecUnavailable, match="pip install imagecodecs"):
        load_codec_class("jpegxl").check_available()


def test_jpeg_fractional_quality_is_libjpeg_scaling(natural_images):
    img = _images(natural_images)[0]
    codec = JPEG()
    for q in (1, 7, 37, 50, 83, 100):
        assert codec.encode(img, float(q)) == codec.encode(img, q)  # integer values: libjpeg's own quality
        from baselines.jpeg import quality_tables

        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", qtables=quality_tables(q), subsampling=2)
        assert buf.getvalue() == codec.encode(img, q)  # the table scaling is exactly libjpeg's
    sizes = [len(codec.encode(img, q)) for q in np.arange(5, 15.01, 0.25)]
    assert sizes == sorted(sizes)
    assert len(set(sizes)) > 20  # far finer than the 11 integer qualities in that range


def test_each_codec_records_its_library_s_own_version():
    """Provenance names the library that coded the bits at its own version (not the libjpeg API level 6.2 that
    Pillow reports for libjpeg-turbo 3.x)."""
    from PIL import features

    from baselines.jpeg2000 import JPEG2000, import_glymur
    from baselines.jpegxl import JPEGXL

    jpeg = JPEG().versions()
    if features.check_feature("libjpeg_turbo"):
        assert jpeg["libjpeg-turbo"] == features.version("libjpeg_turbo") and "libjpeg" not in jpeg
        assert int(jpeg["libjpeg-turbo"].split(".")[0]) >= 2
    else:
        assert jpeg["libjpeg"] == features.version("jpg")
    assert WebP().versions()["libwebp"] == features.version("webp")
    checked = ["jpeg", "webp"]
    for name, check in (("avif", lambda: AVIF().versions()["libavif"] == features.version("avif")),
                        ("jpeg2000", lambda: JPEG2000().versions()["openjpeg"].split(" ")[0]
                         == import_glymur().version.openjpeg_version),
                        ("jpegxl", lambda: JPEGXL().versions()["libjxl"]
                         == __import__("imagecodecs").jpegxl_version())):
        try:
            assert check(), name
        except CodecUnavailable:
            continue  # the library is not installed here: nothing to record
        checked.append(name)
    assert {"jpeg", "webp", "jpeg2000"} <= set(checked)
