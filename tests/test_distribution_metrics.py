"""FD-DINOv2 and precision/recall/density/coverage: a random-init DINOv2 (transformers' architecture) saved as
a checkpoint folder and loaded through --dinov2's path; each number against an independent reference."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from benchmark.codecs.codec_spec import parse_codec_spec
from benchmark.data.datasets import open_dataset
from benchmark.run.results import load_run, output_path
from benchmark.run.runner import RunConfig, create_run, execute
from metrics.prdc import prdc


@pytest.fixture(scope="session")
def tiny_dinov2(tmp_path_factory):
    from tiny_models import tiny_dinov2

    return tiny_dinov2(tmp_path_factory.mktemp("dinov2") / "tiny-dinov2")


def _config(model, codecs=("jpeg quality=5,90",), k=3, **kw):
    return RunConfig(dataset="sample", codecs=[parse_codec_spec(c) for c in codecs],
                     inception={"enabled": False, "device": "cpu", "batch_size": 5}, caption_embedder="none",
                     image_metrics={"ms_ssim": False, "lpips": "none"}, dinov2={"model": str(model), "k": k}, **kw)


def _torch_fidelity_dinov2(folder):
    """torch-fidelity's own DINOv2 extractor (its resize, normalisation and dtype handling) around the same
    network: torch-fidelity itself fetches the network from GitHub's torch.hub and takes no local path."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2
    from transformers import Dinov2Model

    class CLSToken(torch.nn.Module):  # torch.hub's DINOv2 forward: the final-layernorm CLS token
        def __init__(self):
            super().__init__()
            self.net = Dinov2Model.from_pretrained(folder).eval()

        def forward(self, x):
            return self.net(pixel_values=x).pooler_output

    extractor = FeatureExtractorDinoV2.__new__(FeatureExtractorDinoV2)
    FeatureExtractorBase.__init__(extractor, "dinov2-vit-l-14", ["dinov2"])
    extractor.feature_extractor_internal_dtype = torch.float32
    extractor.model = CLSToken()
    return extractor.eval()


def _features(extractor, images):
    with torch.no_grad():
        return extractor(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2))[0].numpy().astype(np.float64)


def test_fd_dinov2_and_prdc_equal_torch_fidelity_and_prdc_on_the_same_network(tiny_dinov2, tmp_path):
    from prdc import compute_prdc
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    run_dir = create_run(_config(tiny_dinov2, save_reconstructions=True), tmp_path / "runs", "d", progress=False)
    execute(run_dir, jobs=2, progress=False)
    images, summary = load_run(run_dir)
    assert (summary.dinov2_status == "ok").all() and len(summary) == 2
    ds = open_dataset("sample")
    reference = _torch_fidelity_dinov2(tiny_dinov2)
    real = _features(reference, [ds.read(r).pixels for r in ds.records])
    for _, row in summary.iterrows():
        recon = [np.asarray(Image.open(output_path(run_dir, "jpeg", row.setting_label, r.image_id, ".png")))
                 for r in ds.records]
        fake = _features(reference, recon)
        expected = fid_statistics_to_metric(fid_features_to_statistics(torch.from_numpy(fake)),
                                            fid_features_to_statistics(torch.from_numpy(real)), False)
        assert row.n_dinov2 == len(ds) == 16
        # abs: the distance is ~2e-3, a difference of traces of float32 features; convolutions summed in
        # another order (another thread count, batch) move it by ~1e-8 (seen: 4.5e-6 relative under load)
        assert row.fd_dinov2 == pytest.approx(expected["frechet_inception_distance"], rel=1e-6, abs=1e-7)
        prc = prc_features_to_metric(torch.from_numpy(fake).float(), torch.from_numpy(real).float(),
                                     prc_neighborhood=3, prc_batch_size=10000, save_cpu_ram=False, verbose=False)
        assert row.dinov2_precision == pytest.approx(prc["precision"], abs=1e-6)
        assert row.dinov2_recall == pytest.approx(prc["recall"], abs=1e-6)
        dc = compute_prdc(real, fake, nearest_k=3)  # the authors' package: density and coverage
        assert row.dinov2_density == pytest.approx(dc["density"], abs=1e-9)
        assert row.dinov2_coverage == pytest.approx(dc["coverage"], abs=1e-9)
    by_quality = summary.set_index("setting")
    assert by_quality.fd_dinov2[90] < by_quality.fd_dinov2[5]
    assert "FD-DINOv2 from 16 < 2048 samples" in summary.dinov2_note.iloc[0]


def test_prdc_agrees_with_both_references_and_separates_sets():
    from prdc import compute_prdc
    from torch_fidelity.metric_prc import calculate_precision_recall_full

    rng = np.random.default_rng(1)
    real = rng.normal(size=(300, 12))
    for shift, scale in ((0.0, 1.0), (1.5, 0.5)):
        fake = rng.normal(size=(250, 12)) * scale + shift
        ours = prdc(fake, real, k=5, block=64)  # blocks smaller than the sets: the blocked path
        p, r = calculate_precision_recall_full(torch.from_numpy(fake).float(), torch.from_numpy(real).float(), 5)
        assert (ours["precision"], ours["recall"]) == (pytest.approx(p, abs=1e-6), pytest.approx(r, abs=1e-6))
        ref = compute_prdc(real, fake, nearest_k=5)
        assert ours["density"] == pytest.approx(ref["density"]) and ours["coverage"] == pytest.approx(ref["coverage"])
    assert ours["precision"] < 0.5 and ours["recall"] < 0.5  # a shifted, narrow set is neither realistic nor diverse
    with pytest.raises(ValueError, match="more than k=5"):
        prdc(fake[:5], real, k=5)


def test_one_pass_per_image_per_setting_and_originals_cached_across_runs(tiny_dinov2, tmp_path):
    codecs = ("jpeg quality=10,50,90", "webp quality=30")
    first = create_run(_config(tiny_dinov2, codecs), tmp_path / "runs", "a", progress=False)
    execute(first, jobs=2, progress=False)
    _, s1 = load_run(first)
    assert json.loads((first / "dinov2_passes.json").read_text()) == {"reference": 16, "reconstruction": 16 * 4,
                                                                       "patches": 0}
    assert (s1.dinov2_passes_reference == 16).all() and (s1.dinov2_passes_reconstruction == 64).all()
    second = create_run(_config(tiny_dinov2, codecs), tmp_path / "runs", "b", progress=False)
    execute(second, jobs=1, progress=False)
    _, s2 = load_run(second)
    assert json.loads((second / "dinov2_passes.json").read_text())["reference"] == 0  # cached originals
    pd.testing.assert_series_equal(s1.fd_dinov2, s2.fd_dinov2)


def test_resume_after_a_lost_shard_gives_the_same_numbers(tiny_dinov2, tmp_path):
    run_dir = create_run(_config(tiny_dinov2, chunk_size=4), tmp_path / "runs", "r", progress=False)
    execute(run_dir, jobs=1, progress=False)
    _, before = load_run(run_dir)
    sorted((run_dir / "images" / "jpeg").glob("*.parquet"))[2].unlink()  # killed before this task committed
    execute(run_dir, jobs=1, progress=False)
    _, after = load_run(run_dir)
    cols = ["setting_index", "fd_dinov2", "dinov2_precision", "dinov2_recall", "dinov2_density", "dinov2_coverage"]
    pd.testing.assert_frame_equal(before[cols], after[cols])
    counts = json.loads((run_dir / "dinov2_passes.json").read_text())
    assert counts["reference"] == 16 and counts["reconstruction"] == 16 * 2 + 4 * 2  # the lost task's, again


def test_offline_without_the_model_is_nan_with_its_reason(tmp_path):
    config = _config("auto", k=5)
    run_dir = create_run(config, tmp_path / "runs", "o", progress=False)
    execute(run_dir, jobs=1, progress=False)
    images, summary = load_run(run_dir)
    for column in ("fd_dinov2", "dinov2_precision", "dinov2_recall", "dinov2_density", "dinov2_coverage"):
        assert summary[column].isna().all()
    assert summary.dinov2_status.str.contains("facebook/dinov2-large is not in the local Hugging Face cache").all()
    assert images.psnr.notna().all()  # the rest of the run goes on


def test_fd_dinov2_is_resampled_with_its_images_and_compared_per_setting(tiny_dinov2, tmp_path):
    from benchmark.analysis import bootstrap
    from benchmark.analysis.compare import compare_runs

    config = _config(tiny_dinov2)
    base, new = (create_run(config, tmp_path / "runs", n, progress=False) for n in ("base", "new"))
    for run_dir in (base, new):
        execute(run_dir, jobs=1, progress=False)
    _, summary = load_run(base)
    table = bootstrap.intervals(base, resamples=50, seed=0, use_cache=False)
    fd = table[table.metric == "fd_dinov2"].set_index("setting_index")
    assert len(fd) == 2
    for s, row in summary.set_index("setting_index").iterrows():
        assert fd.low[s] <= row.fd_dinov2 <= fd.high[s] and fd.high[s] > fd.low[s]
    detail = compare_runs(base, new, resamples=50).rows
    got = detail[detail.metric.isin(["fd_dinov2", "dinov2_precision", "dinov2_coverage"])]
    assert set(got.metric) == {"fd_dinov2", "dinov2_precision", "dinov2_coverage"} and len(got) == 6
    assert (got.change == 0).all() and (got.verdict == "same").all()
    # compare says why a change has no interval, in its rows and where it prints them, and on how many images
    from benchmark.analysis.compare import render_text

    result = compare_runs(base, new, resamples=50)
    notes = result.rows.set_index("metric").note
    assert (notes["dinov2_precision"] == "no interval: the bootstrap does not recompute Precision (DINOv2 k-NN) per "
                                         "resample; each run's summary value, on its own images").all()
    assert (notes["fd_dinov2"] == "").all() and result.rows.set_index("metric").low["fd_dinov2"].notna().all()
    printed = render_text(result, show_all=True)
    n = int(summary.n_images.iloc[0])
    assert "no interval: the bootstrap does not recompute Precision" in printed
    assert printed.endswith(f"paired on the {n} images both runs scored.")
    # the leaderboard shows PRDC without an interval and says why (the bootstrap does not recompute it)
    from benchmark.analysis import leaderboard

    board = leaderboard.build([base], resamples=50, metrics=["fd_dinov2", "dinov2_precision"])
    notes = board.settings.set_index("metric").interval_note
    assert (notes["dinov2_precision"] == "the bootstrap does not recompute Precision (DINOv2 k-NN) per resample").all()
    assert (notes["fd_dinov2"] == "").all()
    assert "‡ No interval: the bootstrap does not recompute Precision (DINOv2 k-NN) per resample." \
        in leaderboard.render(board, "md")
    from benchmark.analysis.report import _error_bars

    assert _error_bars(board).endswith("A point without a bar has no interval: the bootstrap does not recompute "
                                       "Precision (DINOv2 k-NN) per resample.")
    assert _error_bars(board).startswith("Error bars: 95% bootstrap over images (")  # not 'Error bars: Intervals:'

