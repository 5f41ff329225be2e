"""Any codec in: precomputed reconstructions, command-line codecs, published curves, the declared schema,
the metric registry, and runs whose every row fails."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from benchmark.analysis import leaderboard
from benchmark.cli import EXIT_FAILED_ROWS, main
from benchmark.codecs.codec_spec import parse_codec_spec
from benchmark.analysis.references import export_compressai, load_reference
from benchmark.run.results import load_run, shard_files
from benchmark.run.runner import RunConfig, create_run, execute
from metrics import registry
from metrics.psnr import psnr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_NETWORKS = dict(inception={"enabled": False}, caption_embedder="none", image_metrics={"ms_ssim": True,
                                                                                        "lpips": "none"})
SAME = ["bytes", "bits", "bpp", "psnr", "ms_ssim", "ipd", "width", "height", "image_sha256", "status"]


@pytest.fixture
def photos(tmp_path):
    """Photo-like images large enough for MS-SSIM (>= 161 px), two of them sharing a stem (x.png, x.jpg)."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(["a.png", "b.png", "x.png", "x.jpg"]):
        h, w = 168 + 8 * i, 176
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([128 + 90 * np.sin(x / (7 + i) + c) * np.cos(y / (11 + c)) for c in range(3)], -1)
        pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / name, **({"quality": 95} if name.endswith(".jpg") else {}))
    return folder


def _run(tmp_path, dataset, codecs, name, **kw):
    config = RunConfig(dataset=dataset, codecs=[parse_codec_spec(c) for c in codecs], **{**NO_NETWORKS, **kw})
    run_dir = create_run(config, tmp_path / "runs", name, progress=False)
    outcome = execute(run_dir, jobs=1, progress=False)
    return run_dir, outcome


def _by_key(images):
    return images.set_index(["image_id", "setting_label"]).sort_index()


def test_saved_outputs_fed_back_as_precomputed_give_the_same_rows(tmp_path, photos, random_inception_weights):
    inception = {"enabled": True, "weights": str(random_inception_weights), "device": "cpu", "batch_size": 8,
                 "isc_splits": 2, "kid_subsets": 10, "kid_subset_size": 3, "seed": 2020, "patch_fid": False}
    codecs = ["jpeg quality=20,70", "jpeg2000 ratio=30,80", "webp quality=30"]
    first, _ = _run(tmp_path, f"folder:{photos}", codecs, "first", inception=inception, save_reconstructions=True,
                    save_bitstreams=True)
    # x.png and x.jpg keep separate saved files.
    assert (first / "outputs" / "jpeg" / "20" / "x.png").is_file()
    assert (first / "outputs" / "jpeg" / "20" / "x.jpg.png").is_file()
    again = [f"precomputed path={first / 'outputs' / label} label={label}" for label in ("jpeg", "jpeg2000", "webp")]
    second, outcome = _run(tmp_path, f"folder:{photos}", again, "second", inception=inception)
    assert outcome.n_failed == 0
    a, sa = load_run(first)
    b, sb = load_run(second)
    for codec in ("jpeg", "jpeg2000", "webp"):
        x, y = _by_key(a[a.codec == codec]), _by_key(b[b.codec == codec])
        assert len(x) == len(y) == 4 * (1 if codec == "webp" else 2)
        pd.testing.assert_frame_equal(x[SAME], y[SAME], check_exact=True)
        assert y.produced_outside.all() and not x.produced_outside.any()
        assert y.source_file.notna().all()
    keys = ["codec", "setting_label"]
    x, y = sa.set_index(keys).sort_index(), sb.set_index(keys).sort_index()
    for column in ("bpp", "psnr", "ms_ssim", "ipd", "fid", "kid", "inception_score"):
        np.testing.assert_array_equal(x[column].to_numpy(), y[column].to_numpy(), err_msg=column)
    info = json.loads((second / "config.json").read_text())
    declared = info["codecs"][0]
    assert declared["produced_outside"] and len(declared["versions"]["precomputed_sha256"]) == 64
    assert "outside cmcbench" in declared["side_information"]["produced_outside"]


def test_ids_that_differ_only_in_characters_a_file_name_cannot_hold_never_share_a_saved_file(tmp_path, photos):
    """猫.png and 犬.png were both saved as _.png (and `my photo.png` as `my_photo.png`, the name of another
    image): the second overwrote the first, and fed back as precomputed, both images were scored against one
    file, with no failed row."""
    names = ["猫.png", "犬.png", "my photo.png", "my_photo.png"]
    for source, name in zip(["a.png", "b.png", "x.png", "x.jpg"], names):
        (photos / source).rename(photos / name)
    first, _ = _run(tmp_path, f"folder:{photos}", ["jpeg quality=20,70"], "first", save_reconstructions=True,
                    save_bitstreams=True)
    saved = sorted(p.name for p in (first / "outputs" / "jpeg" / "20").glob("*.png"))
    assert len(saved) == 4 and "my_photo.png" in saved, saved
    second, outcome = _run(tmp_path, f"folder:{photos}", [f"precomputed path={first / 'outputs' / 'jpeg'} label=jpeg"],
                           "second")
    a, b = (_by_key(load_run(r)[0]) for r in (first, second))
    assert outcome.n_failed == 0
    same = [c for c in SAME if c in a]  # IPD needs Inception, off here
    pd.testing.assert_frame_equal(a[same], b[same], check_exact=True)
    own = tmp_path / "own" / "1"  # a folder of one's own model's outputs, named after the dataset's files
    own.mkdir(parents=True)
    for name in names:
        (own / name).write_bytes((photos / name).read_bytes())
        (own / f"{name}.bin").write_bytes(b"\0" * 100)
    run_dir, outcome = _run(tmp_path, f"folder:{photos}", [f"precomputed path={own.parent} label=own"], "own")
    rows = _by_key(load_run(run_dir)[0])
    assert outcome.n_failed == 0 and np.isinf(rows.psnr).all() and (rows.bits == 800).all()
    (own / "_.png").write_bytes((own / "猫.png").read_bytes())  # a folder an earlier version wrote: one file for two
    for name in ("猫.png", "犬.png"):
        (own / name).unlink()
    run_dir, outcome = _run(tmp_path, f"folder:{photos}", [f"precomputed path={own.parent} label=old"], "old")
    rows = _by_key(load_run(run_dir)[0])
    assert outcome.n_failed == 2 and rows.loc[("猫.png", "1")].error.startswith("no reconstruction of 猫.png")


def test_precomputed_matches_by_id_and_fails_rows_it_cannot_fill(tmp_path, photos):
    src = tmp_path / "elsewhere"
    for setting in ("1", "2"):
        (src / setting).mkdir(parents=True)
    ids = ["a.png", "b.png", "x.png", "x.jpg"]
    for k, image_id in enumerate(ids):
        pixels = np.asarray(Image.open(photos / image_id).convert("RGB"))
        name = image_id if image_id.endswith(".png") else image_id + ".png"
        Image.fromarray(pixels).save(src / "1" / name)  # perfect reconstructions
        if image_id != "b.png":
            (src / "1" / f"{image_id}.bin").write_bytes(b"\0" * (10 + k))
        if image_id == "a.png":
            Image.fromarray(pixels[:-2]).save(src / "2" / "a.png")  # wrong size
    (src / "1" / "stray.png").write_bytes(b"not an image of the dataset")
    with open(src / "bits.csv", "w") as f:
        f.write("image_id,setting,bits\nb.png,1,1234\na.png,2,500\n")
    run_dir, outcome = _run(tmp_path, f"folder:{photos}", [f"precomputed path={src} label=ext"], "pre")
    images, _ = load_run(run_dir)
    rows = _by_key(images)
    assert rows.loc[("a.png", "1")].bits == 80 and rows.loc[("b.png", "1")].bits == 1234  # .bin size, bits.csv
    assert pd.isna(rows.loc[("b.png", "1")].bytes)
    assert rows.loc[("x.jpg", "1")].bits == 8 * 13 and np.isinf(rows.loc[("x.jpg", "1")].psnr)
    assert rows.loc[("a.png", "2")].error.startswith("output check failed: ValueError: decoded image is 176x166")
    assert rows.loc[("b.png", "2")].error.startswith("no reconstruction of b.png for setting 2")
    assert outcome.n_failed == 4
    notes = json.loads((run_dir / "config.json").read_text())["codecs"][0]["notes"]
    assert len(notes) == 1 and "1/stray.png" in notes[0]
    # resize=true accepts the wrong-sized one and records the resize.
    run_dir, _ = _run(tmp_path, f"folder:{photos}", [f"precomputed path={src} label=ext resize=true"], "resized")
    row = _by_key(load_run(run_dir)[0]).loc[("a.png", "2")]
    assert row.status == "ok" and row.bits == 500 and "resized to 176x168" in row.output_notes


ENCODER = """\
import io, sys
from PIL import Image
source, target, quality = sys.argv[1], sys.argv[2], int(sys.argv[3])
Image.open(source).convert("RGB").save(target, format="JPEG", quality=quality, subsampling=2, optimize=False,
                                       progressive=False)
"""
DECODER = """\
import sys, time
from PIL import Image
mode = sys.argv[3] if len(sys.argv) > 3 else "ok"
if mode == "fail":
    sys.stderr.write("cannot decode this\\n"); sys.exit(1)
if mode == "nothing":
    sys.exit(0)
if mode == "sleep":
    time.sleep(30)
Image.open(sys.argv[1]).convert("RGB").save(sys.argv[2])
"""


def test_command_line_jpeg_equals_the_builtin_and_bad_commands_fail_their_rows(tmp_path, photos):
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "enc.py").write_text(ENCODER)
    (tools / "dec.py").write_text(DECODER)
    py = sys.executable
    enc = f"encode='{py} {tools / 'enc.py'} {{input}} {{output}} {{setting}}' suffix=.jpg"
    spec = f"command {enc} decode='{py} {tools / 'dec.py'} {{input}} {{output}}' sweep=25,75 label=cli-jpeg " \
           f"version='{py} --version'"
    bad = [f"command {enc} decode='{py} {tools / 'dec.py'} {{input}} {{output}} {mode}' sweep=25 label=cli-{mode} "
           f"timeout=2" for mode in ("fail", "nothing", "sleep")]
    run_dir, outcome = _run(tmp_path, f"folder:{photos}", ["jpeg quality=25,75", spec, *bad], "cli",
                            save_bitstreams=True)
    images, _ = load_run(run_dir)
    builtin, wrapped = _by_key(images[images.codec == "jpeg"]), _by_key(images[images.codec == "cli-jpeg"])
    same = [c for c in SAME if c != "ipd"]
    pd.testing.assert_frame_equal(builtin[same], wrapped[same], check_exact=True)
    for image_id, setting in builtin.index:
        saved = [(run_dir / "outputs" / c / setting / f"{image_id}.bin").read_bytes() for c in ("jpeg", "cli-jpeg")]
        assert saved[0] == saved[1]
    assert "Python 3" in json.loads(wrapped.codec_versions.iloc[0])["version"]
    files = json.loads(wrapped.codec_versions.iloc[0])["files_sha256"]  # the scripts (and the interpreter) named
    assert {str(tools / "enc.py"), str(tools / "dec.py"), py} <= set(files)
    assert files[str(tools / "dec.py")] == hashlib.sha256(DECODER.encode()).hexdigest()
    errors = images.set_index("codec").error
    assert errors.loc["cli-fail"].str.startswith("decode failed: RuntimeError: decode command exited 1: "
                                                 "cannot decode this").all()
    assert errors.loc["cli-nothing"].str.contains("decode command wrote no image").all()
    assert (errors.loc["cli-sleep"] == "decode command timed out after 2 s (killed)").all()
    assert outcome.n_failed == 3 * 4 and (images[images.codec.isin(["jpeg", "cli-jpeg"])].status == "ok").all()


def test_command_codec_refuses_a_missing_program_before_any_work(tmp_path, photos, capsys):
    code = main(["run", "--dataset", str(photos), "--out", str(tmp_path / "r"), "--metrics", "none", "--lpips", "none",
                 "--no-progress",
                 "--codec", "command encode='no-such-enc {input} {output}' decode='no-such-dec {input} {output}' "
                            "sweep=1"])
    assert code == 1 and "program 'no-such-enc' was not found on PATH" in capsys.readouterr().err


def test_command_codec_refuses_a_relative_script_and_names_its_temporary_folder_as_such(tmp_path, photos,
                                                                                          monkeypatch, capsys):
    """`python mycodec.py ...` from the script's folder failed every row ("can't open file
    '/tmp/cmcbench-workers-.../cmcbench-enc-.../mycodec.py'"), since each call runs in a temporary folder of its
    own: it is refused before any work, naming the path to give. A command's error naming that folder made each row's
    reason unique, so the failures were listed row by row, and no two runs had the same rows."""
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "enc.py").write_text(ENCODER)
    monkeypatch.chdir(tools)
    py = sys.executable
    args = ["run", "--dataset", str(photos), "--out", str(tmp_path / "r"), "--metrics", "none", "--lpips", "none",
            "--no-progress", "--jobs", "1"]
    code = main([*args, "--codec", f"command encode='{py} enc.py {{input}} {{output}} {{setting}}' "
                                   f"decode='{py} enc.py {{input}} {{output}}' sweep=50"])
    err = capsys.readouterr().err
    assert code == 1 and "command encode: 'enc.py' is a path relative to this folder, but each call runs in a " \
                         f"temporary folder of its own; name it as {tools / 'enc.py'}." in err, err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
    failing = f"decode='{py} -c \"import sys; sys.exit(\\\"cannot read \\\" + sys.argv[1])\" {{input}} {{output}}'"
    for name in ("a", "b"):
        assert main([*args, "--name", name, "--codec", f"command encode='{py} {tools / 'enc.py'} {{input}} "
                                                     f"{{output}} {{setting}}' {failing} suffix=.jpg sweep=50"]) == 3
    out = capsys.readouterr().out
    reason = "decode failed: RuntimeError: decode command exited 1: cannot read <its temporary folder>/bitstream.jpg"
    assert f"  command: {reason} (" in out and out.count("command: decode failed") == 2, out
    rows = [load_run(tmp_path / "r" / name)[0].sort_values("image_id") for name in ("a", "b")]
    assert (rows[0].error == reason).all() and list(rows[0].error) == list(rows[1].error)


def test_save_bitstreams_of_a_codec_with_bit_counts_only_says_it_saved_nothing(tmp_path, capsys):
    """A precomputed codec whose bits come from bits.csv has no bitstream to save: --save-bitstreams left its folder
    empty (its manifest saying bitstreams: true) without a word; the run says so, and not of a codec that saved."""
    from PIL import Image

    folder, outputs = tmp_path / "images", tmp_path / "mine"
    (outputs / "1").mkdir(parents=True)
    folder.mkdir()
    lines = ["image_id,setting,bits"]
    for i in range(2):
        Image.fromarray(np.full((32, 48, 3), 60 * i, np.uint8)).save(folder / f"im{i}.png")
        Image.fromarray(np.full((32, 48, 3), 60 * i + 1, np.uint8)).save(outputs / "1" / f"im{i}.png")
        lines.append(f"im{i},1,100")
    (outputs / "bits.csv").write_text("\n".join(lines) + "\n")
    code = main(["run", "--dataset", str(folder), "--out", str(tmp_path / "r"), "--name", "saved", "--metrics",
                 "none", "--lpips", "none", "--no-progress", "--no-plots", "--save-bitstreams", "--codec",
                 f"precomputed path={outputs} label=mine", "--codec", "jpeg quality=50"])
    out = capsys.readouterr().out
    assert code == 0 and "note: --save-bitstreams saved nothing for mine: its rows have bit counts but it produced " \
                         "no bitstream to save (bits.csv gives counts only)." in out, out
    saved = list((tmp_path / "r" / "saved" / "outputs" / "jpeg").rglob("*.bin"))
    assert "nothing for jpeg" not in out and len(saved) == 2


def test_export_then_reference_gives_the_same_bd_rate(tmp_path, photos):
    run_dir, _ = _run(tmp_path, f"folder:{photos}", ["jpeg quality=10,20,40,70,90", "webp quality=10,25,50,75,90"],
                      "exp")
    files = export_compressai(run_dir, tmp_path / "export")
    assert sorted(p.name for p in files) == ["jpeg.json", "webp.json"]
    doc = json.loads((tmp_path / "export" / "webp.json").read_text())
    assert {"bpp", "psnr-rgb", "ms-ssim-rgb"} <= set(doc["results"]) and doc["meta"]["run_id"] == "exp"
    measured = leaderboard.build([run_dir], anchor="jpeg", resamples=0)
    published = leaderboard.build([run_dir], anchor="jpeg", resamples=0, references=[tmp_path / "export" / "webp.json"])
    bd = published.bd.set_index(["codec", "metric"])
    for metric in ("psnr", "ms_ssim"):
        want = measured.bd.set_index(["codec", "metric"]).loc[("webp", metric)]
        got = bd.loc[("webp [published]", metric)]
        assert got.bd_rate == pytest.approx(want.bd_rate, abs=1e-9, rel=0)
    # A published anchor works too, and the published curve's dataset is checked against the run's.
    as_anchor = leaderboard.build([run_dir], anchor="jpeg", resamples=0, references=[tmp_path / "export" / "jpeg.json"])
    assert not any("not the same images" in n for n in as_anchor.notes)
    csv = tmp_path / "paper.csv"
    csv.write_text("codec,bpp,metric,value,dataset,source\nHiFiC,0.2,psnr,27.0,kodak,Mentzer 2020\n"
                   "HiFiC,0.4,psnr,29.5,kodak,Mentzer 2020\nHiFiC,0.2,fid_x,1.0,kodak,Mentzer 2020\n")
    frame, warnings = load_reference(csv)
    assert list(frame.bpp) == [0.2, 0.4] and any("fid_x" in w for w in warnings)
    board = leaderboard.build([run_dir], resamples=0, references=[csv], anchor="HiFiC")
    assert board.anchor == "HiFiC [published]"
    assert any("dataset 'kodak'" in n for n in board.notes)
    assert main(["plot", str(run_dir), "--reference", str(csv), "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "rd_psnr.png").is_file()


def test_a_published_curve_of_other_images_or_pixels_of_the_same_dataset_is_a_warning(tmp_path, photos):
    """An exported curve says how many images it rests on and how they were preprocessed: tabled beside a run of
    the same dataset on fewer images (--limit) or other preprocessing, that is said, as another dataset is."""
    run_dir, _ = _run(tmp_path, f"folder:{photos}", ["jpeg quality=10,40,90"], "all")
    export_compressai(run_dir, tmp_path / "export")
    n = json.loads((tmp_path / "export" / "jpeg.json").read_text())["meta"]["n_images"]
    fewer, _ = _run(tmp_path, f"folder:{photos}", ["webp quality=10,50,90"], "fewer", limit=n - 1)
    resized, _ = _run(tmp_path, f"folder:{photos}", ["webp quality=10,50,90"], "resized", preprocess="resize-64")
    reference = [tmp_path / "export" / "jpeg.json"]

    def warned(run):
        return [w for w in leaderboard.build([run], anchor="jpeg [published]", resamples=0, references=reference).notes
                if w.startswith("Warning")]

    assert warned(run_dir) == []
    dataset = f"folder:{photos}"
    assert warned(fewer) == [f"Warning: published curve 'jpeg' rests on {n} images of {dataset!r}, the run on {n - 1}: "
                             "not the same images."]
    assert warned(resized) == ["Warning: published curve 'jpeg' was measured with preprocessing 'none', the run with "
                               "resize-64: not the same pixels."]


def test_a_run_whose_every_row_fails_is_still_a_run(tmp_path, photos, capsys):
    out = tmp_path / "r"
    code = main(["run", "--dataset", str(photos), "--out", str(out), "--name", "bad", "--metrics", "none",
                 "--lpips", "none", "--caption-embedder", "none", "--no-progress", "--codec",
                 "codecs_for_tests:AlwaysRaises"])
    printed = capsys.readouterr().out
    assert code == EXIT_FAILED_ROWS
    assert "encode failed: RuntimeError: this encoder always fails" in printed
    run_dir = out / "bad"
    images, summary = load_run(run_dir)
    assert len(images) == 8 and (summary.n_ok == 0).all() and (summary.n_failed == 4).all()
    assert summary.bpp.isna().all() and summary.failure_reasons.str.contains("always fails").all()
    assert main(["plot", str(run_dir)]) == 0
    assert main(["leaderboard", str(run_dir), "--bootstrap", "10"]) == 0
    assert main(["report", str(run_dir), "--bootstrap", "10"]) == 0
    assert "4 x encode failed" in (run_dir / "report" / "report.html").read_text()
    assert main(["run", "--resume", str(run_dir), "--no-progress"]) == EXIT_FAILED_ROWS
    assert "Traceback" not in capsys.readouterr().err


def test_read_parquet_sees_the_columns_load_run_does(tmp_path):
    run_dir, _ = _run(tmp_path, "sample", ["jpeg quality=50", "cmc max_words=4,8", "jpeg bpp=0.5 label=jpeg-rm"],
                      "cols", limit=3, chunk_size=1)
    images, _ = load_run(run_dir)
    direct = pd.read_parquet(run_dir / "images")
    assert list(direct.columns) == list(images.columns)
    assert {"caption", "caption_bleu4", "rate_match", "produced_outside"} <= set(direct.columns)
    declared = [name for name, _ in json.loads((run_dir / "config.json").read_text())["schema"]]
    for path in shard_files(run_dir):
        assert pq.read_schema(path).names == declared


def test_a_metric_is_one_registry_entry_and_unknown_names_are_errors(tmp_path, photos):
    from metrics.psnr import psnr_y

    # PSNR-Y against an independent pixel-by-pixel computation of BT.601 studio-range luma.
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)
    ya = [[16 + (65.481 * int(p[0]) + 128.553 * int(p[1]) + 24.966 * int(p[2])) / 255 for p in row] for row in a]
    yb = [[16 + (65.481 * int(p[0]) + 128.553 * int(p[1]) + 24.966 * int(p[2])) / 255 for p in row] for row in b]
    mse = np.mean((np.array(ya) - np.array(yb)) ** 2)
    assert psnr_y(a, b) == pytest.approx(10 * np.log10(255 ** 2 / mse), rel=1e-12)
    # Off by default; --add-metric turns it on with no change to the runner, and it is plotted and tabled.
    run_dir, _ = _run(tmp_path, f"folder:{photos}", ["jpeg quality=30,80"], "y", add_metrics=["psnr_y"])
    images, summary = load_run(run_dir)
    assert images.psnr_y.notna().all() and (images.psnr_y != images.psnr).all()
    assert "psnr_y" in leaderboard.build([run_dir], resamples=0).metrics
    plain, _ = _run(tmp_path, f"folder:{photos}", ["jpeg quality=30"], "plain")
    assert "psnr_y" not in load_run(plain)[0]
    with pytest.raises(ValueError, match="Unknown metric 'psnr-why'"):
        registry.higher_is_better("psnr-why")
    with pytest.raises(ValueError, match="Unknown metric"):
        create_run(RunConfig(dataset=f"folder:{photos}", codecs=[parse_codec_spec("jpeg")],
                                           add_metrics=["nope"], **NO_NETWORKS), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_codec_specs_are_split_like_a_shell():
    spec = parse_codec_spec("command encode='enc --q {setting} {input} {output}' decode=\"dec {input} {output}\" "
                            "sweep=1,2 label=mine")
    assert spec.options["encode"] == "enc --q {setting} {input} {output}" and spec.settings == (1, 2)
    with pytest.raises(ValueError, match="quote values"):
        parse_codec_spec("command encode='unclosed")
    with pytest.raises(ValueError, match=r"must contain \{output\}"):
        parse_codec_spec("command encode='enc {input}' decode='dec {input} {output}' sweep=1")


def test_the_saved_layout_documents_itself(tmp_path, photos):
    run_dir, _ = _run(tmp_path, f"folder:{photos}", ["jpeg2000 ratio=40,20"], "m", save_reconstructions=True)
    manifest = json.loads((run_dir / "outputs" / "jpeg2000" / "manifest.json").read_text())
    assert manifest["settings"] == ["40", "20"] and manifest["codec"] == "jpeg2000"
    assert parse_codec_spec(f"precomputed path={run_dir / 'outputs' / 'jpeg2000'}").settings == (40, 20)
    script = textwrap.dedent("""\
        import pandas as pd, sys
        print(sorted(pd.read_parquet(sys.argv[1]).setting_label.unique()))
    """)
    done = subprocess.run([sys.executable, "-c", script, str(run_dir / "images")], capture_output=True, text=True)
    assert done.stdout.strip() == "['20', '40']"


def test_a_codec_with_a_model_per_setting_loads_each_model_once_per_run(tmp_path):
    """Setting by setting, across chunks and with other codecs in the pool: each setting's model is loaded
    once by the encoder and once by the decoder; rows and bits are those of the one-image protocol."""
    log = tmp_path / "loads.log"
    config = RunConfig(dataset="sample", limit=10, chunk_size=3, inception={"enabled": False},
                       caption_embedder="none", image_metrics={"ms_ssim": False, "lpips": "none"},
                       codecs=[parse_codec_spec(f"codecs_for_tests:PerSettingModel log={log}"),
                               parse_codec_spec("jpeg quality=50")])
    run_dir = create_run(config, tmp_path / "runs", "m", progress=False)
    assert execute(run_dir, jobs=2, progress=False).n_failed == 0
    loads = [line.split()[:2] for line in log.read_text().splitlines()]
    assert sorted(loads) == sorted([role, str(s)] for role in ("encoder", "decoder") for s in (4, 16, 64))
    assert [s for role, s in loads if role == "encoder"] == ["4", "16", "64"]  # setting-major
    images, _ = load_run(run_dir)
    mine = images[images.codec == "persetting"].sort_values(["image_id", "setting"])
    assert len(mine) == 30 and (mine.bytes == 1 + 4 + 256 * 256 * 3).all()
    codec = parse_codec_spec("codecs_for_tests:PerSettingModel").build()
    from benchmark.data.datasets import open_dataset

    ds = open_dataset("sample")
    for row in mine.head(6).itertuples():
        pixels = ds.read(ds.records[row.image_index]).pixels
        one = codec.decode(codec.encode(pixels, int(row.setting)))  # the one-image protocol
        assert row.psnr == pytest.approx(float(psnr(pixels, one)))


def test_scoring_beside_a_gpu_codec_gives_the_rows_of_scoring_after_it(tmp_path, monkeypatch):
    """A codec that wants the GPU is scored in a thread while it produces its next batch; the rows (their order,
    bits and every metric) are those of the same codec scored in its own thread, after each batch."""
    import threading

    from benchmark.run.scoring import Scorer

    threads = []
    score = Scorer.score

    def recording(self, *args, **kwargs):
        threads.append(threading.current_thread() is threading.main_thread())
        return score(self, *args, **kwargs)

    monkeypatch.setattr(Scorer, "score", recording)
    runs = {}
    for gpu in (True, False):
        threads.clear()
        config = RunConfig(dataset="sample", limit=10, chunk_size=4, inception={"enabled": False},
                           caption_embedder="none", save_reconstructions=True,
                           codecs=[parse_codec_spec(f"codecs_for_tests:OnDevice gpu={gpu} label=dev")])
        runs[gpu] = create_run(config, tmp_path / "runs", f"gpu-{gpu}", progress=False)
        assert execute(runs[gpu], jobs=1, progress=False).n_failed == 0
        assert len(threads) == 20 and set(threads) == {not gpu}  # scored beside the codec, or on its thread
    beside, after = (load_run(runs[g])[0] for g in (True, False))
    varying = {"run_id", "created", "encode_s", "decode_s", "config_hash", "codec_options"}
    for column in beside.columns.difference(varying):
        assert beside[column].equals(after[column]), column
    assert beside.ms_ssim.notna().all() and beside.psnr.nunique() > 1


def test_best_of_4_pays_exactly_2_bits_and_is_never_worse(tmp_path):
    config = RunConfig(dataset="sample", limit=6, inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"}, save_bitstreams=True,
                       codecs=[parse_codec_spec("codecs_for_tests:SeededNoise quality=30,80"),
                               parse_codec_spec("codecs_for_tests:SeededNoise quality=30,80 best_of=4")])
    run_dir = create_run(config, tmp_path / "runs", "b", progress=False)
    assert execute(run_dir, jobs=2, progress=False).n_failed == 0
    images, _ = load_run(run_dir)
    key = ["image_id", "setting_index"]
    one = images[images.codec == "seedednoise"].set_index(key).sort_index()
    four = images[images.codec == "seedednoise-best4"].set_index(key).sort_index()
    assert len(one) == len(four) == 12
    assert ((four.bits - one.bits) == 2).all() and ((four.bytes - one.bytes) == 1).all()  # the index byte, 2 bits
    assert (four.psnr >= one.psnr).all() and (four.psnr > one.psnr).any()
    assert set(four.best_of_index) <= {0, 1, 2, 3} and four.best_of_index.nunique() > 1
    info = json.loads((run_dir / "config.json").read_text())
    assert info["codecs"][1]["side_information"]["best_of"]["index_bits"] == 2
    # the decoder gets the bytes alone: the index inside them picks its seed
    codec = parse_codec_spec("codecs_for_tests:SeededNoise quality=30,80 best_of=4").build()
    row = four.reset_index().iloc[0]
    data = (run_dir / "outputs" / "seedednoise-best4" / "30" / f"{row.image_id}.bin").read_bytes()
    from benchmark.data.datasets import open_dataset

    ds = open_dataset("sample")
    pixels = ds.read(ds.records[int(row.image_index)]).pixels
    assert data[-1] == row.best_of_index and psnr(pixels, codec.decode(data)) == pytest.approx(row.psnr)


@pytest.mark.parametrize("spec, message", [
    ("jpeg quality=50 best_of=4", "jpeg is deterministic"),
    ("codecs_for_tests:SeededNoise best_of=4 select=lpips", "select=psnr|psnr_y|ms_ssim"),
    ("codecs_for_tests:SeededNoise best_of=2.5", "whole number"),
    ("codecs_for_tests:SeededNoise select=ms_ssim", "select= goes with best_of"),
])
def test_best_of_mistakes_are_one_sentence(spec, message):
    with pytest.raises(ValueError, match=message.replace("|", r"\|")):
        parse_codec_spec(spec)


def test_plan_gives_a_batched_codec_chunks_that_hold_a_batch():
    """Small datasets get one-image chunks; a batched codec's chunks still hold a whole batch (else its batches
    could never fill), and a codec with a model per setting is planned setting by setting."""
    from benchmark.run.record import RunRecord
    from benchmark.run.runner import plan

    info = {"config": {"chunk_size": 1, "codec_batch": None},
            "codecs": [{"label": "jpeg", "settings": [1, 2]},
                       {"label": "cmc", "settings": [4, 8], "batch_size": 8, "batched": True},
                       {"label": "m", "settings": [1, 2], "model_per_setting": True, "batch_size": 4, "batched": True},
                       {"label": "gpu", "settings": [1], "batch_size": 2, "batched": True, "wants_gpu": True}]}
    tasks = plan(RunRecord.from_json(info), 10)
    sizes = {c: sorted({t.stop - t.start for t in tasks if t.codec == c}) for c in ("jpeg", "cmc", "m", "gpu")}
    assert sizes == {"jpeg": [1], "cmc": [2, 8], "m": [2, 4], "gpu": [2, 8]}  # on the GPU: 4 batches, to overlap
    assert [(t.settings, t.start) for t in tasks if t.codec == "m"] == [((s,), a) for s in (0, 1) for a in (0, 4, 8)]
    assert len({(t.codec, t.chunk) for t in tasks}) == len(tasks)  # every shard its own
    info["config"]["codec_batch"] = 3
    again = plan(RunRecord.from_json(info), 10)  # --codec-batch: every batched codec's batch, the others unchanged
    assert {c: sorted({t.stop - t.start for t in again if t.codec == c}) for c in ("jpeg", "cmc", "gpu")} == \
        {"jpeg": [1], "cmc": [1, 3], "gpu": [10]}
    for c in info["codecs"]:
        c["task_images"] = 5  # what config.json fixed when the run was created wins over today's rule
    assert {t.stop - t.start for t in plan(RunRecord.from_json(info), 10)} == {5}


def test_failure_reasons_on_the_console_name_codec_and_image_and_count_the_rest(tmp_path, photos, capsys):
    levels = ",".join(str(k) for k in range(1, 24))  # 23 reasons, more than the 20 printed
    code = main(["run", "--dataset", str(photos), "--out", str(tmp_path / "r"), "--name", "many", "--metrics", "none",
                 "--no-progress", "--no-plots", "--codec", f"codecs_for_tests:FailsBySetting level={levels}"])
    printed = capsys.readouterr().out
    assert code == EXIT_FAILED_ROWS
    lines = [line for line in printed.splitlines() if "no encoder for level" in line]
    assert len(lines) == 20 and all(line.split()[0] == "4" for line in lines)  # each reason failed all 4 images
    said = " failsbysetting: encode failed: RuntimeError: no encoder for level "
    assert all(said in line and line.endswith("(a.png)") for line in lines), lines
    assert f"... and 3 more reasons (12 rows): the status and error columns of {tmp_path / 'r' / 'many' / 'images'}" \
        in printed


def test_a_reason_shared_by_images_is_counted_once_with_the_image_as_a_placeholder(tmp_path, photos, capsys):
    """A precomputed folder with one image's reconstructions: the other three images' "no reconstruction of
    b.png" ... are one reason per setting, counted 3 times, on the console and in the summary."""
    for label in ("1", "2"):
        (tmp_path / "recon" / label).mkdir(parents=True)
        Image.open(photos / "a.png").save(tmp_path / "recon" / label / "a.png")
        (tmp_path / "recon" / label / "a.png.bin").write_bytes(b"\0" * 10)
    code = main(["run", "--dataset", str(photos), "--out", str(tmp_path / "r"), "--name", "some", "--metrics", "none",
                 "--no-progress", "--no-plots", "--codec", f"precomputed path={tmp_path / 'recon'} label=ext"])
    printed = capsys.readouterr().out
    assert code == EXIT_FAILED_ROWS
    lines = [line.split() for line in printed.splitlines() if "no reconstruction of" in line]
    assert [(line[0], line[5], line[-1]) for line in lines] == [("3", "<image>", "(b.png)")] * 2, lines
    _, summary = load_run(tmp_path / "r" / "some")
    for label, reasons in zip(summary.setting_label, summary.failure_reasons):
        assert reasons == (f"3 x no reconstruction of <image> for setting {label}: no file named after it (.png "
                           f"or .ppm) in {tmp_path / 'recon' / label}"), reasons
    from benchmark.run.results import failure_reason

    assert failure_reason("no reconstruction of 1.png in /x/1.png", "1.png") == \
        "no reconstruction of <image> in /x/<image>"
    assert failure_reason("1.png differs from 11.png and 21.png.bak", "1.png") == \
        "<image> differs from 11.png and 21.png.bak"  # the whole id only
    assert failure_reason("decode failed: cannot identify image file <_io.BytesIO object at 0x7f1e948d41d0>",
                          "b.png") == "decode failed: cannot identify image file <_io.BytesIO object>"  # new each time


def test_a_relative_precomputed_path_is_stored_absolute_so_workers_and_resume_elsewhere_find_it(tmp_path, monkeypatch):
    (tmp_path / "outs" / "1").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    spec = parse_codec_spec("precomputed path=outs label=ext")
    assert spec.options["path"] == str(tmp_path / "outs")
    monkeypatch.chdir(tmp_path / "outs")  # a worker, or a --resume, started in another folder
    assert spec.build().root == tmp_path / "outs"


def test_a_run_on_a_relative_folder_opens_the_same_folder_for_its_codecs_from_anywhere(tmp_path, photos,
                                                                                         monkeypatch):
    """Codecs that open the dataset (precomputed matches ids, CMC reads its training split) get the folder as the
    run resolved it: a worker or a --resume in another folder or home opens the same images."""
    from benchmark.run.config import codec_context

    src = tmp_path / "recon" / "1"
    src.mkdir(parents=True)
    for name in ("a.png", "b.png", "x.png", "x.jpg"):
        Image.open(photos / name).convert("RGB").save(src / (name if name.endswith(".png") else name + ".png"))
        (src / f"{name}.bin").write_bytes(b"\0" * 10)
    monkeypatch.chdir(tmp_path)
    run_dir, outcome = _run(tmp_path, "photos", ["precomputed path=recon label=ext"], "relative")
    assert outcome.n_failed == 0
    monkeypatch.chdir(photos)  # elsewhere: 'photos' means nothing here
    info = json.loads((run_dir / "config.json").read_text())
    context = codec_context(RunConfig.from_json(info["config"]), info["dataset"]["split"], info["dataset"])
    assert context["dataset"] == f"folder:{photos}"
    codec = parse_codec_spec(f"precomputed path={tmp_path / 'recon'}").build()
    codec.setup(context)  # opened the dataset by the context's spec, from another folder
    assert {"x.png", "x.bin"} <= codec.shared  # x.jpg's stem names, which x.png has too: read from its images


def test_a_published_curve_from_an_export_keeps_its_settings_names(tmp_path, photos):
    """An exported curve read back with --reference listed its settings as p0, p1, p2 in the every-setting table; the
    export records each point's setting, and a file without them (CompressAI's own) keeps p0, p1, ..."""
    run_dir, _ = _run(tmp_path, f"folder:{photos}", ["jpeg quality=10,40,90", "webp quality=20,80"], "named")
    export_compressai(run_dir, tmp_path / "export")
    bare = json.loads((tmp_path / "export" / "webp.json").read_text())
    del bare["meta"]
    (tmp_path / "bare.json").write_text(json.dumps({**bare, "name": "bare"}))
    board = leaderboard.build([run_dir], anchor="jpeg", resamples=0,
                              references=[tmp_path / "export" / "webp.json", tmp_path / "bare.json"])
    settings = board.settings[board.settings.metric == "psnr"].set_index("codec").setting
    assert list(settings["webp [published]"]) == ["20", "80"] == list(settings["webp"])
    assert list(settings["bare [published]"]) == ["p0", "p1"]
