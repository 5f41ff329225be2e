"""Stochastic decoders decoded K times: a row per sample, set metrics per sample's set, and their means equal
to K separate runs with those seeds; compare does not call seed noise a regression."""

import numpy as np
import pandas as pd
import pytest

from benchmark.analysis import leaderboard
from benchmark.analysis.bootstrap import intervals, run_resamples
from benchmark.codecs.codec_spec import parse_codec_spec
from benchmark.analysis.compare import compare_runs
from benchmark.run.results import load_run
from benchmark.run.runner import RunConfig, create_run, execute

SPEC = "codecs_for_tests:SeededNoise quality=30,80"
LIMIT = 8  # images: each run sends its reconstructions through Inception, 0.3 s each on a 2-core CPU


def _run(tmp_path, name, spec, weights):
    config = RunConfig(dataset="sample", limit=LIMIT, codecs=[parse_codec_spec(spec)], caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"},
                       inception={"enabled": True, "weights": str(weights), "sha256": None, "device": "cpu",
                                  "batch_size": 16, "isc_splits": 2, "kid_subsets": 5, "kid_subset_size": 4,
                                  "seed": 2020})
    run_dir = create_run(config, tmp_path / "runs", name, progress=False)
    assert execute(run_dir, jobs=2, progress=False).n_failed == 0
    return run_dir


@pytest.fixture(scope="module")
def runs(hermetic_module, tmp_path_factory, random_inception_weights):
    """The module's runs, each made once when a test first asks for it, under one output root (so the originals'
    Inception features are computed once): `runs(name, spec)`."""
    root, made = tmp_path_factory.mktemp("samples"), {}

    def run(name: str, spec: str):
        if name not in made:
            made[name] = _run(root, name, spec, random_inception_weights)
        return made[name]
    return run


@pytest.fixture(scope="module")
def x4(runs):
    """The sampled run both tests below read."""
    return runs("x4", f"{SPEC} samples=4")


def test_four_samples_equal_four_seeded_runs_and_report_their_spread(x4, runs):
    sampled = x4
    images, summary = load_run(sampled)
    assert len(images) == LIMIT * 2 * 4 and sorted(images["sample"].unique()) == [0, 1, 2, 3]
    per_image = images.groupby(["image_id", "setting_index"]).psnr
    assert (per_image.std() > 0).all()  # the same bitstream, four different pictures
    assert (images.groupby(["image_id", "setting_index"]).bits.nunique() == 1).all()  # the bits are shared
    single_dirs = [runs(f"seed{k}", f"{SPEC} seed={k}") for k in range(4)]
    singles = [load_run(d) for d in single_dirs]
    by_seed = pd.concat([rows.assign(seed=k) for k, (rows, _) in enumerate(singles)])
    expected = by_seed.groupby(["image_id", "setting_index"]).psnr.mean()
    pd.testing.assert_series_equal(per_image.mean(), expected, rtol=1e-12)
    summary = summary.set_index("setting_index")
    # Exact to 1e-9 although the sampled run scores 4 x 8 reconstructions per task and a seeded run 8: every set
    # metric is a function of per-image features that do not depend on the batch an image shared (pool3 from the
    # network, logits from pool3 in float64; test_perceptual checks both at batches of 1, 7 and 16).
    for metric in ("psnr", "fid", "kid", "ipd"):
        values = np.array([s.set_index("setting_index")[metric] for _, s in singles])  # 4 x settings
        assert np.allclose(summary[metric], values.mean(axis=0), rtol=1e-9), metric
        assert np.allclose(summary[f"{metric}_sample_std"], values.std(axis=0, ddof=1), rtol=1e-6), metric
    assert (summary.n_samples == 4).all() and (summary.fid_sample_std > 0).all()
    assert summary.inception_note.str.contains("mean over 4 samples' sets").all()
    # Bootstrap: each resample draws the images once; a set metric's value on it is the mean of the four sample
    # sets' values on those images, i.e. of the four seeded runs' values on the same draw.
    drawn = run_resamples(sampled, 20, seed=5)
    alone = [run_resamples(_dir, 20, seed=5) for _dir in single_dirs]
    for key in drawn.settings:
        same = ("seedednoise", key[1])  # the seeded runs' label
        for metric in ("fid", "kid", "inception_score"):
            expected = np.mean([a.values[same][metric] for a in alone], axis=0)
            assert np.allclose(drawn.values[key][metric], expected, rtol=1e-9), (key, metric)
            assert drawn.points[key][metric] == pytest.approx(np.mean([a.points[same][metric] for a in alone]))
        assert np.ptp(drawn.values[key]["fid"]) > 0
    table = intervals(sampled, 50, use_cache=False).set_index(["setting_index", "metric"])
    for s, fid in summary.fid.items():
        low, high = table.loc[(s, "fid"), ["low", "high"]]
        assert low <= fid <= high and low < high
    board = leaderboard.build([sampled], resamples=0)  # a table of means says what they average
    assert any(n.startswith("seedednoise-x4: each value is the mean over 4 decodes") for n in board.notes)


def test_compare_does_not_call_seed_noise_a_regression(x4, runs):
    base = x4
    new = runs("new", f"{SPEC} samples=4 seed=100")
    result = compare_runs(base, new, resamples=100)
    rows = result.rows
    assert (rows.seed_noise.notna() | rows.metric.isin(["bpp", "n_failed"])).all()  # bits are not drawn
    assert (rows[rows.metric == "bpp"].change == 0).all()
    assert (rows.change != 0).any()  # the other seeds did change the numbers
    assert not (rows.decisive & (rows.verdict == "worse")).any(), rows[rows.verdict == "worse"]
    assert ((rows.change.abs() > rows.tolerance) & (rows.verdict == "same")).any()  # excused as seed noise
    assert not len(result.regressions), result.regressions
    assert any("options differ" in w for w in result.warnings)  # and the seeds are named as the difference
    single = compare_runs(runs("seed0", f"{SPEC} seed=0"), runs("seed100", f"{SPEC} seed=100"), resamples=100)
    assert single.rows.seed_noise.isna().all()  # one sample each: no spread to excuse a change


def test_k_samples_are_counted_as_images_not_rows_where_counts_are_shown(tmp_path):
    """A samples=K codec has K rows per image: beside a deterministic codec, neither is shown as resting on
    fewer images than the dataset's, and the plot title counts images."""
    from benchmark.analysis.plots import dataset_title, rd_plots

    config = RunConfig(dataset="sample:6", codecs=[parse_codec_spec(f"{SPEC} samples=2"),
                                                   parse_codec_spec("jpeg quality=30,80")],
                       caption_embedder="none", inception={"enabled": False},
                       image_metrics={"ms_ssim": False, "lpips": "none"})
    run_dir = create_run(config, tmp_path / "runs", "k", progress=False)
    execute(run_dir, jobs=1, progress=False)
    _, summary = load_run(run_dir)
    assert set(summary.n_images) == {2, 4}  # rows: 2 images, decoded twice by one codec
    assert leaderboard.build([run_dir], resamples=0).counts == {}
    assert dataset_title(summary) == "sample (test), 2 images"
    rd_plots(summary, tmp_path / "plots", metrics=["psnr"], formats=("svg",))
    assert "/4)" not in (tmp_path / "plots" / "rd_psnr.svg").read_text()
