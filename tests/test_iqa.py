"""pyiqa metrics in a run against pyiqa's own call on the same image files: random-init TOPIQ networks of the
real architecture saved as weights files (the path CMC-Bench's fine-tuned files take), NIQE's parameters
from pyiqa's cache, and unavailability without weights."""

import json

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from benchmark.cli import main
from benchmark.codecs.codec_spec import parse_codec_spec
from benchmark.data.datasets import open_dataset
from benchmark.run.results import load_run, output_path
from benchmark.run.runner import RunConfig, create_run, execute
from metrics.inception import hub_dir

pyiqa = pytest.importorskip("pyiqa", reason="the pyiqa metrics need the iqa extra")  # in .[dev], so CI runs these


@pytest.fixture(scope="session")
def topiq_weights(tmp_path_factory):
    """Random-init CFANet (TOPIQ) files, FR and NR, whole networks under 'params' as pyiqa's releases are."""
    from pyiqa.archs.topiq_arch import CFANet

    folder = tmp_path_factory.mktemp("topiq")
    out = {}
    for name, use_ref, model_name in (("topiq_fr", True, "cfanet_fr_kadid_res50"),
                                      ("topiq_nr", False, "cfanet_nr_koniq_res50")):
        torch.manual_seed(len(name) + use_ref)
        net = CFANet(semantic_model_name="resnet50", model_name=model_name, use_ref=use_ref, pretrained=False,
                     backbone_pretrain=False)
        out[name] = folder / f"{name}.pth"
        torch.save({"params": net.state_dict()}, out[name])
    return out


def _config(iqa, weights=None, limit=3, **kw):
    return RunConfig(dataset="sample", limit=limit, codecs=[parse_codec_spec("jpeg quality=15,60")],
                     inception={"enabled": False, "device": "cpu", "batch_size": 4}, caption_embedder="none",
                     image_metrics={"ms_ssim": False, "lpips": "none"}, iqa=iqa,
                     iqa_weights={k: str(v) for k, v in (weights or {}).items()}, save_reconstructions=True, **kw)


def _originals(folder, limit):
    ds = open_dataset("sample").limit(limit)
    paths = {}
    for r in ds.records:
        paths[r.image_id] = folder / f"{r.image_id}.png"
        Image.fromarray(ds.read(r).pixels).save(paths[r.image_id])
    return paths


def test_topiq_and_cmc_bench_overall_equal_pyiqa_on_the_same_files(topiq_weights, tmp_path):
    run_dir = create_run(_config(["topiq_fr", "topiq_nr"], topiq_weights), tmp_path / "runs", "t", progress=False)
    execute(run_dir, jobs=1, progress=False)
    images, summary = load_run(run_dir)
    assert len(images) == 6 and (summary.topiq_fr_status == "ok").all()
    originals = _originals(tmp_path, 3)
    # pyiqa's own call, reading the files itself; backbone_pretrain=False only spares timm's ImageNet download,
    # which the weights file (it holds the backbone) overwrites in either case
    fr = pyiqa.create_metric("topiq_fr", device="cpu", pretrained_model_path=str(topiq_weights["topiq_fr"]),
                             backbone_pretrain=False)
    nr = pyiqa.create_metric("topiq_nr", device="cpu", pretrained_model_path=str(topiq_weights["topiq_nr"]),
                             backbone_pretrain=False)
    for row in images.itertuples():
        recon = str(output_path(run_dir, "jpeg", row.setting_label, row.image_id, ".png"))
        expected_fr = float(fr(recon, str(originals[row.image_id])))
        expected_nr = float(nr(recon))
        assert row.topiq_fr == pytest.approx(expected_fr, abs=1e-5)
        assert row.topiq_nr == pytest.approx(expected_nr, abs=1e-5)
        assert row.cmc_bench_overall == pytest.approx(2 / 3 * expected_fr + 1 / 3 * expected_nr, abs=1e-5)
    assert images.topiq_fr.nunique() > 1  # not a constant: the network saw the images
    s = summary.set_index("setting_index")
    assert s.cmc_bench_overall[0] == pytest.approx(2 / 3 * s.topiq_fr[0] + 1 / 3 * s.topiq_nr[0])


def test_niqe_from_pyiqa_cache_equals_pyiqa(tmp_path):
    """No weights option: the parameters come from pyiqa's cache under the torch hub folder, as pyiqa keeps them."""
    cache = hub_dir() / "pyiqa" / "niqe_modelparameters.mat"
    cache.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(36, 36))
    scipy.io.savemat(cache, {"mu_prisparam": rng.normal(size=(1, 36)), "cov_prisparam": a @ a.T / 36 + np.eye(36)})
    run_dir = create_run(_config(["niqe"], limit=2), tmp_path / "runs", "n", progress=False)
    execute(run_dir, jobs=1, progress=False)
    images, summary = load_run(run_dir)
    info = json.loads((run_dir / "config.json").read_text())
    assert info["iqa"]["niqe"]["weights_path"] == str(cache)
    niqe = pyiqa.create_metric("niqe", device="cpu", pretrained_model_path=str(cache))
    for row in images.itertuples():
        recon = str(output_path(run_dir, "jpeg", row.setting_label, row.image_id, ".png"))
        assert row.niqe == pytest.approx(float(niqe(recon)), rel=1e-6)
    assert summary.niqe.notna().all() and images.niqe.nunique() > 1


def test_offline_without_weights_is_nan_with_the_reason_and_the_run_goes_on(tmp_path):
    run_dir = create_run(_config(["musiq", "topiq_fr", "topiq_nr"], limit=2), tmp_path / "runs", "o", progress=False)
    execute(run_dir, jobs=1, progress=False)
    images, summary = load_run(run_dir)
    for column in ("musiq", "topiq_fr", "topiq_nr", "cmc_bench_overall"):
        assert images[column].isna().all() and summary[column].isna().all()
    assert summary.musiq_status.str.contains("no weights for musiq").all()
    assert summary.musiq_status.str.contains("--iqa-weights musiq=PATH").all()
    assert summary.cmc_bench_overall_status.str.contains("no weights for topiq_fr").all()
    assert images.psnr.notna().all()


@pytest.mark.parametrize("argv, message", [
    (["--iqa", "topiq"], "not a metric cmcbench runs through pyiqa; choose from topiq_fr, topiq_nr"),
    (["--iqa", "niqe", "--iqa-weights", "musiq=x.pth"], "musiq is not among --iqa niqe"),
    (["--iqa", "niqe", "--iqa-weights", "niqe=/no/such.mat"], "no such file"),
    (["--iqa", "niqe", "--iqa-weights", "niqe"], "expected NAME=PATH"),
])
def test_iqa_options_are_checked_before_any_work(argv, message, tmp_path, capsys):
    assert main(["run", "--dataset", "sample", "--limit", "1", "--out", str(tmp_path), *argv]) == 1
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was created


def test_protocol_cmc_bench_scores_with_both_topiq_and_the_overall(topiq_weights, tmp_path, capsys):
    rc = main(["run", "--dataset", "sample", "--limit", "2", "--codec", "jpeg quality=30", "--protocol", "cmc-bench",
               "--iqa-weights", f"topiq_fr={topiq_weights['topiq_fr']}", "--iqa", "topiq_fr",
               "--iqa-weights", f"topiq_nr={topiq_weights['topiq_nr']}", "--metrics", "none", "--lpips", "none",
               "--caption-embedder", "none", "--no-progress", "--no-plots", "--out", str(tmp_path), "--name", "b"])
    assert rc == 0, capsys.readouterr().err
    info = json.loads((tmp_path / "b" / "config.json").read_text())
    assert info["protocol"]["iqa"] == ["topiq_fr", "topiq_nr"] and info["config"]["iqa"] == ["topiq_fr", "topiq_nr"]
    assert info["iqa"]["topiq_nr"]["weights_sha256"] and info["metrics"]["cmc_bench_overall"]["status"] == "ok"
    images, _ = load_run(tmp_path / "b")
    assert images.cmc_bench_overall.notna().all()


def test_a_swapped_pyiqa_weights_file_changes_the_hash_and_stops_resume(topiq_weights, tmp_path):
    """pyiqa's weights are in the config hash and checked on resume, like every other metric's."""
    import shutil

    own = tmp_path / "own.pth"
    shutil.copy(topiq_weights["topiq_nr"], own)
    config = _config(["topiq_nr"], {"topiq_nr": own}, limit=2, chunk_size=1)
    run_dir = create_run(config, tmp_path / "runs", "w", progress=False)
    chash = json.loads((run_dir / "config.json").read_text())["config_hash"]
    execute(run_dir, jobs=1, progress=False)
    sorted((run_dir / "images" / "jpeg").glob("*.parquet"))[-1].unlink()  # as if killed before the last task
    data = bytearray(own.read_bytes())
    data[-1] ^= 0x01  # another file of the same size
    own.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=r"Cannot resume .*topiq_nr weights at .* changed"):
        execute(run_dir, jobs=1, progress=False, resume=True)
    swapped = create_run(config, tmp_path / "runs", "swapped", progress=False)
    assert json.loads((swapped / "config.json").read_text())["config_hash"] != chash
