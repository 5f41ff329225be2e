"""The Inception stage end to end, with a seeded random InceptionV3 saved as a local weights file."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmark.codecs.codec_spec import parse_codec_spec
from benchmark.data.datasets import open_dataset
from benchmark.run.results import load_run
from benchmark.run.runner import RunConfig, create_run, execute
from metrics import inception as inception_module
from metrics.inception import InceptionExtractor, file_sha256

N = 12


def _config(weights, codecs=("jpeg quality=10,90",), dataset="sample:36", **kw):
    return RunConfig(dataset=dataset, codecs=[parse_codec_spec(c) for c in codecs],
                     inception={"enabled": True, "weights": str(weights), "sha256": None, "device": "cpu",
                                "batch_size": 8, "isc_splits": 4, "kid_subsets": 10, "kid_subset_size": 8,
                                "seed": 2020}, **kw)


def _run(tmp_path, config, jobs=2):
    run_dir = create_run(config, tmp_path / "results", progress=False)
    outcome = execute(run_dir, jobs=jobs, progress=False)
    return outcome, *load_run(run_dir)


def test_agrees_with_torch_fidelity_calculate_metrics(tmp_path, random_inception_weights):
    import torch
    from torch_fidelity import calculate_metrics

    from metrics.inception import at_least_two_threads

    outcome, images, summary = _run(tmp_path, _config(random_inception_weights, save_reconstructions=True))
    assert outcome.inception["status"] == "ok" and len(summary) == 2
    originals = tmp_path / "originals"
    originals.mkdir()
    ds = open_dataset("sample:36")
    assert len(ds) == N
    for r in ds.records:
        Image.fromarray(ds.read(r).pixels).save(originals / f"{r.image_id}.png")
    extractor = InceptionExtractor(str(random_inception_weights), file_sha256(random_inception_weights), "cpu", 8)
    ref_pool, _ = extractor([ds.read(r).pixels for r in ds.records])
    for quality in (10, 90):
        recon_dir = outcome.run_dir / "outputs" / "jpeg" / str(quality)
        # The network on the kernels cmcbench's extractor uses: on one thread PyTorch picks others for a batch of 8
        # (features 4e-5 apart), which would test the thread setting, not the metrics' arithmetic.
        with at_least_two_threads(torch):
            ref = calculate_metrics(input1=str(recon_dir), input2=str(originals), cuda=False, isc=True, fid=True,
                                    kid=True, feature_extractor_weights_path=str(random_inception_weights),
                                    isc_splits=4, kid_subsets=10, kid_subset_size=8, batch_size=8, verbose=False,
                                    save_cpu_ram=True)
        row = summary[summary.setting == quality].iloc[0]
        assert row.n_features == N
        # 12 samples of 2048-d features: torch-fidelity's non-symmetric eigenvalues carry round-off from the
        # ~2000 zero eigenvalues (6.5e-5 relative measured here); cmcbench's FID is the exact one (test_trust
        # checks it against a 40-digit reference, and against torch-fidelity to 1e-6 where n >= d).
        assert row.fid == pytest.approx(ref["frechet_inception_distance"], rel=2e-4)
        assert row.kid == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-6)
        assert row.kid_std == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-5)
        assert row.inception_score == pytest.approx(ref["inception_score_mean"], rel=1e-4)
        assert row.inception_score_std == pytest.approx(ref["inception_score_std"], rel=1e-3)
        # IPD by hand: squared distance between paired pool3 features, paired by image id
        rec = sorted(recon_dir.glob("*.png"))
        assert [p.stem for p in rec] == [r.image_id for r in ds.records]
        rec_pool, _ = extractor([np.asarray(Image.open(p)) for p in rec])
        by_hand = np.square(ref_pool.astype(np.float64) - rec_pool).sum(1)
        per_image = images[images.setting == quality].set_index("image_id").loc[[p.stem for p in rec], "ipd"]
        assert np.allclose(per_image.to_numpy(), by_hand, rtol=1e-5)
        assert row.ipd == pytest.approx(by_hand.mean(), rel=1e-5)
    assert summary.set_index("setting").fid[90] < summary.set_index("setting").fid[10]
    assert "FID from 12 < 2048 samples" in summary.inception_note.iloc[0]


def test_pass_counter_and_reference_cache(tmp_path, random_inception_weights):
    codecs = ("jpeg quality=10,50,90", "jpeg2000 ratio=48")
    first, _, s1 = _run(tmp_path, _config(random_inception_weights, codecs, limit=5))
    assert first.passes == {"reference": 5, "reconstruction": 5 * 4, "patches": 0}  # N x (1 + S)
    assert (s1.inception_passes_reference == 5).all()
    second, _, s2 = _run(tmp_path, _config(random_inception_weights, codecs, limit=5))
    assert second.passes == {"reference": 0, "reconstruction": 5 * 4, "patches": 0}  # N x S: cached originals
    pd.testing.assert_series_equal(s1.fid, s2.fid)


def test_resume_keeps_features_and_counts(tmp_path, random_inception_weights):
    config = _config(random_inception_weights, limit=4)
    run_dir = create_run(config, tmp_path / "results", progress=False)
    execute(run_dir, jobs=1, progress=False)
    _, before = load_run(run_dir)
    shard = sorted((run_dir / "images" / "jpeg").glob("*.parquet"))[1]
    shard.unlink()  # as if the run had been killed before this task committed
    execute(run_dir, jobs=1, progress=False)
    _, after = load_run(run_dir)
    cols = ["codec", "setting_index", "bpp", "psnr", "ipd", "fid", "kid", "inception_score"]
    pd.testing.assert_frame_equal(before[cols], after[cols])
    assert json.loads((run_dir / "inception_passes.json").read_text()) == {"reference": 4, "reconstruction": 10,
                                                                           "patches": 0}


def test_without_weights_metrics_are_unavailable_not_zero(tmp_path, monkeypatch, no_downloads):
    monkeypatch.setattr(inception_module, "STANDARD_URL", "http://127.0.0.1:9/weights-inception-x.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(inception_module.ENV_WEIGHTS, raising=False)
    config = _config("x", limit=2)
    config.inception = dataclasses.replace(config.inception, weights=None)
    outcome, images, summary = _run(tmp_path, config)
    assert outcome.inception["status"] == "unavailable" and "--inception-weights" in outcome.inception["reason"]
    assert outcome.n_failed == 0 and images.psnr.notna().all()
    assert summary[["fid", "kid", "inception_score", "ipd"]].isna().all().all()
    assert summary.inception_status.str.startswith("unavailable: no Inception weights").all()


def test_wrong_sha256_is_refused(tmp_path, random_inception_weights):
    config = _config(random_inception_weights, limit=1)
    config.inception = dataclasses.replace(config.inception, sha256="0" * 64)
    run_dir = create_run(config, tmp_path / "results", progress=False)
    info = json.loads((run_dir / "config.json").read_text())
    assert info["inception"]["status"] == "unavailable" and "expected 0000" in info["inception"]["reason"]


def _large_images(tmp_path, n: int, height: int, seed: int):
    """n blocky 512-pixel-wide images, large enough for FID/256's patches."""
    folder = tmp_path / "large"
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        base = np.asarray(Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((512, height)))
        Image.fromarray(base).save(folder / f"im{i}.png")
    return folder


def test_patch_fid_over_256_patches_and_shifted_grid(tmp_path, random_inception_weights):
    from metrics.fid import fid
    from metrics.patches import fid256_patches

    folder = _large_images(tmp_path, 4, 384, seed=4)
    assert len(fid256_patches(np.zeros((384, 512, 3), np.uint8))) == 2 + 1  # 2x1 grid, 1 shifted by 128
    config = _config(random_inception_weights, ("jpeg quality=20",), dataset=str(folder))
    config.inception = dataclasses.replace(config.inception, patch_fid=True)
    outcome, images, summary = _run(tmp_path, config)
    assert outcome.passes == {"reference": 4, "reconstruction": 4, "patches": 2 * 4 * 3}
    extractor = InceptionExtractor(str(random_inception_weights), file_sha256(random_inception_weights), "cpu", 8)
    originals = [np.asarray(Image.open(folder / f"im{i}.png")) for i in range(4)]
    recons = [np.asarray(Image.open(__import__("io").BytesIO(_jpeg(o, 20)))) for o in originals]
    ref, _ = extractor([p for o in originals for p in fid256_patches(o)])
    rec, _ = extractor([p for r in recons for p in fid256_patches(r)])
    row = summary.iloc[0]
    assert row.n_patches == 12 and row.patch_fid == pytest.approx(fid(rec, ref), rel=1e-6)
    assert "patch FID from 12 < 2048 patches" in row.inception_note


def test_patch_fid_after_a_run_without_it_on_the_same_cache_and_with_the_cache_gone(tmp_path, capsys,
                                                                                      random_inception_weights):
    """Originals' whole-image features cached by a run without patch FID: a run with it computes their patches
    (one pass per original, its whole features read from the cache), and keeps both in its own copy."""
    import shutil

    folder = _large_images(tmp_path, 3, 256, seed=5)
    plain = _config(random_inception_weights, ("jpeg quality=20",), dataset=str(folder))
    first, _, _ = _run(tmp_path, plain)
    assert first.passes == {"reference": 3, "reconstruction": 3, "patches": 0}
    patched = _config(random_inception_weights, ("jpeg quality=20",), dataset=str(folder))
    patched.inception = dataclasses.replace(patched.inception, patch_fid=True)
    second, _, summary = _run(tmp_path, patched)
    assert second.passes == {"reference": 3, "reconstruction": 3, "patches": 2 * 3 * 2}  # a 2x1 grid, none shifted
    assert summary.n_patches.iloc[0] == 6 and np.isfinite(summary.patch_fid.iloc[0])
    before = summary[["fid", "patch_fid"]]
    shutil.rmtree(tmp_path / "results" / ".cache")
    capsys.readouterr()
    execute(second.run_dir, progress=False)  # the finished run's own copy holds what its summary needs
    assert "were in neither" not in capsys.readouterr().err  # nothing computed again
    pd.testing.assert_frame_equal(load_run(second.run_dir)[1][["fid", "patch_fid"]], before)


def _jpeg(pixels, quality):
    import io

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture
def one_thread():
    """torch on one CPU thread for the test, as under OMP_NUM_THREADS=1 or on a one-core machine; restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_inception_score_does_not_depend_on_the_batches_its_images_shared(random_inception_weights, one_thread):
    """A set's logits (and so its IS) are the same whether its images went through the network in batches of 1,
    7 or 16, mixed with other images: the fc product is taken per image in float64, not in the network's float32
    batch product, whose rounding depends on the batch's shape. On one thread too, where PyTorch picks another
    convolution kernel for a batch of 16 than for one of 1 (the extractor runs the network on two)."""
    import torch
    from torch_fidelity.metric_isc import isc_features_to_metric

    from benchmark.data.sample import render
    from metrics.inception_score import inception_score

    images = [np.array(render(i)) for i in range(30)]
    ours, others = list(range(0, 30, 2)), list(range(1, 30, 2))  # 15 images scored among 15 others
    order = [i for pair in zip(ours, others) for i in pair]
    by_batch = {}
    for batch_size in (1, 7, 16):
        extractor = InceptionExtractor(str(random_inception_weights), file_sha256(random_inception_weights), "cpu",
                                       batch_size)
        pool, logits = extractor([images[i] for i in order])
        mine = [k for k, i in enumerate(order) if i in ours]
        by_batch[batch_size] = (pool[mine], logits[mine], inception_score(logits[mine], splits=3))
    pool1, logits1, score1 = by_batch[1]
    assert score1[0] > 1
    for batch_size in (7, 16):
        pool, logits, score = by_batch[batch_size]
        # FID's input was already batch-independent; the logits now are too, so IS is identical, not close.
        np.testing.assert_array_equal(pool, pool1)
        np.testing.assert_array_equal(logits, logits1)
        assert score == score1, batch_size
    # The network's own batched logits round differently by batch shape, but agree with ours to float32 precision,
    # and torch-fidelity's IS on them stays within its tolerance of ours.
    model = extractor.model.__class__("inception-v3-compat", ["logits_unbiased"],
                                      feature_extractor_weights_path=str(random_inception_weights)).eval()
    with torch.inference_mode():
        (theirs,) = model(torch.from_numpy(np.stack([images[i] for i in ours])).permute(0, 3, 1, 2))
    assert np.allclose(theirs.numpy(), logits1, rtol=1e-4, atol=1e-4 * np.abs(logits1).max())
    reference = isc_features_to_metric(theirs, splits=3)
    assert score1[0] == pytest.approx(reference["inception_score_mean"], rel=1e-5)
