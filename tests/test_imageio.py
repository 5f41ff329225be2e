import numpy as np
import pytest
from PIL import Image

from benchmark.data.imageio import BadImage, load_rgb8


def _save(path, im, **kw):
    im.save(path, **kw)
    return path


def test_bad_files_have_specific_reasons(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image at all")
    good = _save(tmp_path / "good.png", Image.new("RGB", (64, 64), (10, 20, 30)))
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    cases = {"empty.png": "empty file", "text.png": "not a recognised image format",
             "trunc.png": "truncated or corrupt", "missing.png": "cannot read file"}
    for name, reason in cases.items():
        with pytest.raises(BadImage, match=reason):
            load_rgb8(tmp_path / name)


def test_decompression_bomb_is_refused(tmp_path):
    path = _save(tmp_path / "big.png", Image.new("L", (2000, 1000)))
    with pytest.raises(BadImage, match="decompression bomb guard: 2000x1000"):
        load_rgb8(path, max_pixels=1_000_000)
    assert load_rgb8(path, max_pixels=3_000_000).pixels.shape == (1000, 2000, 3)


def test_odd_modes_are_normalised_and_recorded(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    gray = _save(tmp_path / "g.png", Image.fromarray(rgb[..., 0]))
    out = load_rgb8(gray)
    assert out.pixels.shape == (20, 30, 3) and np.array_equal(out.pixels[..., 2], rgb[..., 0])
    assert "grayscale" in out.notes[0]

    rgba = np.dstack([rgb, np.full((20, 30), 0, np.uint8)])
    out = load_rgb8(_save(tmp_path / "a.png", Image.fromarray(rgba, "RGBA")))
    assert (out.pixels == 255).all() and "alpha composited on white" in out.notes[0]

    out = load_rgb8(_save(tmp_path / "c.jpg", Image.fromarray(rgb).convert("CMYK")))
    assert out.source_mode == "CMYK" and "CMYK" in out.notes[0]

    v16 = (rgb[..., 0].astype(np.uint16) * 257)
    out = load_rgb8(_save(tmp_path / "d.png", Image.fromarray(v16)))
    assert np.array_equal(out.pixels[..., 0], rgb[..., 0]) and "16-bit scaled to 8-bit" in out.notes

    pal = Image.fromarray(rgb).convert("P")
    out = load_rgb8(_save(tmp_path / "p.png", pal))
    assert "palette expanded to RGB" in out.notes and np.array_equal(out.pixels, np.asarray(pal.convert("RGB")))


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "r.jpg", exif=exif.tobytes())
    out = load_rgb8(tmp_path / "r.jpg")
    assert out.pixels.shape == (40, 20, 3) and "exif orientation 6 applied" in out.notes
