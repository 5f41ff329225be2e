"""Numbers that can be trusted at every size: one exact FID, KID without fake spreads, noted IS, intervals
that contain their estimates, lossless images that do not make means infinite."""

import dataclasses

import numpy as np
import pytest
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from benchmark.analysis import bootstrap
from benchmark.codecs.codec_spec import parse_codec_spec
from benchmark.run.results import load_run
from benchmark.run.runner import RunConfig, create_run, execute
from metrics.fid import fid, fid_from_statistics, statistics
from metrics.kid import kernels, kid, mmd2_weighted, mmd2_whole


def _mp_fid(a, b, dps=40):
    """FID by the symmetric formula in 40-digit arithmetic (mpmath): the exact reference."""
    import mpmath as mp

    mp.mp.dps = dps

    def stats(x):
        x = mp.matrix(x.tolist())
        n, d = x.rows, x.cols
        mu = [mp.fsum(x[i, j] for i in range(n)) / n for j in range(d)]
        cov = mp.matrix(d, d)
        for j in range(d):
            for k in range(j, d):
                cov[j, k] = cov[k, j] = mp.fsum((x[i, j] - mu[j]) * (x[i, k] - mu[k]) for i in range(n)) / (n - 1)
        return mu, cov

    (mu1, s1), (mu2, s2) = stats(a), stats(b)
    w, v = mp.eigsy(s1)
    root = v * mp.diag([mp.sqrt(max(x, 0)) for x in w]) * v.T
    inner = mp.eigsy(root * s2 * root, eigvals_only=True)
    trace_sqrt = mp.fsum(mp.sqrt(max(x, 0)) for x in inner)
    d = len(mu1)
    value = mp.fsum((mu1[j] - mu2[j]) ** 2 for j in range(d)) + mp.fsum(s1[j, j] + s2[j, j] for j in range(d)) \
        - 2 * trace_sqrt
    return float(value)


def test_fid_is_exact_on_small_sets_and_equals_torch_fidelity_on_large_ones():
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=(9, 24)), rng.normal(size=(8, 24)) * 1.3 + 0.2  # fewer samples than features
    exact = _mp_fid(a, b)
    assert fid(a, b) == pytest.approx(exact, rel=1e-10)  # the low-rank form
    # The symmetric form on rank-deficient covariances carries sqrt(round-off) from their zero eigenvalues
    # (about 1e-8 here): why `fid` takes the low-rank form whenever n1 + n2 <= d.
    assert fid_from_statistics(*statistics(a), *statistics(b)) == pytest.approx(exact, rel=1e-7)
    big_a, big_b = rng.normal(size=(300, 16)), rng.normal(size=(260, 16)) * 0.9 + 0.1  # more samples than features
    ref = fid_statistics_to_metric(fid_features_to_statistics(torch.from_numpy(big_a)),
                                   fid_features_to_statistics(torch.from_numpy(big_b)), verbose=False)
    assert fid(big_a, big_b) == pytest.approx(ref["frechet_inception_distance"], rel=1e-6)


def test_kid_never_reports_a_spread_that_is_not_one():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(16, 32)), rng.normal(size=(16, 32)) + 0.3
    value, std = kid(a, b, subsets=100, subset_size=1000)
    assert np.isnan(std)
    # The unbiased MMD^2 over the whole sets, written out pair by pair.
    k = lambda x, y: (x @ y / 32 + 1) ** 3  # noqa: E731
    xx = sum(k(a[i], a[j]) for i in range(16) for j in range(16) if i != j) / (16 * 15)
    yy = sum(k(b[i], b[j]) for i in range(16) for j in range(16) if i != j) / (16 * 15)
    xy = sum(k(a[i], b[j]) for i in range(16) for j in range(16)) / 256
    assert value == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    # Where torch-fidelity accepts the parameters (subsets smaller than the sets), cmcbench equals it.
    big_a, big_b = rng.normal(size=(120, 32)), rng.normal(size=(120, 32)) + 0.1
    ref = kid_features_to_metric(torch.from_numpy(big_a), torch.from_numpy(big_b), kid_subsets=30,
                                 kid_subset_size=50, verbose=False)
    mean, std = kid(big_a, big_b, subsets=30, subset_size=50)
    assert mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-6)
    assert std == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-6)


def test_duplicate_aware_kid_is_the_plain_statistic_without_duplicates_and_unbiased_with_them():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 8))
    y = x + rng.normal(size=(30, 8)) * 0.7
    k = kernels(x, y)
    assert mmd2_weighted(*k, np.ones(30)) == pytest.approx(mmd2_whole(*k), rel=1e-12)
    # Averaged over many resamples, the duplicate-aware statistic stays at the sample's value (a plain
    # unbiased MMD^2 on the resample with duplicates drifts away from it).
    draws = [np.bincount(rng.integers(0, 30, 30), minlength=30) for _ in range(3000)]
    aware = np.mean([mmd2_weighted(*k, w) for w in draws])
    point = mmd2_whole(*k)
    naive = np.mean([mmd2_whole(*kernels(np.repeat(x, w, 0), np.repeat(y, w, 0))) for w in draws[:300]])
    assert abs(aware - point) < 0.25 * abs(naive - point)


def test_kid_of_resamples_from_kernel_blocks_equals_the_whole_matrices(monkeypatch):
    """Sets too large for whole kernel matrices (30,000 images: 21.6 GB) take blocks of rows; the values are the
    whole matrices' to round-off, with duplicates, with images left out, in any block size."""
    from metrics import kid as kid_module

    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 6))
    y = x + rng.normal(size=(40, 6)) * 0.6
    counts = np.stack([np.ones(40)] + [np.bincount(rng.integers(0, 40, 40), minlength=40) for _ in range(7)])
    whole = [mmd2_weighted(*kernels(x, y), c) for c in counts]
    for entries in (40, 7 * 40, 10**6):  # one row, 7 rows (the last block shorter), all at once
        blocked = kid_module.mmd2_weighted_blocked(x, y, counts, block_entries=entries)
        np.testing.assert_allclose(blocked, whole, rtol=1e-10)
    assert blocked[0] == pytest.approx(mmd2_whole(*kernels(x, y)), rel=1e-10)
    # the bootstrap takes the blocked route where the whole matrices would not fit, with the same intervals
    data = bootstrap.SettingData("c", 0, "1", np.array([f"i{k:03d}" for k in range(40)]), {}, x, x[:, :4], y,
                                 {"isc_splits": 2})
    positions = bootstrap.resample_positions(40, 50, np.random.default_rng(1))
    fitting = data.evaluate(positions)["kid"]
    monkeypatch.setattr(kid_module, "GRAM_MAX_ENTRIES", 3 * 40 * 40 - 1)
    data._kernels = None
    np.testing.assert_allclose(data.evaluate(positions)["kid"], fitting, rtol=1e-10)
    assert data._kernels is None  # no whole matrix was made


def test_bca_matches_scipy_on_plain_means():
    from scipy.stats import bootstrap as scipy_bootstrap

    data = np.random.default_rng(8).gamma(2.0, 3.0, 40)  # skewed: BCa differs from the percentile interval
    res = scipy_bootstrap((data,), np.mean, method="BCa", n_resamples=999, confidence_level=0.9,
                          random_state=np.random.default_rng(1))
    jackknife = (data.sum() - data) / (len(data) - 1)
    low, high = bootstrap.bca_interval(res.bootstrap_distribution, data.mean(), jackknife, 0.9)
    assert low == pytest.approx(res.confidence_interval.low, rel=1e-12)
    assert high == pytest.approx(res.confidence_interval.high, rel=1e-12)


def test_set_metric_intervals_contain_their_estimates_on_synthetic_features():
    rng = np.random.default_rng(0)
    for n in (16, 100):
        pool = rng.normal(size=(n, 256))
        ref = pool + rng.normal(size=(n, 256)) * 0.5
        logits = rng.normal(0, 3, (n, 50))
        data = bootstrap.SettingData("c", 0, "1", np.array([f"i{k:03d}" for k in range(n)]), {}, pool, logits, ref,
                                     {"isc_splits": 2})
        positions = bootstrap.resample_positions(n, 200, np.random.default_rng(n))
        points = data.evaluate(np.arange(n)[None])
        for metric, values in data.evaluate(positions).items():
            low, high = bootstrap.metric_interval(data, metric, values, points[metric][0], 0.95)
            assert low <= points[metric][0] <= high, (n, metric)
        assert points["fid"][0] == fid(pool, ref)


def test_a_lossless_image_does_not_make_the_mean_infinite(tmp_path, natural_images):
    config = RunConfig(dataset=f"folder:{natural_images}", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"},
                       codecs=[parse_codec_spec("codecs_for_tests:Raw"), parse_codec_spec("jpeg quality=50")])
    run_dir = create_run(config, tmp_path / "runs", "lossless", progress=False)
    execute(run_dir, jobs=1, progress=False)
    images, summary = load_run(run_dir)
    raw = summary[summary.codec == "raw"]
    assert np.isinf(images[images.codec == "raw"].psnr).all()  # per image: exact
    assert (raw.psnr == 100.0).all() and (raw.n_lossless == 4).all()  # averaged at the stated cap
    assert (summary[summary.codec == "jpeg"].n_lossless == 0).all()
    ci = bootstrap.intervals(run_dir, 20, use_cache=False)
    assert not ((ci.codec == "raw") & (ci.metric == "psnr")).any()  # identical resamples: no spread reported
    jpeg = ci[(ci.codec == "jpeg") & (ci.metric == "psnr")].iloc[0]
    point = summary[summary.codec == "jpeg"].psnr.iloc[0]
    assert jpeg.low <= point <= jpeg.high


def test_resume_refuses_changed_provenance_unless_asked(tmp_path, monkeypatch, capsys):
    from benchmark.cli import main

    config = RunConfig(dataset="sample:6", split="all", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"}, chunk_size=2,
                       codecs=[parse_codec_spec("codecs_for_tests:Versioned")])
    run_dir = create_run(config, tmp_path / "runs", "v", progress=False)
    execute(run_dir, jobs=1, progress=False)
    shard = sorted((run_dir / "images" / "versioned").glob("*.parquet"))[-1]
    shard.unlink()  # as if killed before this task committed
    monkeypatch.setenv("CMCBENCH_TEST_FAKELIB", "2.0")  # the codec's library was upgraded meanwhile
    capsys.readouterr()
    assert main(["run", "--resume", str(run_dir), "--no-progress", "--no-plots"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "codec versioned's versions changed" in err and "--resume-anyway" in err
    assert not shard.exists()
    assert main(["run", "--resume", str(run_dir), "--resume-anyway", "--no-progress", "--no-plots"]) == 0
    images, _ = load_run(run_dir)
    assert set(images.codec_versions) == {'{"fakelib": "1.0"}', '{"fakelib": "2.0"}'}  # each row, its own
    info = __import__("json").loads((run_dir / "config.json").read_text())
    assert "codec versioned's versions changed" in info["resumed_with"][0]["changes"][0]


def test_a_plug_in_codecs_rows_name_the_code_that_made_them(tmp_path, monkeypatch, capsys):
    """A codec from a loose module records its file's sha256; one from a git checkout with uncommitted changes, the
    sha256 of the diff; one in a git-ignored folder of a checkout (a virtual environment inside it), not that
    checkout's revision. An edit between a kill and a resume is refused like an upgraded library."""
    import hashlib
    import importlib
    import json
    import os
    import subprocess

    from benchmark.cli import main
    from benchmark.run.provenance import source_revision

    source = 'from baselines.webp import WebP\n\n\nclass Mine(WebP):\n    name = "mine"\n'
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "loosecodec.py").write_text(source)
    monkeypatch.syspath_prepend(str(loose))
    config = RunConfig(dataset="sample:6", split="all", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"}, chunk_size=2,
                       codecs=[parse_codec_spec("loosecodec:Mine quality=50")])
    run_dir = create_run(config, tmp_path / "runs", "loose", progress=False)
    execute(run_dir, jobs=1, progress=False)
    images, _ = load_run(run_dir)
    assert set(images.codec_versions.map(lambda v: json.loads(v)["source_sha256"])) == {
        hashlib.sha256(source.encode()).hexdigest()}
    sorted((run_dir / "images" / "mine").glob("*.parquet"))[-1].unlink()  # as if killed before it committed
    (loose / "loosecodec.py").write_text(source + "# edited before the resume\n")
    capsys.readouterr()
    assert main(["run", "--resume", str(run_dir), "--no-progress", "--no-plots"]) == 1
    assert "codec mine's versions changed" in capsys.readouterr().err

    repo = tmp_path / "repo"
    (repo / "venv").mkdir(parents=True)
    env = {**os.environ, **{f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                            for what, value in (("NAME", "t"), ("EMAIL", "t@t"))}}

    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True).stdout

    (repo / "gitcodec.py").write_text(source)
    (repo / ".gitignore").write_text("venv/\n")
    (repo / "venv" / "venvcodec.py").write_text(source)
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "model")
    monkeypatch.syspath_prepend(str(repo))
    monkeypatch.syspath_prepend(str(repo / "venv"))
    tracked, ignored = importlib.import_module("gitcodec").Mine, importlib.import_module("venvcodec").Mine
    head = git("rev-parse", "HEAD").decode().strip()
    assert source_revision(tracked) == {"source_git_sha": head, "source_git_date": git("log", "-1", "--format=%cI")
                                        .decode().strip()}
    assert source_revision(ignored) == {"source_sha256": hashlib.sha256(source.encode()).hexdigest()}
    (repo / "gitcodec.py").write_text(source + "# uncommitted\n")
    dirty = source_revision(tracked)
    assert dirty["source_git_sha"] == head + "-dirty"
    assert dirty["source_diff_sha256"] == hashlib.sha256(git("diff", "HEAD", "--binary").strip()).hexdigest()
    (repo / "gitcodec.py").write_text(source + "# uncommitted, then changed again\n")
    assert source_revision(tracked)["source_diff_sha256"] != dirty["source_diff_sha256"]
    # a module it imports that is not added yet: git diff does not see it, nor edits to it; an ignored one is not it
    assert "source_untracked_sha256" not in dirty
    (repo / "helper.py").write_text("SCALE = 1\n")
    first = source_revision(tracked)["source_untracked_sha256"]
    (repo / "helper.py").write_text("SCALE = 2\n")
    second = source_revision(tracked)["source_untracked_sha256"]
    assert second != first
    (repo / "venv" / "venvhelper.py").write_text("ignored = True\n")
    (repo / "notes.txt").write_text("not Python\n")
    assert source_revision(tracked)["source_untracked_sha256"] == second


def test_pass_counters_survive_a_crash_between_features_and_shard(tmp_path, random_inception_weights):
    inception = {"enabled": True, "weights": str(random_inception_weights), "device": "cpu", "batch_size": 8,
                 "isc_splits": 2, "kid_subsets": 5, "kid_subset_size": 3, "seed": 2020, "patch_fid": False}
    config = RunConfig(dataset="sample:6", split="all", inception=inception, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"}, chunk_size=1,
                       codecs=[parse_codec_spec("jpeg quality=30,70")])
    run_dir = create_run(config, tmp_path / "runs", "crash", progress=False)
    seen = []

    def crash_on_third(result):  # runs after the Inception stage saved its work, before the shard is written
        seen.append(result.task)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute(run_dir, jobs=1, progress=False, on_result=crash_on_third)
    # the stage took 4 tasks in one batch (8 reconstructions, batch 8); 2 shards were written before the crash
    assert len(list((run_dir / "images" / "jpeg").glob("*.parquet"))) == 2
    outcome = execute(run_dir, jobs=1, progress=False)
    assert outcome.passes["reference"] == 6  # each original once, although its task ran twice
    assert outcome.passes["reconstruction"] == 6 * 2 + 2 * 2  # every pass made, the 2 redone tasks' too


def _cmp_run(tmp_path, name, dataset, codecs):
    config = RunConfig(dataset=dataset, inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"}, codecs=[parse_codec_spec(c) for c in codecs])
    run_dir = create_run(config, tmp_path / "runs", name, progress=False)
    execute(run_dir, jobs=1, progress=False)
    return str(run_dir)


def test_compare_judges_curves_and_refuses_what_it_cannot_compare(tmp_path, natural_images, capsys):
    from benchmark.cli import EXIT_NOT_COMPARABLE, EXIT_REGRESSION, main

    folder = f"folder:{natural_images}"
    base = _cmp_run(tmp_path, "base", folder, ["jpeg quality=10,30,50,70,90", "codecs_for_tests:NoisyJPEG label=nj"])
    shifted = _cmp_run(tmp_path, "shifted", folder, ["jpeg quality=15,35,55,75,95",
                                                     "codecs_for_tests:NoisyJPEG label=nj"])
    worse = _cmp_run(tmp_path, "worse", folder, ["jpeg quality=10,30,50,70,90",
                                                 "codecs_for_tests:NoisyJPEG sigma=6 label=nj"])
    capsys.readouterr()
    # JPEG moved along its own curve: fewer settings in common, no regression.
    assert main(["compare", base, shifted, "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "jpeg" in out and "Curves" in out
    # A decoder that got worse at the same bits: named, with its BD interval.
    assert main(["compare", base, worse, "--bootstrap", "100"]) == EXIT_REGRESSION
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("REGRESSION"))
    assert "psnr (nj) BD -" in line and "jpeg" not in line
    # Nothing in common, a codec missing, other data: each its own sentence and exit status.
    high = _cmp_run(tmp_path, "high", folder, ["jpeg quality=97,99"])
    low = _cmp_run(tmp_path, "low", folder, ["jpeg quality=3,5"])
    assert main(["compare", high, low, "--bootstrap", "20"]) == EXIT_NOT_COMPARABLE
    assert "Nothing could be compared" in capsys.readouterr().err
    only_jpeg = _cmp_run(tmp_path, "only", folder, ["jpeg quality=10,30,50,70,90"])
    assert main(["compare", base, only_jpeg, "--bootstrap", "20"]) == EXIT_NOT_COMPARABLE
    assert "codec nj is in BASE but not in NEW" in capsys.readouterr().err
    assert main(["compare", base, only_jpeg, "--bootstrap", "20", "--allow-missing"]) == 0
    other = _cmp_run(tmp_path, "other", "sample:4", ["jpeg quality=10,30,50,70,90"])
    assert main(["compare", only_jpeg, other, "--bootstrap", "20"]) == EXIT_NOT_COMPARABLE
    assert "different data" in capsys.readouterr().err
    assert main(["compare", base, base, "--tolerance", "foo=1"]) == 1
    assert "Unknown metric 'foo'" in capsys.readouterr().err
    assert main(["compare", base, base, "--tolerance", "psnr=-1"]) == 1
    assert "must be 0 or more" in capsys.readouterr().err



def test_a_tolerance_with_two_percent_signs_is_one_sentence():
    """'bpp=1%%' passed the check as 1 and failed later as "could not convert string to float: '1%'"."""
    from benchmark.analysis.compare import parse_tolerances

    assert parse_tolerances(["bpp=1%"])["bpp"] == "1%"
    with pytest.raises(ValueError) as caught:
        parse_tolerances(["bpp=1%%"])
    assert str(caught.value) == "Tolerance 'bpp=1%%': '1%%' is not a number."

def test_leaderboard_refuses_mixed_datasets_unless_asked(tmp_path, natural_images):
    from benchmark.analysis import leaderboard

    a = _cmp_run(tmp_path, "a", f"folder:{natural_images}", ["jpeg quality=10,50,90"])
    b = _cmp_run(tmp_path, "b", "sample:4", ["webp quality=10,50,90"])
    with pytest.raises(ValueError, match="different datasets or preprocessing.*--allow-mixed"):
        leaderboard.build([a, b], resamples=0)
    board = leaderboard.build([a, b], resamples=0, allow_mixed=True)
    assert all("[" in c for c in board.settings.codec)  # every row says its dataset


def test_rate_matching_says_how_many_images_reached_the_target(tmp_path, natural_images, capsys):
    from benchmark.cli import main

    code = main(["run", "--dataset", str(natural_images), "--codec", "jpeg bpp=0.01,1.0", "--out", str(tmp_path),
                 "--name", "rm", "--metrics", "none", "--lpips", "none", "--no-ms-ssim", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "rate matching jpeg@bpp target 0.01 bpp: 0 of 4 images within tolerance (below-range 4)" in out
    assert "NOT the target" in out
    _, summary = load_run(tmp_path / "rm")
    assert list(summary.rate_n_matched) == [0, 4]


def test_a_codec_hanging_in_native_code_is_killed_and_only_its_rows_fail(tmp_path, natural_images):
    config = RunConfig(dataset=f"folder:{natural_images}", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"}, timeout=1.0,
                       codecs=[parse_codec_spec("codecs_for_tests:NativeHang"), parse_codec_spec("jpeg quality=50")])
    run_dir = create_run(config, tmp_path / "runs", "hang", progress=False)
    outcome = execute(run_dir, jobs=2, progress=False)
    images, _ = load_run(run_dir)
    failed = images[images.status != "ok"]
    assert set(failed.image_id) == {"img1.png"} and set(failed.codec) == {"nativehang"} and len(failed) == 2
    assert failed.error.str.startswith("decode timed out after 1 s (stuck in native code").all()
    assert outcome.n_failed == 2 and len(images) == 4 * 2 + 4
    assert not (run_dir / ".heartbeats").exists()


def test_leaderboard_intervals_come_from_each_resample(tmp_path, natural_images):
    from benchmark.analysis import leaderboard

    run = _cmp_run(tmp_path, "lb", f"folder:{natural_images}", ["jpeg quality=10,30,50,70,90",
                                                                "webp quality=10,30,50,70,90"])
    board = leaderboard.build([run], anchor="jpeg", rates=[0.5, 1.0], resamples=100)
    at = board.at_rates[board.at_rates.value.notna()]
    assert len(at) and at.low.notna().all() and (at.low <= at.value).all() and (at.value <= at.high).all()
    row = board.bd[(board.bd.codec == "webp") & (board.bd.metric == "psnr")].iloc[0]
    assert row.bd_rate_low <= row.bd_rate <= row.bd_rate_high and row.bd_metric_low <= row.bd_metric <= row.bd_metric_high
    assert row.reliable == (row.overlap >= 0.5)
    assert "[" in leaderboard.render(board, "md")  # intervals printed with the BD numbers


def test_a_successful_download_goes_to_the_temporary_hub_and_is_used(monkeypatch, tmp_path, no_downloads):
    import torch
    import torchvision

    from benchmark.run import fullref

    monkeypatch.delenv("CMCBENCH_OFFLINE")  # as on a machine with internet
    fetched = []

    def fake_download(url, dst, hash_prefix=None, progress=True):  # the network, faked: random-init AlexNet
        fetched.append(url)
        torch.save(torchvision.models.alexnet(weights=None).state_dict(), dst)

    monkeypatch.setattr("metrics.download.download_url_to_file", fake_download)
    state = fullref.resolve({"ms_ssim": False, "lpips": "auto"})["lpips"]
    assert state["status"] == "ok" and fetched == ["https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"]
    assert state["backbone_path"].startswith(__import__("os").environ["TORCH_HOME"])  # the test's hub, not the user's
    again = fullref.resolve({"ms_ssim": False, "lpips": "auto"})["lpips"]
    assert again["backbone_sha256"] == state["backbone_sha256"] and len(fetched) == 1  # downloaded once


def test_set_metrics_with_failed_rows_pair_each_reconstruction_with_its_original(tmp_path, random_inception_weights):
    """When a codec fails on some images, FID and KID compare its reconstructions with the originals of those
    same images, as the bootstrap does: the estimate lies inside its interval and an FID interval stays >= 0."""
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(3)
    for k in range(6):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(data / f"img{k}.png")
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(data / "tiny.png")  # JPEG 2000 fails
    inception = {"enabled": True, "weights": str(random_inception_weights), "device": "cpu", "batch_size": 8,
                 "isc_splits": 2, "kid_subsets": 5, "kid_subset_size": 3, "seed": 2020, "patch_fid": False}
    config = RunConfig(dataset=str(data), inception=inception, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"}, codecs=[parse_codec_spec("jpeg2000 ratio=24")])
    run_dir = create_run(config, tmp_path / "runs", "failed", progress=False)
    execute(run_dir, jobs=1, progress=False)
    _, summary = load_run(run_dir)
    assert int(summary.n_ok.iloc[0]) == 6 and int(summary.n_failed.iloc[0]) == 1
    data_ = bootstrap.load_settings(run_dir)[next(iter(bootstrap.load_settings(run_dir)))]
    with data_.held():
        assert summary.fid.iloc[0] == pytest.approx(fid(data_.pool, data_.ref_pool), rel=1e-9)
    assert "against the originals of the 6 of 7 images" in summary.inception_note.iloc[0]
    ci = bootstrap.intervals(run_dir, 50, 0, use_cache=False).set_index("metric")
    assert 0 <= ci.loc["fid", "low"] <= summary.fid.iloc[0] <= ci.loc["fid", "high"]


def test_resume_refusal_names_uncommitted_changes_as_the_cause(tmp_path, monkeypatch):
    """Edits to tracked files change the recorded revision by its '-dirty' mark alone: the refusal says so rather
    than 'abc -> abc'."""
    from benchmark.run import provenance, runner

    config = RunConfig(dataset="sample:3", split="all", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"}, codecs=[parse_codec_spec("jpeg quality=50")])
    run_dir = create_run(config, tmp_path / "runs", "d", progress=False)
    info = runner.read_run_info(run_dir)
    clean = "0123456789abcdef0123456789abcdef01234567"
    for recorded, now, said in ((clean, clean + "-dirty", f"({clean[:12]} -> {clean[:12]} with uncommitted changes)"),
                                (clean + "-dirty", clean, f"({clean[:12]} with uncommitted changes -> {clean[:12]})")):
        monkeypatch.setattr(provenance, "git_sha", lambda now=now: now)
        changes, _ = runner.provenance_changes(dataclasses.replace(info, git_sha=recorded))
        assert changes == [f"the cmcbench revision changed {said}"], changes


def _rd(bpp) -> np.ndarray:
    """A smooth, concave rate-PSNR curve, as codecs have."""
    r = np.log(np.asarray(bpp, float))
    return 32 + 6 * r - 0.9 * r ** 2


@pytest.mark.parametrize("shift", [0.82, 0.9, 1.1, 1.22])
def test_a_curve_moved_along_itself_is_within_the_fit_error_and_a_real_loss_is_not(shift):
    """Sampling the same curve at other rates changes BD through the interpolation alone; the fit error (methods'
    spread, one point left out) covers that, and stays far below a real 0.2 dB loss, which the verdict names."""
    from benchmark.analysis.compare import _curve_verdict
    from benchmark.analysis.curves import Curve, compare_curves, fit_error

    base_bpp = np.array([0.15, 0.4, 1.0, 2.4])
    base = Curve("c", "psnr", base_bpp, _rd(base_bpp))
    moved = Curve("c", "psnr", base_bpp * shift, _rd(base_bpp * shift))
    bd = compare_curves(base, moved)["bd_metric"]
    fit, why = fit_error(base, moved)
    assert 0 < abs(bd) <= fit < 0.1 and "one point out" in why  # well below the 0.2 dB loss below
    # a tight interval that excludes zero: significant, but within the fit error, so the same codec
    same = _curve_verdict("c", "psnr", [(bd, 0.0, "")] + [(bd * 0.9, 0, "")] * 50 + [(bd * 1.1, 0, "")] * 50,
                          0.01 if abs(bd) > 0.01 else abs(bd) / 2, 0.95, 24, 100, float("nan"), (fit, why))
    assert same["verdict"] == "same" and same["significant"] and same["why"].startswith("same: |BD|")
    assert "curve-fit error" in same["why"]
    lossy = Curve("c", "psnr", moved.bpp, moved.value - 0.2)
    bd_loss = compare_curves(base, lossy)["bd_metric"]
    worse = _curve_verdict("c", "psnr", [(bd_loss, 0.0, "")] + [(bd_loss - 0.01, 0, "")] * 50
                           + [(bd_loss + 0.01, 0, "")] * 50, 0.01, 0.95, 24, 100, float("nan"), fit_error(base, lossy))
    assert worse["verdict"] == "worse" and worse["why"].startswith("worse: BD -0.2") and "excludes 0" in worse["why"]


def test_the_fit_error_of_two_point_curves_does_not_claim_a_point_was_left_out():
    """Two settings per codec have no interior point to leave out: the fit error read "one point out 0", a
    measurement that was never made; it rests on the methods' spread alone and says so."""
    from benchmark.analysis.curves import Curve, fit_error

    bpp = np.array([0.2, 0.9])
    fit, why = fit_error(Curve("c", "psnr", bpp, _rd(bpp)), Curve("c", "psnr", bpp * 0.8, _rd(bpp * 0.8) + 0.3))
    assert fit > 0 and "one point out" not in why and why.endswith("no curve has an interior point to leave out")
    assert why.startswith(f"interpolation methods disagree by {fit:.3g}")


def test_resuming_a_finished_run_leaves_its_summary_and_writing_one_is_checked_like_a_task(tmp_path, monkeypatch):
    """--resume of a finished run made by another cmcbench revision rewrote its summary with this code, under the
    provenance of the code that made the run, and without a word; a run killed after its last task, before its
    summary, was finished by another revision the same way. The summary of a finished run stands as its own code
    wrote it; one still to write is refused under changed provenance unless --resume-anyway, which records it."""
    import json

    from benchmark.run import provenance

    config = RunConfig(dataset="sample:3", split="all", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"}, codecs=[parse_codec_spec("jpeg quality=50")])
    run_dir = create_run(config, tmp_path / "runs", "done", progress=False)
    execute(run_dir, jobs=1, progress=False)
    written = (run_dir / "summary.parquet").read_bytes()
    later = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setattr(provenance, "git_sha", lambda: later)
    execute(run_dir, jobs=1, progress=False, resume=True)  # finished: nothing to do, nothing refused
    assert (run_dir / "summary.parquet").read_bytes() == written
    assert "resumed_with" not in json.loads((run_dir / "config.json").read_text())
    (run_dir / "summary.parquet").unlink()  # as if killed after its last task
    with pytest.raises(RuntimeError, match=r"Cannot resume .*: the cmcbench revision changed \(.* -> 0123456789ab\)"
                                           r".* with the new provenance recorded in config.json\.$"):
        execute(run_dir, jobs=1, progress=False, resume=True)
    assert not (run_dir / "summary.parquet").exists()
    execute(run_dir, jobs=1, progress=False, resume=True, resume_anyway=True)
    assert (run_dir / "summary.parquet").exists()
    assert json.loads((run_dir / "config.json").read_text())["resumed_with"][0]["git_sha"] == later
