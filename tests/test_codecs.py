import io

import numpy as np
import pytest
from PIL import Image

from baselines.jpeg import JPEG
from baselines.jpeg2000 import JPEG2000, JPEG2000PSNR
from benchmark.codecs.codec_spec import CodecSpec, load_codec_class, parse_codec_spec
from metrics.psnr import psnr
from metrics.rate import bits_per_pixel


def _load(folder, name="img1.png"):
    return np.asarray(Image.open(folder / name).convert("RGB"))


def test_jpeg_matches_plain_pillow(natural_images):
    img = _load(natural_images)
    codec = JPEG()
    for q in (5, 50, 95):
        data = codec.encode(img, q)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=q)
        assert data == buf.getvalue()  # same bytes as Pillow with the documented defaults
        assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"  # whole file, headers included
        rec = codec.decode(data)
        ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(np.float64)
        assert rec.shape == img.shape and rec.dtype == np.uint8
        expected = 10 * np.log10(255 ** 2 / np.mean((img - ref) ** 2))
        assert psnr(img, rec) == pytest.approx(expected, rel=1e-12)


def test_jpeg_options_change_the_bitstream(natural_images):
    img = _load(natural_images)
    base = JPEG().encode(img, 75)
    assert JPEG(subsampling="4:4:4").encode(img, 75) != base
    assert JPEG(progressive=True).encode(img, 75) != base
    assert len(JPEG(optimize=True).encode(img, 75)) < len(base)
    with pytest.raises(ValueError, match="subsampling"):
        JPEG(subsampling="4:1:1")
    with pytest.raises(ValueError, match="no option 'qualty'"):
        JPEG(qualty=3)


def test_jpeg_rate_monotone_along_sweep(natural_images):
    img = _load(natural_images)
    sizes = [len(JPEG().encode(img, q)) for q in JPEG.default_sweep]
    assert sizes == sorted(sizes)
    assert JPEG.default_sweep == tuple(range(5, 100, 5))


def _j2k_cod_wavelet(data: bytes) -> int:
    """Wavelet transform byte of the COD marker segment: 0 = 9/7 irreversible, 1 = 5/3 reversible."""
    i = data.index(b"\xff\x52")
    return data[i + 13]


def _j2k_mct(data: bytes) -> int:
    i = data.index(b"\xff\x52")
    return data[i + 8]


def test_jpeg2000_is_lossy_97_with_colour_transform(natural_images):
    img = _load(natural_images)
    data = JPEG2000().encode(img, 24)
    assert data[:4] == b"\xff\x4f\xff\x51"  # bare codestream: SOC, SIZ
    assert _j2k_cod_wavelet(data) == 0 and _j2k_mct(data) == 1
    rec = JPEG2000().decode(data)
    assert rec.shape == img.shape and rec.dtype == np.uint8
    assert 25 < psnr(img, rec) < 60
    assert bits_per_pixel(len(data), img.shape[1], img.shape[0]) == pytest.approx(1.0, rel=0.1)  # 24 / ratio
    jp2 = JPEG2000(container="jp2").encode(img, 24)
    assert jp2[4:8] == b"jP  " and jp2.index(b"\xff\x4f\xff\x51") > 0  # JP2 boxes around the codestream
    assert psnr(img, JPEG2000().decode(jp2)) == pytest.approx(psnr(img, rec), abs=0.5)


def test_jpeg2000_rate_and_psnr_modes(natural_images):
    img = _load(natural_images)
    sizes = [len(JPEG2000().encode(img, r)) for r in (12, 48, 192)]
    assert sizes[0] > sizes[1] > sizes[2]
    rec = JPEG2000PSNR().decode(JPEG2000PSNR().encode(img, 32))
    assert psnr(img, rec) == pytest.approx(32, abs=1.5)


def test_jpeg2000_beats_jpeg_at_low_rate():
    from benchmark.data.sample import render

    img = np.asarray(render(5))
    j2k = JPEG2000()
    data = j2k.encode(img, 96)  # 0.25 bpp
    target = len(data)
    q = max(q for q in range(1, 101) if len(JPEG().encode(img, q)) <= target)  # JPEG at <= the same size
    jpeg = JPEG().decode(JPEG().encode(img, q))
    assert psnr(img, j2k.decode(data)) > psnr(img, jpeg) + 1.0


def test_jpeg2000_too_small_image_has_a_reason():
    with pytest.raises(ValueError, match="too small for JPEG 2000"):
        JPEG2000().encode(np.zeros((8, 8, 3), np.uint8), 24)


def test_codec_specs_and_plugins():
    spec = parse_codec_spec("jpeg quality=10,50 subsampling=4:4:4 label=j444")
    assert spec == CodecSpec("jpeg", "j444", {"subsampling": "4:4:4"}, (10, 50))
    assert CodecSpec.from_json(spec.to_json()) == spec
    plugin = parse_codec_spec("codecs_for_tests:Raw level=3")
    assert plugin.label == "raw" and plugin.settings == (3,)
    with pytest.raises(ValueError, match="Unknown codec"):
        parse_codec_spec("nonesuch")
    with pytest.raises(ValueError, match="not a subclass"):
        load_codec_class("json:JSONDecoder")
    with pytest.raises(ValueError, match="must be true or false"):
        parse_codec_spec("jpeg optimize=maybe")


def test_codec_spec_mistakes_get_one_sentence_that_names_the_fix():
    with pytest.raises(ValueError, match="did you mean 'jpeg2000'"):
        parse_codec_spec("jpeg200 ratio=24")
    with pytest.raises(ValueError, match="did you mean 'webp'"):
        parse_codec_spec("webq")
    with pytest.raises(ValueError) as err:
        parse_codec_spec("zzzzzz")
    assert "did you mean" not in str(err.value) and "jpeg" in str(err.value)  # nothing close: the list alone
    with pytest.raises(ValueError, match="install its package, or add its folder to PYTHONPATH"):
        parse_codec_spec("no_such_module_here:Codec")
    for empty in ("jpeg quality=", "jpeg quality=,", "jpeg bpp=", "webp settings="):
        with pytest.raises(ValueError, match="has no values"):  # not the default 19-setting sweep, silently
            parse_codec_spec(empty)
    assert parse_codec_spec("jpeg quality=10,").settings == (10,)
    # a setting given twice was run twice under one label (the bootstrap and compare, keyed by it, kept one); an empty
    # label named the codec ''
    for spec, said in (("jpeg quality=50,20,50", "quality=50 is given more than once"),
                       ("jpeg quality=50,50.0", "quality=50 is given more than once"),
                       ("webp bpp=0.5,0.25,0.5", "bpp=0.5 is given more than once"),
                       ("jpeg quality=50 label=", "label= needs a name")):
        with pytest.raises(ValueError, match=said):
            parse_codec_spec(spec)


@pytest.mark.parametrize("spec, said", [
    ("jpeg quality=50 quality=60", "quality= is given twice (one quality= with every value: quality=50,60); give it "
                                   "once."),
    ("jpeg quality=50 sweep=60", "sweep= is given twice (one sweep= with every value: sweep=50,60); give it once."),
    ("jpeg quality=50 optimize=true optimize=false", "optimize= is given twice; give it once."),
    ("jpeg label=a label=b", "label= is given twice; give it once."),
    ("jpeg quality=50 bpp=0.5", "bpp= rate-matches each image by choosing its quality itself, so quality= beside it "
                                "would be ignored; give one of them."),
])
def test_a_codec_spec_key_given_twice_or_a_sweep_beside_bpp_is_refused(spec, said):
    """`jpeg quality=50 quality=60` ran quality 60 alone (the last value won, silently), `optimize=true
    optimize=false` ran without optimize, and `jpeg quality=50 bpp=0.5` rate-matched and dropped quality=50."""
    with pytest.raises(ValueError) as err:
        parse_codec_spec(spec)
    assert str(err.value) == f"Codec spec {spec!r}: {said}"
