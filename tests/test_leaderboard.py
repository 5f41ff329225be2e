"""Curves, BD, bootstrap intervals, leaderboards, compare and report, on result tables with known answers."""

import contextlib
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from benchmark.analysis import bootstrap, leaderboard, tracker_files
from benchmark.cli import EXIT_REGRESSION, main
from benchmark.codecs.codec_spec import parse_codec_spec
from benchmark.analysis.curves import Curve, bd_metric, bd_rate, compare_curves
from benchmark.run.results import load_run
from benchmark.run.runner import RunConfig, create_run, execute


def _jpeg_outputs(folder, recon, qualities, names):
    """A precomputed codec's folder made outside cmcbench: Pillow's JPEG of each named image at each quality, as
    RECON/<quality>/<name>.bin (its bits) and RECON/<quality>/<name> (its pixels)."""
    import io

    from PIL import Image

    for quality in qualities:
        (recon / str(quality)).mkdir(parents=True, exist_ok=True)
        for name in names:
            buf = io.BytesIO()
            Image.open(folder / name).save(buf, format="JPEG", quality=quality)
            (recon / str(quality) / f"{name}.bin").write_bytes(buf.getvalue())
            Image.open(io.BytesIO(buf.getvalue())).save(recon / str(quality) / name)


def _curve(codec, metric, bpp, value):
    return Curve(codec, metric, np.asarray(bpp, float), np.asarray(value, float))


ANCHOR_BPP = np.array([0.12, 0.25, 0.5, 1.0, 2.0])
ANCHOR_PSNR = 25 + 4 * np.log2(ANCHOR_BPP / 0.12)  # a smooth concave-ish R-D curve


def test_curve_shifted_by_a_known_rate_factor_gives_that_bd_rate():
    anchor = _curve("a", "psnr", ANCHOR_BPP, ANCHOR_PSNR)
    for factor in (0.8, 0.5, 1.25):
        test = _curve("t", "psnr", ANCHOR_BPP * factor, ANCHOR_PSNR)
        assert bd_rate(anchor, test) == pytest.approx((factor - 1) * 100, abs=1e-9)
    # A lower-is-better metric (FID-like) shifted the same way gives the same answer, and BD-FID has FID's sign.
    fid = 80 - 10 * np.log2(ANCHOR_BPP / 0.12)
    a, t = _curve("a", "fid", ANCHOR_BPP, fid), _curve("t", "fid", ANCHOR_BPP * 0.8, fid)
    assert bd_rate(a, t) == pytest.approx(-20, abs=1e-9)
    assert bd_metric(a, t) < 0  # fewer bits for the same FID means a lower FID at equal rate
    # A curve better by a constant 1.5 dB at every rate gives BD-PSNR 1.5 and a negative BD-rate.
    up = _curve("t", "psnr", ANCHOR_BPP, ANCHOR_PSNR + 1.5)
    assert bd_metric(anchor, up) == pytest.approx(1.5, abs=1e-9)
    assert bd_rate(anchor, up) < 0


def test_bd_agrees_with_the_bjontegaard_package_on_real_points(tmp_path, natural_images):
    import bjontegaard

    config = RunConfig(dataset=f"folder:{natural_images}", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"},
                       codecs=[parse_codec_spec("jpeg quality=10,20,40,60,80"),
                               parse_codec_spec("webp quality=10,20,40,60,80")])
    run_dir = create_run(config, tmp_path / "runs", "bd", progress=False)
    execute(run_dir, jobs=1, progress=False)
    board = leaderboard.build([run_dir], resamples=0)
    _, summary = load_run(run_dir)
    j, w = summary[summary.codec == "jpeg"].sort_values("bpp"), summary[summary.codec == "webp"].sort_values("bpp")
    expected = bjontegaard.bd_rate(j.bpp, j.psnr, w.bpp, w.psnr, method="akima", require_matching_points=False)
    row = board.bd[(board.bd.codec == "webp") & (board.bd.metric == "psnr")].iloc[0]
    assert row.bd_rate == pytest.approx(expected, rel=1e-12)
    assert row.bd_metric == pytest.approx(bjontegaard.bd_psnr(j.bpp, j.psnr, w.bpp, w.psnr, method="akima",
                                                              require_matching_points=False), rel=1e-12)


def test_a_leaderboard_without_resamples_claims_no_intervals_in_titles_or_captions(tmp_path, natural_images):
    """--bootstrap 0: the every-setting table was titled "with bootstrap intervals" and the LaTeX caption said
    "Cells: value over its bootstrap interval" over cells that have none."""
    config = RunConfig(dataset=f"folder:{natural_images}", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"},
                       codecs=[parse_codec_spec("jpeg quality=10,40,80"), parse_codec_spec("webp quality=10,40,80")])
    run_dir = create_run(config, tmp_path / "runs", "r", progress=False)
    execute(run_dir, jobs=1, progress=False)
    for resamples, claimed in ((0, False), (20, True)):
        board = leaderboard.build([run_dir], resamples=resamples, rates=(1.0,))
        for fmt in ("md", "html", "tex"):
            text = leaderboard.render(board, fmt)
            assert ("bootstrap interval" in text) is claimed and "Every setting" in text, (fmt, resamples)


def test_a_misspelt_anchor_gets_a_did_you_mean():
    summary = pd.DataFrame({"codec": ["avif", "jpeg", "jpegxl"], "codec_target": ["avif", "jpeg", "jpegxl"]})
    with pytest.raises(ValueError, match=r"^Anchor codec 'jpg' is not in these runs; did you mean 'jpeg'\? codecs: "
                                         r"avif, jpeg, jpegxl\.$"):
        leaderboard.pick_anchor(summary, "jpg")
    assert leaderboard.pick_anchor(summary, None) == "jpeg"


def test_a_confidence_level_outside_0_1_is_one_sentence_before_any_work(tmp_path, capsys):
    """--level 95 (a percentage) ended, after the resamples were drawn, in numpy's 'Percentiles must be in the
    range [0, 100]'."""
    for command in (["leaderboard", str(tmp_path)], ["compare", str(tmp_path), str(tmp_path)],
                    ["report", str(tmp_path)], ["history", str(tmp_path)]):
        assert main([*command, "--level", "95"]) == 1
        assert capsys.readouterr().err == "error: --level 95: a confidence level lies between 0 and 1, e.g. 0.95.\n"


def test_no_overlap_says_so_and_gives_what_exists():
    anchor = _curve("jpeg", "fid", ANCHOR_BPP, 80 - 10 * np.log2(ANCHOR_BPP / 0.12))
    text = _curve("cmc", "fid", [0.003, 0.004, 0.005], [70, 65, 60])  # far below JPEG's rates
    result = compare_curves(anchor, text)
    # FID ranges overlap, so BD-rate (averaged over equal FID) exists; BD-FID (over equal rate) does not.
    assert result["bd_rate"] < -90
    assert "rate ranges do not overlap" in result["note"]
    assert math.isnan(result["bd_metric"])
    assert "anchor_at_test_rate" not in result  # JPEG has no value at 0.004 bpp: nothing is extrapolated
    savings = result["rate_saving_at_equal_metric"]  # but JPEG's FID range covers 60-70
    bpp, fid_value, saving = savings[-1]
    jpeg_rate = anchor.rate_at(fid_value)
    assert saving == pytest.approx(1 - 0.005 / jpeg_rate) and saving > 0.9
    assert math.isnan(anchor.at_rate(0.004)) and math.isnan(anchor.at_rate(3.0))



def test_a_codec_that_needs_more_bits_at_equal_metric_is_told_so_not_negative_fewer_bits():
    """The fallback note read '36.67 at 0.499 bpp: -130.8% fewer bits than mywebp' for a codec that needed 2.3
    times the anchor's bits."""
    anchor = _curve("mine", "psnr", [0.1, 0.2, 0.3], [34, 36, 38])
    costly = _curve("jpeg", "psnr", [0.5, 0.8], [36, 37])  # rates never meet; psnr 36 costs 0.5 bpp, not 0.2
    result = compare_curves(anchor, costly)
    text = leaderboard._fallback_text(result, "mine", "psnr")
    assert "36.00 at 0.5 bpp: 150.0% more bits than mine" in text and "-" not in text, text
    cheap = leaderboard._fallback_text(compare_curves(costly, anchor), "jpeg", "psnr")
    assert "36.00 at 0.2 bpp: 60.0% fewer bits than jpeg" in cheap, cheap

def test_a_bd_rate_of_curves_whose_rates_never_meet_is_judged_along_the_metric():
    """BD-rate averages along the metric, BD-metric along log rate, and each is as sound as the share of its own
    axis both curves cover (the bjontegaard package checks the same): a text codec far below JPEG's rates whose FID
    spans most of JPEG's has a BD-rate without †, though its rates never meet JPEG's."""
    import warnings

    import bjontegaard

    anchor = _curve("jpeg", "fid", ANCHOR_BPP, 80 - 10 * np.log2(ANCHOR_BPP / 0.12))  # FID 80 down to 39.4
    for fids, dagger in (([78, 60, 42], ""), ([70, 65, 60], "†")):
        text = _curve("cmc", "fid", [0.003, 0.004, 0.005], fids)
        result = compare_curves(anchor, text)
        assert result["rate_overlap"] == 0 and math.isnan(result["bd_metric"]) and result["bd_rate"] < -90
        assert result["overlap"] == result["metric_overlap"]
        assert leaderboard._daggers(result) == (dagger, "")
        with warnings.catch_warnings(record=True) as caught:  # the package's own check, on the metric axis
            warnings.simplefilter("always")
            bjontegaard.bd_rate(anchor.bpp, -anchor.value, text.bpp, -text.value, method="akima",
                                require_matching_points=False, min_overlap=0.5)
        assert any("Insufficient curve overlap" in str(w.message) for w in caught) == (dagger == "†")
    assert result["note"] == ("rate ranges do not overlap; partial overlap (fid 25%): BD-rate covers only the shared "
                              "range")


def test_value_at_rate_interpolates_never_extrapolates():
    c = _curve("a", "psnr", ANCHOR_BPP, ANCHOR_PSNR)
    assert c.at_rate(0.25) == pytest.approx(ANCHOR_PSNR[1])
    assert ANCHOR_PSNR[1] < c.at_rate(0.35) < ANCHOR_PSNR[2]
    assert math.isnan(c.at_rate(0.1)) and math.isnan(c.at_rate(2.5))


@pytest.fixture(scope="module")
def noisy_runs(hermetic_module, tmp_path_factory, random_inception_weights):
    """BASE and a NEW whose codec adds more noise (worse PSNR and FID), plus a copy of BASE; 12 images."""
    root = tmp_path_factory.mktemp("cmp")
    runs = {}
    for name, sigma in (("base", 2.0), ("same", 2.0), ("worse", 12.0)):
        config = RunConfig(dataset="sample:12", split="all", caption_embedder="none",
                           image_metrics={"ms_ssim": False, "lpips": "none"},
                           inception={"enabled": True, "weights": str(random_inception_weights), "device": "cpu",
                                      "batch_size": 16, "isc_splits": 2, "kid_subsets": 10, "kid_subset_size": 6,
                                      "seed": 2020, "patch_fid": False},
                           codecs=[parse_codec_spec(f"codecs_for_tests:Noisy level=1,2 sigma={sigma} label=noisy"),
                                   parse_codec_spec("jpeg quality=20,50,80")])
        runs[name] = create_run(config, root / "runs", name, progress=False)
        execute(runs[name], jobs=1, progress=False)
    return runs


def test_the_bootstrap_reads_one_settings_features_at_a_time(noisy_runs, monkeypatch):
    """A run's settings read their stored features when a computation needs them and drop them after, so the
    bootstrap (and compare) hold one setting's at a time however many a run has; the resamples are the same
    numbers as with every setting's features in memory from the start."""
    from benchmark.analysis import compare

    read = bootstrap.load_settings
    loaded: list[dict] = []
    monkeypatch.setattr(bootstrap, "load_settings", lambda *a, **k: loaded.append(read(*a, **k)) or loaded[-1])
    peak = []
    set_metrics = bootstrap.SettingData._set_metrics

    def counting(self, *a):
        peak.append(sum(d.pool is not None for sets in loaded for d in sets.values()))
        return set_metrics(self, *a)

    monkeypatch.setattr(bootstrap.SettingData, "_set_metrics", counting)
    lazy = bootstrap.run_resamples(noisy_runs["base"], 20, seed=3)
    assert len(lazy.settings) == 5 and peak and max(peak) == 1
    assert all(d.pool is None for d in loaded[0].values())  # nothing left behind
    peak.clear()
    compare.compare_runs(noisy_runs["base"], noisy_runs["worse"], resamples=10)
    assert len(loaded) == 3 and peak and max(peak) <= 1  # it computes on copies of the shared images

    eager = read(noisy_runs["base"])
    loaded[:] = [eager]
    monkeypatch.setattr(bootstrap, "load_settings", lambda *a, **k: eager)
    bootstrap._RESAMPLES_CACHE.clear()
    peak.clear()
    with contextlib.ExitStack() as stack:
        for data in eager.values():
            stack.enter_context(data.held())
        held = bootstrap.run_resamples(noisy_runs["base"], 20, seed=3)
    assert max(peak) == 5  # the count sees settings held together
    assert lazy.values.keys() == held.values.keys()
    for key, values in lazy.values.items():
        assert values.keys() == held.values[key].keys() and "fid" in values
        for metric in values:
            np.testing.assert_array_equal(values[metric], held.values[key][metric])


def test_bootstrap_intervals_are_seeded_and_bracket_the_estimates(noisy_runs):
    run = noisy_runs["base"]
    ci = bootstrap.intervals(run, resamples=50, seed=1, use_cache=False)
    again = bootstrap.intervals(run, resamples=50, seed=1, use_cache=False)
    pd.testing.assert_frame_equal(ci, again)
    other = bootstrap.intervals(run, resamples=50, seed=2, use_cache=False)
    assert not np.allclose(ci.low, other.low)
    assert {"bpp", "psnr", "ipd", "fid", "kid", "inception_score"} <= set(ci.metric)
    _, summary = load_run(run)
    merged = ci.merge(summary.melt(id_vars=["codec", "setting_index"],
                                   value_vars=["psnr", "fid", "ipd", "bpp", "kid", "inception_score"],
                                   var_name="metric", value_name="estimate"), on=["codec", "setting_index", "metric"])
    assert len(merged) >= 25 and set(merged.metric) == {"psnr", "fid", "ipd", "bpp", "kid", "inception_score"}
    assert (merged.low <= merged.estimate + 1e-9).all() and (merged.estimate <= merged.high + 1e-9).all()
    # A resample that is the identity recomputes the setting's FID from the same stored features, with the
    # summary's own exact function: the same number (to round-off from the images' order).
    from metrics.fid import fid

    data = bootstrap.load_settings(run)[("noisy", "1")]
    fid_identity = data.evaluate(np.arange(len(data.image_ids))[None])["fid"][0]
    assert data.pool is None  # read when a computation needs them, dropped after
    with data.held():
        assert fid_identity == fid(data.pool, data.ref_pool)
    assert data.pool is None and data.ref_pool is None
    summary_fid = float(summary[(summary.codec == "noisy") & (summary.setting_index == 0)].fid.iloc[0])
    assert fid_identity == pytest.approx(summary_fid, rel=1e-9)


def test_compare_run_with_itself_passes_and_worse_fails(noisy_runs, tmp_path, capsys):
    base, same, worse = noisy_runs["base"], noisy_runs["same"], noisy_runs["worse"]
    assert main(["compare", str(base), str(base), "--bootstrap", "50"]) == 0
    assert main(["compare", str(base), str(same), "--bootstrap", "50"]) == 0
    capsys.readouterr()
    out_json = tmp_path / "cmp.json"
    code = main(["compare", str(base), str(worse), "--bootstrap", "50", "--json", str(out_json)])
    text = capsys.readouterr().out
    assert code == EXIT_REGRESSION
    assert "REGRESSION" in text and "fid (noisy" in text and "psnr (noisy" in text
    assert "codec noisy: options differ" in text  # the runs differ in how the codec was configured
    report = json.loads(out_json.read_text())
    worse_rows = [r for r in report["rows"] if r["verdict"] == "worse"]
    assert report["regressed"] and {r["metric"] for r in worse_rows} >= {"psnr", "fid"}
    assert all(r["codec"] == "noisy" for r in worse_rows)  # JPEG did not change
    fid_row = next(r for r in worse_rows if r["metric"] == "fid" and r["setting"] == "2")
    assert fid_row["direction"] == "lower is better" and fid_row["change"] > 0
    assert fid_row["low"] <= fid_row["change"] <= fid_row["high"] and fid_row["significant"] is True
    assert {c["bd_method"] for c in report["curves"]} == {"akima"}  # the default, recorded with each BD number
    # Another interpolation: recorded with every curve verdict and named in the printed table.
    assert main(["compare", str(base), str(worse), "--bootstrap", "0", "--bd-method", "pchip", "--json", "-"]) \
        == EXIT_REGRESSION
    pchip = json.loads(capsys.readouterr().out)
    assert {c["bd_method"] for c in pchip["curves"]} == {"pchip"}
    assert [(c["codec"], c["metric"]) for c in pchip["curves"]] == [(c["codec"], c["metric"]) for c in report["curves"]]
    main(["compare", str(base), str(worse), "--bootstrap", "0", "--bd-method", "cubic"])
    printed = capsys.readouterr().out
    assert "BD by cubic interpolation" in printed
    # without resamples the regressions are named with their BD and no interval, and each detail says why
    assert "REGRESSION" in printed and "nan" not in printed and "no interval: no resamples (--bootstrap 0)" in printed
    # Generous tolerances turn the same comparison into a pass.
    assert main(["compare", str(base), str(worse), "--bootstrap", "0", "--tolerance", "fid=1e9,kid=1e9,ipd=1e9",
                 "--tolerance", "psnr=1e9,inception_score=1e9,bpp=100%"]) == 0


def test_leaderboard_formats_and_report(noisy_runs, tmp_path, capsys):
    run = noisy_runs["base"]
    assert main(["leaderboard", str(run), "--anchor", "jpeg", "--rates", "2,8", "--bootstrap", "30",
                 "--out", str(tmp_path / "lb")]) == 0
    printed = capsys.readouterr().out
    assert "Bjontegaard deltas against the anchor (jpeg)" in printed and "[" in printed  # intervals shown
    for ext in ("md", "tex", "csv", "html"):
        assert (tmp_path / "lb" / f"leaderboard.{ext}").stat().st_size > 200
    csv = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    assert {"at_rates", "bd", "settings"} <= set(csv.table)
    assert "\\begin{table}" in (tmp_path / "lb" / "leaderboard.tex").read_text()
    for ext in ("md", "tex", "html"):  # what every number rests on, in each table a paper or page takes
        assert "Measured on sample, 12 images." in (tmp_path / "lb" / f"leaderboard.{ext}").read_text(), ext
    assert "Measured on sample, 12 images." in printed
    assert main(["report", str(run), "--bootstrap", "20", "--images", "2", "--out", str(tmp_path / "rep")]) == 0
    page = (tmp_path / "rep" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 * 3 + 3  # grid tiles (original + 2 codecs) and plots
    assert "Visual comparison" in page and "Provenance" in page and "leaderboard" in page
    assert "src='http" not in page and 'src="http' not in page  # self-contained
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "](grid/" in md and "](plots/" in md


def test_report_shows_the_transmitted_caption(tmp_path):
    config = RunConfig(dataset="sample", limit=2, inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"},
                       codecs=[parse_codec_spec("jpeg quality=5,50"), parse_codec_spec("cmc max_words=8")])
    run_dir = create_run(config, tmp_path / "runs", "c", progress=False)
    execute(run_dir, jobs=1, progress=False)
    images, _ = load_run(run_dir)
    from benchmark.analysis.report import build_report

    html_path, _ = build_report(run_dir, resamples=0, n_images=1)
    page = html_path.read_text()
    caption = images[images.codec == "cmc"].sort_values("image_index").caption.iloc[0]
    import html as h

    assert f"“{h.escape(caption)}”" in page


def test_a_bd_rate_without_an_interval_beside_a_bd_metric_with_one_says_why():
    """BD-PSNR defined in every resample but BD-rate in half of them: the BD-rate gets no interval and the
    curve's note says so (history prints that note beside the BD-rate it marks)."""
    from benchmark.analysis.compare import _curve_verdict

    values = [(0.1, -2.0, "")] + [(0.1 + 0.01 * i, np.nan if i % 2 else -2.0 + 0.1 * i, "") for i in range(20)]
    row = _curve_verdict("x", "psnr", values, tol=0.02, level=0.95, n=8, resamples=20)
    assert np.isfinite(row["low"]) and np.isnan(row["bd_rate_low"])
    assert "BD-rate: no interval (undefined in 50% of the resamples)" in row["note"]


def test_compare_names_a_codec_only_new_has_and_says_what_it_compared(tmp_path, capsys):
    """A codec NEW added, and a setting NEW added to a sweep, are not compared and not silently dropped: compare
    names them, in text and JSON."""
    runs = {}
    for name, codecs in (("base", ["jpeg quality=20,60"]), ("new", ["jpeg quality=20,60,90", "webp quality=50"])):
        config = RunConfig(dataset="sample:3", split="all", inception={"enabled": False}, caption_embedder="none",
                           image_metrics={"ms_ssim": False, "lpips": "none"},
                           codecs=[parse_codec_spec(c) for c in codecs])
        runs[name] = create_run(config, tmp_path / "runs", name, progress=False)
        execute(runs[name], jobs=1, progress=False)
    assert main(["compare", str(runs["base"]), str(runs["new"]), "--bootstrap", "20"]) == 0
    printed = capsys.readouterr().out
    added = "codec jpeg: setting 90 is in NEW but not in BASE: part of its curve, with no per-setting detail"
    assert printed.startswith(f"note: {added}\nnote: codec webp is in NEW but not in BASE: nothing to compare it "
                              "with\n")
    assert printed.rstrip().endswith("paired on the 3 images both runs scored.")
    assert main(["compare", str(runs["base"]), str(runs["new"]), "--bootstrap", "0", "--json", "-"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["new_only"] == [added, "codec webp is in NEW but not in BASE: nothing to compare it with"]
    assert {r["setting"] for r in out["rows"]} == {"20", "60"}


def test_a_sweep_moved_as_a_whole_is_said_to_be_compared_as_a_curve_only(tmp_path, capsys):
    """NEW ran the codec at other settings than BASE, none in common: its curve is judged and compare says that it
    has no per-setting detail, rather than listing the other codecs' settings alone."""
    runs = {}
    for name, sweep in (("base", "20,50,80"), ("new", "30,60,90")):
        config = RunConfig(dataset="sample:3", split="all", inception={"enabled": False}, caption_embedder="none",
                           image_metrics={"ms_ssim": False, "lpips": "none"},
                           codecs=[parse_codec_spec(f"webp quality={sweep}"), parse_codec_spec("jpeg quality=20,60")])
        runs[name] = create_run(config, tmp_path / "runs", name, progress=False)
        execute(runs[name], jobs=1, progress=False)
    assert main(["compare", str(runs["base"]), str(runs["new"]), "--bootstrap", "0", "--json", "-"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["new_only"] == ["codec webp: no setting is in both runs (BASE 20, 50, 80; NEW 30, 60, 90): compared as "
                               "a curve, with no per-setting detail"]
    assert {(c["codec"], c["metric"]) for c in out["curves"]} >= {("webp", "psnr"), ("jpeg", "psnr")}
    assert {r["codec"] for r in out["rows"]} == {"jpeg"}


def test_a_metric_base_measured_and_new_did_not_is_not_passed_silently(tmp_path, capsys):
    """A gate whose NEW run lost a metric (turned off here; a download that failed on a CI machine alike) has
    not compared it: compare refuses, naming the metric and NEW's reason, unless told --allow-missing, and
    then names it among what it did not compare."""
    from PIL import Image

    from benchmark.cli import EXIT_NOT_COMPARABLE

    folder = tmp_path / "photos"
    folder.mkdir()
    y, x = np.mgrid[0:176, 0:184]  # MS-SSIM needs 161 px a side
    for i in range(3):
        base = np.stack([128 + 80 * np.sin(x / (7 + i) + c) * np.cos(y / (11 + c)) for c in range(3)], -1)
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(folder / f"im{i}.png")
    runs = {}
    for name, ms_ssim in (("base", True), ("new", False)):
        config = RunConfig(dataset=f"folder:{folder}", inception={"enabled": False}, caption_embedder="none",
                           image_metrics={"ms_ssim": ms_ssim, "lpips": "none"},
                           codecs=[parse_codec_spec("jpeg quality=20,60")])
        runs[name] = create_run(config, tmp_path / "runs", name, progress=False)
        execute(runs[name], jobs=1, progress=False)
    base, new = str(runs["base"]), str(runs["new"])
    lost = "metric ms_ssim is in BASE but not in NEW (disabled in NEW: not requested (--no-ms-ssim)), for jpeg"
    assert main(["compare", base, new, "--bootstrap", "0"]) == EXIT_NOT_COMPARABLE
    assert lost in capsys.readouterr().err
    assert main(["compare", base, new, "--bootstrap", "0", "--allow-missing"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"note: {lost}\n") and "(every setting's verdict is same; --all lists them)" in printed
    assert main(["compare", new, base, "--bootstrap", "0"]) == 0  # NEW measuring more is no loss, and is named
    assert capsys.readouterr().out.startswith("note: metric ms_ssim is in NEW but not in BASE, for jpeg: nothing to "
                                              "compare it with\n")


def test_a_codec_resting_on_4_of_24_images_says_4_of_24_everywhere_and_compare_pairs_them(tmp_path):
    """A precomputed codec with 4 of 24 reconstructions: the plot legend, the leaderboard in Markdown, LaTeX and
    HTML, and the report show 4/24 for it; compare against a full run of the same codec pairs the 4 images."""
    import io

    from PIL import Image

    from benchmark.analysis.compare import compare_runs, render_text
    from benchmark.analysis.plots import rd_plots
    from benchmark.analysis.report import build_report

    folder, recon = tmp_path / "photos", tmp_path / "elsewhere"
    rng = np.random.default_rng(5)
    folder.mkdir()
    y, x = np.mgrid[0:48, 0:56]
    for i in range(24):
        base = np.stack([128 + 80 * np.sin(x / (5 + i % 7) + c) * np.cos(y / (9 + c)) for c in range(3)], -1)
        Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)).save(
            folder / f"im{i:02d}.png")
    _jpeg_outputs(folder, recon, (20, 50, 90), [f"im{i:02d}.png" for i in range(4)])  # for 4 of the 24 images
    no_networks = dict(inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"})

    def run(name, codecs):
        config = RunConfig(dataset=f"folder:{folder}", codecs=[parse_codec_spec(c) for c in codecs], **no_networks)
        run_dir = create_run(config, tmp_path / "runs", name, progress=False)
        execute(run_dir, jobs=1, progress=False)
        return run_dir

    full = run("full", ["jpeg quality=20,50,90", "webp quality=20,50,90"])
    partial = run("partial", [f"precomputed path={recon} label=jpeg", "webp quality=20,50,90"])
    board = leaderboard.build([partial], anchor="webp", resamples=20, rates=(1.0,))
    for fmt in ("md", "tex", "html"):
        text = leaderboard.render(board, fmt)
        assert "jpeg (4/24)" in text and "webp (24/24)" not in text and "webp (4" not in text, fmt
        assert "rest on n of the dataset" in text, fmt
    assert "20 (4/24)" in leaderboard.render(board, "md", only=("settings",))
    csv = pd.read_csv(io.StringIO(leaderboard.render(board, "csv")))
    assert set(csv[csv.codec == "jpeg"].n_images.dropna()) == {4} and set(csv.n_dataset.dropna()) == {24}
    _, summary = load_run(partial)
    rd_plots(summary, tmp_path / "plots", formats=("svg",))
    assert "JPEG (4/24)" in (tmp_path / "plots" / "rd_psnr.svg").read_text()
    html_path, md_path = build_report(partial, tmp_path / "report", n_images=1, resamples=20, anchor="webp")
    for path in (html_path, md_path):
        assert "jpeg (4/24)" in path.read_text() and "Resting on fewer images than the dataset holds" in path.read_text()
    result = compare_runs(full, partial, resamples=50, allow_missing=True)
    curve = result.curves[(result.curves.codec == "jpeg") & (result.curves.metric == "psnr")].iloc[0]
    assert curve.n_images == 4 and curve.verdict == "same" and abs(curve.bd_metric) < 1e-9  # the same 4 images
    assert result.paired == ["jpeg compared on the 4 of 24 images both runs scored (4/24, paired: the others "
                             "failed in BASE or NEW)"]
    assert "note: jpeg compared on the 4 of 24 images" in render_text(result)
    assert json.loads(json.dumps(result.to_json(), default=float))["paired"] == result.paired
    # Exported and tabled as a published curve, it still says 4/24 (it was a bare curve, its BD unexplained).
    from benchmark.analysis.references import export_compressai, load_references

    export_compressai(partial, tmp_path / "published")
    curve = [tmp_path / "published" / "jpeg.json"]
    board = leaderboard.build([full], anchor="webp", resamples=0, references=curve)
    assert "jpeg [published] (4/24)" in leaderboard.render(board, "md")
    assert "Warning: published curve 'jpeg' rests on 4 of its 24 images at some setting (the others failed where it " \
           "was measured): its values, and its BD, are over those images only." in board.notes
    _, summary = load_run(full)
    refs, _ = load_references(curve, summary)
    rd_plots(leaderboard.with_references(summary, refs), tmp_path / "published-plot", formats=("svg",))
    assert "JPEG [published] (4/24)" in (tmp_path / "published-plot" / "rd_psnr.svg").read_text()
    _, md_path = build_report(full, tmp_path / "report-published", n_images=1, resamples=0, anchor="webp",
                              references=curve)  # it ended in a traceback (a run's rows beside published ones)
    assert "jpeg [published] (4/24)" in md_path.read_text()


def test_bd_of_a_codec_with_failed_images_pairs_it_with_the_anchor_on_the_images_both_scored(tmp_path):
    """A codec whose reconstructions exist for 4 of 10 images: its BD against an anchor of the same run (and the
    anchor's BD against it) is that of a run of those 4 images alone, with paired intervals, not the codec on 4
    images against the anchor on all 10."""
    from PIL import Image

    folder, recon = tmp_path / "photos", tmp_path / "elsewhere"
    rng = np.random.default_rng(11)
    folder.mkdir()
    y, x = np.mgrid[0:40, 0:48]
    for i in range(10):
        base = np.stack([128 + (40 + 8 * i) * np.sin(x / (4 + i) + c) * np.cos(y / (7 + c)) for c in range(3)], -1)
        Image.fromarray(np.clip(base + rng.normal(0, 4 + 2 * i, base.shape), 0, 255).astype(np.uint8)).save(
            folder / f"im{i:02d}.png")
    _jpeg_outputs(folder, recon, (5, 20, 50), [f"im{i:02d}.png" for i in range(4)])

    def run(name, limit=None):
        config = RunConfig(dataset=f"folder:{folder}", limit=limit, inception={"enabled": False},
                           caption_embedder="none", image_metrics={"ms_ssim": False, "lpips": "none"},
                           codecs=[parse_codec_spec(f"precomputed path={recon} label=jpeg"),
                                   parse_codec_spec("webp quality=50,90,100")])
        run_dir = create_run(config, tmp_path / "runs", name, progress=False)
        execute(run_dir, jobs=1, progress=False)
        return run_dir

    partial, four = run("partial"), run("four", limit=4)
    for anchor, codec in (("webp", "jpeg"), ("jpeg", "webp")):
        alone = leaderboard.build([four], anchor=anchor, resamples=0).bd.set_index(["codec", "metric"])
        board = leaderboard.build([partial], anchor=anchor, resamples=30)
        row = board.bd.set_index(["codec", "metric"]).loc[(codec, "psnr")]
        assert row.bd_rate == pytest.approx(alone.loc[(codec, "psnr"), "bd_rate"], rel=1e-12)
        assert row.bd_metric == pytest.approx(alone.loc[(codec, "psnr"), "bd_metric"], rel=1e-12)
        summary = load_run(partial)[1]
        unpaired = compare_curves(Curve.from_summary(summary, anchor, "psnr"),
                                  Curve.from_summary(summary, codec, "psnr"))
        assert abs(row.bd_metric - unpaired["bd_metric"]) > 0.01  # what the table said before pairing
        assert row.bd_rate_low < row.bd_rate < row.bd_rate_high and row.n_images == 4 and row.n_paired == 4
        assert row.note.startswith("paired on the 4 images both scored at every setting")
        assert "paired on the 4 images" in leaderboard.render(board, "md", only=("bd",))
        tracker_files.write(partial, tmp_path / anchor, anchor=anchor)  # what trackers and `export` are sent
        sent = json.loads((tmp_path / anchor / "metrics.json").read_text())
        assert sent[f"bd_rate/psnr/{codec}@{anchor}"] == row.bd_rate
    assert "against an anchor of its run, or of another run of the same images, compare both on the images both " \
           "scored" in " ".join(board.notes)


def test_the_report_grid_shows_a_precomputed_codec_and_names_a_tile_it_cannot_show(tmp_path):
    """A precomputed codec (the researcher's own outputs) was missing from the report's grid: its tiles could not be
    "reproduced" by encoding, and report.md left them out without a word. They are read from its folder now, and a
    tile that cannot be shown is in report.md with its reason."""
    from PIL import Image

    from benchmark.analysis.report import build_report

    folder, outputs = tmp_path / "photos", tmp_path / "outputs"
    folder.mkdir()
    y, x = np.mgrid[0:64, 0:80]
    for i in range(3):
        pixels = np.stack([128 + 90 * np.sin(x / (4 + i) + c) * np.cos(y / (6 + c)) for c in range(3)], -1)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"im{i:02d}.png")
    _jpeg_outputs(folder, outputs, (50,), [f"im{i:02d}.png" for i in range(3)])
    recon = outputs / "50"
    config = RunConfig(dataset=f"folder:{folder}", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"},
                       codecs=[parse_codec_spec("jpeg quality=50"),
                               parse_codec_spec(f"precomputed path={outputs} label=mine")])
    run_dir = create_run(config, tmp_path / "runs", "r", progress=False)
    execute(run_dir, jobs=1, progress=False)
    _, md = build_report(run_dir, tmp_path / "report", n_images=2, resamples=0)
    tile = tmp_path / "report" / "grid" / "im00-mine-setting50.png"
    assert tile.exists() and "](grid/im00-mine-setting50.png)" in md.read_text()
    assert "closest to the target; a codec that cannot reach the target" in md.read_text()  # as the HTML says
    assert np.array_equal(np.asarray(Image.open(tile)), np.asarray(Image.open(recon / "im00.png")))  # its own pixels
    (recon / "im01.png").unlink()  # gone since the run
    _, md = build_report(run_dir, tmp_path / "report2", n_images=2, resamples=0)
    assert "*unavailable*<br>mine setting 50" in md.read_text() and \
        "could not reproduce: no reconstruction of im01.png for setting 50" in md.read_text()


def test_a_report_of_a_run_whose_dataset_is_not_here_has_no_grid_and_says_why(tmp_path):
    """A results folder copied to another machine, or a dataset folder moved: `report` stopped at "Dataset folder
    ... does not exist", even with --images 0, though only the grid needs the originals."""
    import shutil

    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    y, x = np.mgrid[0:64, 0:80]
    for i in range(3):
        pixels = np.stack([128 + 90 * np.sin(x / (4 + i) + c) * np.cos(y / (6 + c)) for c in range(3)], -1)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"im{i}.png")
    config = RunConfig(dataset=f"folder:{folder}", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"},
                       codecs=[parse_codec_spec("jpeg quality=30,70"), parse_codec_spec("webp quality=50")])
    run_dir = create_run(config, tmp_path / "runs", "r", progress=False)
    execute(run_dir, jobs=1, progress=False)
    shutil.move(folder, tmp_path / "moved")
    for images in ("2", "0"):
        assert main(["report", str(run_dir), "--bootstrap", "0", "--images", images, "--out", str(tmp_path / images)]) \
            == 0
        md = (tmp_path / images / "report.md").read_text()
        assert "## Leaderboard" in md and "](plots/rd_psnr.png)" in md and "](grid/" not in md
        assert (f"No comparison grid: the run's dataset cannot be read here (Dataset folder '{folder}' does not "
                "exist" if images == "2" else "No comparison grid (--images 0).") in md, md


def test_a_metric_one_run_did_not_compute_says_why_its_codecs_show_a_dash(tmp_path, capsys):
    """Two runs tabled together, psnr_y computed in one: the other's codecs showed – for it, with no word why."""
    for name, added in (("a", ["psnr_y"]), ("b", [])):
        config = RunConfig(dataset="sample:8", split="all", inception={"enabled": False}, caption_embedder="none",
                           image_metrics={"ms_ssim": False, "lpips": "none"}, add_metrics=added,
                           codecs=[parse_codec_spec("jpeg quality=20,50,80")])
        execute(create_run(config, tmp_path, name, progress=False), jobs=1, progress=False)
    assert main(["leaderboard", str(tmp_path / "a"), str(tmp_path / "b"), "--metric", "psnr_y", "--bootstrap", "0",
                 "--out", str(tmp_path / "board")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\| jpeg \(b\) \| +20 \| [0-9.]+ \| – ", out), out
    assert "- Run b has no psnr_y: disabled, not requested (--add-metric psnr_y)." in out
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "p")]) == 0
    assert "warning: Run b has no psnr_y: disabled, not requested (--add-metric psnr_y)." in capsys.readouterr().err
    board = leaderboard.build([tmp_path / "a"], resamples=0)  # alone, a run says nothing of others' metrics
    assert not any(n.startswith("Run ") for n in board.notes)


def test_two_runs_of_one_name_in_different_folders_keep_a_curve_each(tmp_path, capsys):
    """Runs named `tour` in results/main and results/branch (one --name in two checkouts) both labelled their jpeg
    `jpeg (tour)`: the leaderboard and the plot showed one curve where there were two, and BD compared nothing."""
    for where, quality in (("main", "20,50,80"), ("branch", "25,55,85")):
        config = RunConfig(dataset="sample:8", split="all", inception={"enabled": False}, caption_embedder="none",
                           image_metrics={"ms_ssim": False, "lpips": "none"},
                           codecs=[parse_codec_spec(f"jpeg quality={quality}")])
        execute(create_run(config, tmp_path / where, "tour", progress=False), jobs=1, progress=False)
    runs = [tmp_path / "main" / "tour", tmp_path / "branch" / "tour"]
    board = leaderboard.build(runs, resamples=0)
    settings = board.settings[board.settings.metric == "psnr"]
    assert settings.groupby("codec").size().to_dict() == {"jpeg (main/tour)": 3, "jpeg (branch/tour)": 3}
    assert list(board.bd.codec) == ["jpeg (branch/tour)"] and board.anchor == "jpeg (main/tour)"
    assert main(["plot", *map(str, runs), "--out", str(tmp_path / "p"), "--metric", "psnr"]) == 0
    svg = (tmp_path / "p" / "rd_psnr.svg").read_text()
    assert "JPEG (main/tour)" in svg and "JPEG (branch/tour)" in svg


def test_the_report_grid_keeps_a_tile_per_image_when_two_names_share_a_stem(tmp_path):
    """x.png and x.jpg (and 猫.png and 犬.png) had one tile file in grid/: report.md showed one image's tiles
    under the other's heading."""
    from PIL import Image

    from benchmark.analysis.report import build_report

    folder = tmp_path / "photos"
    folder.mkdir()
    y, x = np.mgrid[0:64, 0:80]
    originals = {}
    for i, name in enumerate(["x.png", "x.jpg", "猫.png", "犬.png"]):
        pixels = np.stack([128 + 90 * np.sin(x / (4 + i) + c) * np.cos(y / (6 + c)) for c in range(3)], -1)
        originals[name] = pixels.astype(np.uint8)
        Image.fromarray(originals[name]).save(folder / name, **({"quality": 100} if name.endswith(".jpg") else {}))
        originals[name] = np.asarray(Image.open(folder / name).convert("RGB"))
    config = RunConfig(dataset=f"folder:{folder}", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"}, codecs=[parse_codec_spec("jpeg quality=50")])
    run_dir = create_run(config, tmp_path / "runs", "r", progress=False)
    execute(run_dir, jobs=1, progress=False)
    _, md = build_report(run_dir, tmp_path / "report", n_images=4, resamples=0)
    text = md.read_text()
    shown = re.findall(r"#### (\S+) \(closest.*?\n\n\| !\[original[^]]*\]\((grid/[^)]+)\)", text, re.S)
    assert sorted(name for name, _ in shown) == sorted(originals), text
    assert len({tile for _, tile in shown}) == 4
    for name, tile in shown:  # each heading's original tile is that image
        assert np.array_equal(np.asarray(Image.open(tmp_path / "report" / tile)), originals[name]), name

    _, md = build_report(run_dir, tmp_path / "report", n_images=1, resamples=0)  # again, into the same folder
    shown = re.findall(r"\]\((grid/[^)]+)\)", md.read_text())
    assert sorted(f"grid/{p.name}" for p in (tmp_path / "report" / "grid").iterdir()) == sorted(shown) and shown

def test_a_report_plot_says_why_its_points_have_no_bar(tmp_path, natural_images, monkeypatch):
    """A point the report's plot draws without an error bar has no interval, and the legend says why: a missing
    bar is not a zero spread. On one image every setting rests on one image."""
    from benchmark.analysis import plots, report

    config = RunConfig(dataset=f"folder:{natural_images}", limit=1, inception={"enabled": False},
                       caption_embedder="none", image_metrics={"ms_ssim": False, "lpips": "none"},
                       codecs=[parse_codec_spec("jpeg quality=20,60")])
    run_dir = create_run(config, tmp_path / "runs", "one", progress=False)
    execute(run_dir, jobs=1, progress=False)
    real = plots.rd_plots
    monkeypatch.setattr(plots, "rd_plots", lambda *a, **k: real(*a, **{**k, "formats": ("png", "svg")}))
    report.build_report(run_dir, tmp_path / "report", n_images=1, resamples=20)
    svg = (tmp_path / "report" / "plots" / "rd_psnr.svg").read_text()
    assert "no bar: no interval" in svg and "image)" in svg and "<path d=" in svg
    assert "no bar" not in real(load_run(run_dir)[1], tmp_path / "plain", formats=("svg",), metrics=["psnr"])[0] \
        .read_text()  # a plot without intervals draws no bars and says nothing of them


def test_a_value_shown_without_an_interval_says_why_in_every_format(tmp_path, natural_images):
    """A rate near an end of a codec's curve lies beyond it in many resamples: such values are marked (‡) with the
    reason, never shown as if exact. BD against an anchor in another run of the same images is paired on them (it
    had no interval, marked 'in another run'): its interval is there, and its value is the one-run BD's."""
    def run(name, codec):
        config = RunConfig(dataset=f"folder:{natural_images}", inception={"enabled": False}, caption_embedder="none",
                           image_metrics={"ms_ssim": False, "lpips": "none"}, codecs=[parse_codec_spec(codec)])
        run_dir = create_run(config, tmp_path / "runs", name, progress=False)
        execute(run_dir, jobs=1, progress=False)
        return run_dir

    one, other = run("one", "jpeg quality=10,30,60,90"), run("other", "webp quality=10,30,60,90")
    _, summary = load_run(one)
    lowest, middle = float(summary.bpp.min()), float(summary.bpp.median())
    board = leaderboard.build([one, other], anchor="jpeg", rates=[lowest, middle], resamples=50)
    drawn = bootstrap.run_resamples(one, 50, bootstrap.DEFAULT_SEED)
    bpp = np.stack([drawn.values[k]["bpp"] for k in drawn.values if k[0] == "jpeg"], 1)  # resamples x settings
    beyond = np.mean((bpp.min(1) > lowest) | (bpp.max(1) < lowest))
    assert beyond > 0.2  # the share the leaderboard must report, counted here from the resamples themselves
    at = board.at_rates[(board.at_rates.codec == "jpeg") & (board.at_rates.metric == "psnr")].set_index("bpp")
    assert at.loc[lowest, "interval_note"] == f"{lowest:g} bpp lies beyond the codec's curve in {beyond:.0%} of the " \
                                              "resamples" and np.isnan(at.loc[lowest, "low"])
    assert at.loc[middle, "interval_note"] == "" and at.loc[middle, "low"] < at.loc[middle, "high"]
    webp = board.bd[(board.bd.codec == "webp") & (board.bd.metric == "psnr")].iloc[0]
    assert webp.interval_note == "" and webp.bd_rate_low < webp.bd_rate < webp.bd_rate_high
    assert webp.note.startswith("paired on the 4 images both runs scored at every setting") and webp.n_images == 4
    # the two codecs in one run: the same BD
    config = RunConfig(dataset=f"folder:{natural_images}", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"},
                       codecs=[parse_codec_spec("jpeg quality=10,30,60,90"),
                               parse_codec_spec("webp quality=10,30,60,90")])
    execute(create_run(config, tmp_path / "runs", "together", progress=False), jobs=1, progress=False)
    alone = leaderboard.build([tmp_path / "runs" / "together"], anchor="jpeg", resamples=0).bd
    assert webp.bd_rate == pytest.approx(alone[(alone.codec == "webp") & (alone.metric == "psnr")].bd_rate.iloc[0],
                                         rel=1e-9)
    md, tex, csv = (leaderboard.render(board, fmt) for fmt in ("md", "tex", "csv"))
    cells = leaderboard.wide_tables(board)["at_rates"].set_index(["metric", "codec"])
    assert cells.loc[("PSNR (dB) ↑", "jpeg"), f"@ {lowest:g} bpp"].endswith("‡")
    assert "‡" not in cells.loc[("PSNR (dB) ↑", "jpeg"), f"@ {middle:g} bpp"]
    assert "‡ No interval: the rate lies beyond the codec's curve in over a fifth of the resamples." in md
    assert "\\ddag{}" in tex and "‡" not in tex.replace("% ‡", "")
    assert "beyond the codec's curve" in csv
    from benchmark.analysis.references import export_compressai

    export_compressai(other, tmp_path / "published")  # the same curve, published: BD against it has no resamples
    against = leaderboard.build([one], anchor="webp", resamples=50, references=[tmp_path / "published" / "webp.json"])
    row = against.bd[(against.bd.codec == "jpeg") & (against.bd.metric == "psnr")].iloc[0]
    assert row.interval_note == "webp [published] has no resamples (a published curve)" and np.isnan(row.bd_rate_low)


def test_a_chosen_rate_no_codec_reaches_is_said_not_dropped_in_silence(tmp_path, natural_images):
    """The at-rate table never extrapolates: a rate beyond a codec's measured rates is –, a codec that reaches none
    of the rates is left out, and a table no codec reaches is left out; each is said in a note with the ranges."""
    config = RunConfig(dataset=f"folder:{natural_images}", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"},
                       codecs=[parse_codec_spec("jpeg quality=20,60"), parse_codec_spec("webp quality=5,90")])
    run_dir = create_run(config, tmp_path / "runs", "r", progress=False)
    execute(run_dir, jobs=1, progress=False)
    _, summary = load_run(run_dir)
    span = {c: (g.bpp.min(), g.bpp.max()) for c, g in summary.groupby("codec")}
    assert span["webp"][0] < span["jpeg"][0] < span["jpeg"][1] < span["webp"][1]
    inside, webp_only, beyond = np.mean(span["jpeg"]), span["webp"][0] * 1.01, span["webp"][1] * 2
    ranges = ", ".join(f"{c} {span[c][0]:.3g}–{span[c][1]:.3g}" for c in ("jpeg", "webp"))

    board = leaderboard.build([run_dir], rates=[inside], resamples=0)
    assert not any("chosen rates" in n for n in board.notes)
    board = leaderboard.build([run_dir], rates=[webp_only, beyond], resamples=0)
    note = next(n for n in board.notes if "chosen rates" in n)
    assert note == (f"Metrics at chosen rates: – where the rate lies outside the codec's measured rates ({ranges} "
                    f"bpp), never extrapolated; jpeg reaches none of {webp_only:g}, {beyond:g} bpp and is left out "
                    "of that table.")
    table = leaderboard.wide_tables(board)["at_rates"]
    assert list(table.codec) == ["webp"] and table[f"@ {beyond:g} bpp"].tolist() == ["–"]
    assert note in leaderboard.render(board, "md")
    board = leaderboard.build([run_dir], rates=[beyond], resamples=0)
    assert leaderboard.wide_tables(board)["at_rates"].empty
    assert f"No codec reaches the chosen rates ({beyond:g} bpp; measured: {ranges} bpp): no table of metrics at " \
           "them." in board.notes


def test_the_dagger_note_is_there_exactly_when_a_dagger_is(tmp_path, natural_images):
    """'† BD over less than 50% ...' explains a mark: a table whose BDs are all undefined (curves that reach neither
    each other's rates nor values) shows none and does not explain one."""
    for name, codecs in (("apart", ["jpeg quality=90,95", "webp quality=1,3"]),
                         ("overlapping", ["jpeg quality=20,60", "webp quality=5,90"])):
        config = RunConfig(dataset=f"folder:{natural_images}", inception={"enabled": False}, caption_embedder="none",
                           image_metrics={"ms_ssim": False, "lpips": "none"},
                           codecs=[parse_codec_spec(c) for c in codecs])
        run_dir = create_run(config, tmp_path / "runs", name, progress=False)
        execute(run_dir, jobs=1, progress=False)
        board = leaderboard.build([run_dir], resamples=0)
        shown = leaderboard.wide_tables(board)["bd"][["BD-rate (%)", "BD-metric"]].to_numpy().ravel()
        daggers = any("†" in cell for cell in shown)
        assert daggers == any(n.startswith("†") for n in board.notes), (name, shown, board.notes)
        assert daggers == ("† BD over less than" in leaderboard.render(board, "md"))
        assert daggers == ("\\dag{} BD over too little overlap" in leaderboard.render(board, "tex"))
        if name == "apart":
            assert board.bd.bd_rate.isna().all() and board.bd.bd_metric.isna().all() and not daggers
        else:
            assert daggers, shown  # webp's curve reaches far beyond jpeg's: its BD rests on a small share


def test_cached_intervals_are_keyed_by_the_metric_code_each_resample_calls(monkeypatch):
    """The bootstrap's cache key covers the metric files it calls on every resample (KID's, FD-CLIP's, ...), not only
    bootstrap.py: after a fix to a metric, an old run's cached intervals are computed again."""
    import importlib.util
    import pathlib

    bootstrap.code_key.cache_clear()
    before = bootstrap.code_key()
    read = pathlib.Path.read_bytes
    try:
        for module in ("metrics.kid", "metrics.fd_clip", "benchmark.analysis.bootstrap"):
            origin = importlib.util.find_spec(module).origin
            monkeypatch.setattr(pathlib.Path, "read_bytes",
                                lambda self, origin=origin: read(self) + (b"#" if str(self) == origin else b""))
            bootstrap.code_key.cache_clear()
            assert bootstrap.code_key() != before, module
    finally:
        monkeypatch.undo()
        bootstrap.code_key.cache_clear()
    assert bootstrap.code_key() == before


def test_a_latex_table_s_captions_carry_its_caveats_before_what_it_rests_on(tmp_path, natural_images):
    """The notes are % comments in leaderboard.tex, which a paper does not print: a run not finished, a metric a run
    lacks, why a value has no interval (‡) were not in the printed table. Its captions carry them, and end with what
    the numbers rest on; the other notes stay comments."""
    import dataclasses

    config = RunConfig(dataset=f"folder:{natural_images}", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"},
                       codecs=[parse_codec_spec("jpeg quality=10,30,60,90"), parse_codec_spec("webp quality=10,90")])
    run_dir = create_run(config, tmp_path / "runs", "r", progress=False)
    execute(run_dir, jobs=1, progress=False)
    board = leaderboard.build([run_dir], resamples=20)
    caveats = ["Warning: r is not finished (killed).", "Run r has no psnr_y: disabled, not requested.",
               "‡ No interval: the same in every resample."]
    tex = leaderboard.render(dataclasses.replace(board, notes=[*board.notes, *caveats]), "tex")
    captions = re.findall(r"\\caption\{(.*)\}", tex)
    measured = next(n for n in board.notes if n.startswith("Measured on"))
    printed = " Warning: r is not finished (killed). Run r has no psnr\\_y: disabled, not requested. \\ddag{} No " \
              f"interval: the same in every resample. {measured}"
    assert len(captions) >= 3 and all(c.endswith(printed) for c in captions), captions
    assert not any("BD against" in c for c in captions) and "% BD against" in tex


def test_a_constant_value_has_no_interval_though_its_resampled_means_differ_in_the_last_bit(tmp_path):
    """Outputs made elsewhere with the same bit count for every image of one size: bpp 0.15 in every resample, up
    to the rounding of summing it in another order (0.15 and 0.15 + 6e-17). One such setting showed "0.0375‡",
    the other "0.1500 [0.1500, 0.1500]": both are the same in every resample and have no interval."""
    from PIL import Image

    folder, outputs = tmp_path / "images", tmp_path / "outputs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    lines = ["image_id,setting,bits"]
    for i in range(7):
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
        for setting, bits in (("a", 231), ("b", 920)):  # 0.0376 and 0.1497 bpp on 64 x 96 pixels
            (outputs / setting).mkdir(parents=True, exist_ok=True)
            Image.open(folder / f"im{i}.png").save(outputs / setting / f"im{i}.png")
            lines.append(f"im{i},{setting},{bits}")
    (outputs / "bits.csv").write_text("\n".join(lines) + "\n")
    config = RunConfig(dataset=f"folder:{folder}", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"},
                       codecs=[parse_codec_spec(f"precomputed path={outputs} label=mine")])
    run_dir = create_run(config, tmp_path / "runs", "r", progress=False)
    execute(run_dir, jobs=1, progress=False)
    drawn = bootstrap.run_resamples(run_dir, 200, 0)
    assert np.ptp(drawn.values[("mine", 1)]["bpp"]) > 0  # the rounding this test is about
    table = bootstrap.intervals(run_dir, 200, 0, use_cache=False)
    assert "bpp" not in set(table.metric)
    csv = leaderboard.render(leaderboard.build([run_dir], resamples=200), "csv")
    assert csv.count("the same in every resample") >= 2, csv


def test_a_metric_some_images_lack_has_its_bd_and_its_n_over_the_images_it_scored(tmp_path, monkeypatch):
    """MS-SSIM has no value on images under 161 px: its curves paired the bpp of every image with the MS-SSIM of
    the large ones, so the leaderboard's BD-rate of WebP against JPEG mixed the small images' rates in (-55.6%
    where the large images alone give -12.1% on the folder that showed it), and compare and history said the
    curve rested on every image (n 8 for 4). BD, compare and history now take a metric with gaps, and its bpp, over
    the images it scored, and say how many; PSNR, which every image has, is as it was."""
    import bjontegaard
    from PIL import Image

    from benchmark.analysis import compare, history

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "mixed"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(8):
        h, w = (176, 200) if i % 2 == 0 else (40, 48)
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([128 + 80 * np.sin(x / (7 + i) + c) * np.cos(y / (11 + c)) for c in range(3)], -1)
        pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"m{i}.png")

    def run(name, qualities):
        config = RunConfig(dataset=f"folder:{folder}", inception={"enabled": False}, caption_embedder="none",
                           image_metrics={"lpips": "none"},
                           codecs=[parse_codec_spec(f"jpeg quality={qualities}"),
                                   parse_codec_spec(f"webp quality={qualities}")])
        run_dir = create_run(config, tmp_path / "runs", name, progress=False)
        execute(run_dir, jobs=1, progress=False)
        return run_dir

    first, second = run("a", "20,40,60,80"), run("b", "25,45,65,85")
    images, summary = load_run(first)
    large = images[images.ms_ssim.notna()]
    assert large.image_id.nunique() == 4 and images.image_id.nunique() == 8

    def means(rows, codec, metric):
        mine = rows[rows.codec == codec].groupby("setting_index")[["bpp", metric]].mean().sort_values("bpp")
        return mine.bpp.to_numpy(), mine[metric].to_numpy()

    board = leaderboard.build([first], resamples=50)
    bd = board.bd.set_index(["codec", "metric"])
    expected = {m: bjontegaard.bd_rate(*means(rows, "jpeg", m), *means(rows, "webp", m), method="akima",
                                       require_matching_points=False) for m, rows in (("ms_ssim", large),
                                                                                        ("psnr", images))}
    mixed = bjontegaard.bd_rate(means(images, "jpeg", "psnr")[0], means(large, "jpeg", "ms_ssim")[1],
                                means(images, "webp", "psnr")[0], means(large, "webp", "ms_ssim")[1],
                                method="akima", require_matching_points=False)
    assert abs(mixed - expected["ms_ssim"]) > 1  # what it was: a different number
    assert bd.loc[("webp", "ms_ssim")].bd_rate == pytest.approx(expected["ms_ssim"], rel=1e-9)
    assert bd.loc[("webp", "ms_ssim")].note.startswith("paired on the 4 images both scored at every setting")
    assert bd.loc[("webp", "psnr")].bd_rate == pytest.approx(expected["psnr"], rel=1e-9)
    assert "paired" not in bd.loc[("webp", "psnr")].note
    # its values at a chosen rate: along that curve too, and the note gives its rates there
    rate = float(np.median(means(large, "webp", "ms_ssim")[0]))
    board = leaderboard.build([first], resamples=20, rates=[rate])
    at = board.at_rates.set_index(["codec", "metric"]).value
    assert at[("webp", "ms_ssim")] == pytest.approx(Curve("webp", "ms_ssim", *means(large, "webp", "ms_ssim"))
                                                    .at_rate(rate), rel=1e-12)
    assert any("ms_ssim along its curve over the images it scored" in n for n in board.notes), board.notes
    # and the R-D figure draws its points at that bpp (it drew MS-SSIM of the large images at the rate of all)
    import matplotlib.axes

    drawn, plot = [], matplotlib.axes.Axes.plot

    def record(self, x, y, *args, **kwargs):
        drawn.append((kwargs.get("label"), np.asarray(x, float), np.asarray(y, float)))
        return plot(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", record)
    assert main(["plot", str(first), "--metric", "ms_ssim", "--metric", "psnr", "--out", str(tmp_path / "fig")]) == 0
    lines = {(label, "ms_ssim" if y.max() <= 1 else "psnr"): x for label, x, y in drawn}
    assert np.allclose(lines[("WebP", "ms_ssim")], means(large, "webp", "ms_ssim")[0], rtol=1e-12)
    assert np.allclose(lines[("WebP", "psnr")], means(images, "webp", "psnr")[0], rtol=1e-12)
    legend = " ".join(re.findall(r"<!-- (.*?) -->", (tmp_path / "fig" / "rd_ms_ssim.svg").read_text()))
    assert "each point at the bpp of the images it is over" in legend, legend
    # an export has one bpp per setting: MS-SSIM over fewer images is left out, saying why, not paired with it
    assert main(["export", str(first), str(tmp_path / "export")]) == 0
    doc = json.loads((tmp_path / "export" / "webp.json").read_text())
    assert set(doc["results"]) == {"bpp", "psnr-rgb"}
    assert "ms_ssim has no value on" in doc["meta"]["left_out"]["ms_ssim"]
    result = compare.compare_runs(first, second, resamples=20)
    n = result.curves.set_index(["codec", "metric"]).n_images
    assert n[("jpeg", "ms_ssim")] == 4 and n[("jpeg", "psnr")] == 8 and not result.paired
    table = history.build([first, second], history.HistoryOptions(metrics=["ms_ssim", "psnr"], resamples=20)).table
    assert set(table[table.metric == "ms_ssim"].n_images) == {4} and set(table[table.metric == "psnr"].n_images) == {8}
