"""Metrics that landed as one file each (metrics/psnr_hvs.py, metrics/fd_clip.py): the registry finds them, a run
computes them when asked, and their numbers equal an independent reference."""

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmark import cli
from benchmark.run.results import load_run, output_path
from metrics import registry

QUIET = ["--metrics", "none", "--lpips", "none", "--no-ms-ssim", "--caption-embedder", "none", "--no-plots",
         "--no-progress"]


@pytest.fixture
def odd_images(tmp_path):
    """Photo-like PNGs whose sides are not multiples of 8 (PSNR-HVS leaves the partial blocks out)."""
    folder = tmp_path / "odd"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i, (h, w) in enumerate([(61, 77), (48, 64), (83, 50)]):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([128 + 70 * np.sin(x / (5 + i) + c) * np.cos(y / (7 + c)) for c in range(3)], -1)
        pixels = np.clip(base + rng.normal(0, 9, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"im{i}.png")
    return folder


def run(args, tmp_path, name):
    assert cli.main(["run", *QUIET, *args, "--out", str(tmp_path / "results"), "--name", name]) == 0
    return tmp_path / "results" / name


def test_the_registry_collects_a_metric_file_after_the_first_metrics():
    names = list(registry.METRICS)
    assert {"psnr_hvs", "psnr_hvsm"} <= set(names) - registry.FIRST
    assert names.index("psnr_hvs") > max(names.index(m) for m in registry.FIRST)  # the schema of earlier runs keeps
    assert not registry.get("psnr_hvs").default


def test_every_set_metric_names_its_feature_space_and_the_function_one_evaluator_calls():
    """Set metrics (Inception's IS, FID, KID and patch FID among them) are computed by one evaluator from their
    space's stored features: each declares the space and a function of (features, reference, options)."""
    import inspect

    from metrics.inception import SPACE
    from metrics.spec import resolve

    spaces = {**registry.SPACES, SPACE.name: SPACE}
    for m in registry.of_kind("set"):
        assert m.space in spaces, f"{m.column} names no feature space"
        assert len(inspect.signature(resolve(m.fn)).parameters) == 3, m.column
    assert {m.column for m in registry.in_space("inception")} == {"inception_score", "fid", "kid", "patch_fid"}


def test_dinov2s_options_are_declared_in_its_metric_file_and_fill_its_configuration_entry(tmp_path, capsys):
    """--dinov2 and --prdc-k are metrics/dinov2.py's Options: the command line adds them and fills RunConfig.dinov2
    from them without naming them, their defaults are the configuration's, and a k below 1 is one sentence."""
    import pathlib

    from benchmark.run.config import RunConfig

    source = (pathlib.Path(cli.__file__)).read_text()
    assert "dinov2" not in source and "prdc" not in source
    assert [o.flag for o in registry.OPTIONS.values() if o.config.startswith("dinov2.")] == ["--dinov2", "--prdc-k"]
    assert RunConfig().dinov2.to_json() == {o.config.split(".")[1]: o.default for o in registry.OPTIONS.values()
                                            if o.config.startswith("dinov2.")}
    args = cli.build_parser().parse_args(["run", "--dinov2", "auto", "--prdc-k", "3"])
    assert cli.option_entries(args)["dinov2"] == {"model": "auto", "k": 3}
    assert cli.main(["run", *QUIET, "--prdc-k", "0", "--out", str(tmp_path / "r")]) == 1
    assert capsys.readouterr().err == "error: --prdc-k 0: the neighbourhood size must be at least 1.\n"
    assert not (tmp_path / "r").exists()


def test_the_inception_options_are_declared_in_metric_files_and_recorded_as_before(tmp_path, capsys):
    """--isc-splits (metrics/inception_score.py), --kid-subsets and --kid-subset-size (metrics/kid.py), --patch-fid
    (metrics/patches.py), --inception-weights and --inception-sha256 (metrics/inception.py) are Options: cli.py names
    none of them, a run records them in config.json's inception entry as it always has, and a bad value is refused
    as before."""
    import json
    import pathlib

    from benchmark.run.config import RunConfig

    source = (pathlib.Path(cli.__file__)).read_text()
    for flag in ("--isc-splits", "--kid-subsets", "--kid-subset-size", "--patch-fid", "--inception-weights",
                 "--inception-sha256"):
        assert flag not in source and flag[2:].replace("-", "_") not in source.replace('!= "patch_fid"', ""), flag
    declared = {o.flag: (o.config, o.default) for o in registry.OPTIONS.values() if o.config.startswith("inception.")}
    assert declared == {"--isc-splits": ("inception.isc_splits", 10), "--kid-subsets": ("inception.kid_subsets", 100),
                        "--kid-subset-size": ("inception.kid_subset_size", 1000),
                        "--patch-fid": ("inception.patch_fid", False),
                        "--inception-weights": ("inception.weights", None),
                        "--inception-sha256": ("inception.sha256", None)}
    defaults = RunConfig().inception.to_json()
    assert all(defaults[config.split(".")[1]] == default for config, default in declared.values())
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"not read: --metrics none")
    assert cli.main(["run", *QUIET, "--patch-fid", "--out", str(tmp_path)]) == 1  # named as the user gave it
    assert capsys.readouterr().err == ("error: --patch-fid needs a stage this run does not request: Inception metrics "
                                       "were not requested (--metrics none).\n")
    assert cli.main(["run", *QUIET, "--codec", "jpeg quality=50", "--limit", "1", "--isc-splits", "5",
                     "--kid-subsets", "7", "--kid-subset-size", "9", "--inception-weights", str(weights),
                     "--inception-sha256", "ab" * 32, "--out", str(tmp_path), "--name", "r"]) == 0
    recorded = json.loads((tmp_path / "r" / "config.json").read_text())["config"]["inception"]
    assert {k: recorded[k] for k in ("isc_splits", "kid_subsets", "kid_subset_size", "patch_fid", "weights",
                                     "sha256")} == {"isc_splits": 5, "kid_subsets": 7, "kid_subset_size": 9,
                                                    "patch_fid": False, "weights": str(weights), "sha256": "ab" * 32}
    args = cli.build_parser().parse_args(["run", "--patch-fid"])
    assert cli.option_entries(args)["inception"]["patch_fid"] is True
    with pytest.raises(SystemExit) as exited:  # refused as it is read, as before
        cli.main(["run", *QUIET, "--isc-splits", "0"])
    assert exited.value.code == 2
    assert "argument --isc-splits: must be at least 1, not 0" in capsys.readouterr().err
    assert cli.main(["run", *QUIET, "--inception-weights", str(tmp_path / "none.pth")]) == 1
    assert capsys.readouterr().err == f"error: --inception-weights {tmp_path / 'none.pth'}: no such file.\n"


def test_pyiqa_and_caption_embedder_options_are_declared_in_their_metric_files(tmp_path, capsys):
    """--iqa and --iqa-weights (metrics/iqa.py) and --caption-embedder (metrics/caption.py) are Options: cli.py names
    none of them; they fill RunConfig.iqa, .iqa_weights and .caption_embedder, whose defaults are theirs; a
    protocol's pyiqa metrics join --iqa's; --metrics none turns the embedder off unless it is given; a bad value is
    refused before any work, as before, and --resume refuses them as it refuses every option that shapes a run."""
    import pathlib

    from benchmark.run import protocols
    from benchmark.run.config import RunConfig

    source = (pathlib.Path(cli.__file__)).read_text()
    for word in ("--iqa", "iqa_weights", "iqa_names", "caption-embedder", "caption_embedder"):
        assert word not in source, word
    declared = {o.flag: (o.config, o.default) for o in registry.OPTIONS.values()
                if o.config in ("iqa", "iqa_weights", "caption_embedder")}
    assert declared == {"--iqa": ("iqa", ""), "--iqa-weights": ("iqa_weights", []),
                        "--caption-embedder": ("caption_embedder", "auto")}
    assert (RunConfig().iqa, RunConfig().iqa_weights, RunConfig().caption_embedder) == ([], {}, "auto")
    weights = tmp_path / "niqe.mat"
    weights.write_bytes(b"not read")

    def entries(argv, protocol=None):
        args = cli.build_parser().parse_args(["run", *argv])
        cli.per_image_metric_defaults(args)
        return {k: v for k, v in cli.option_entries(args, protocol).items()
                if k in ("iqa", "iqa_weights", "caption_embedder")}

    assert entries(["--iqa", "niqe, musiq,niqe", "--iqa-weights", f"niqe={weights}"]) == {
        "iqa": ["niqe", "musiq"], "iqa_weights": {"niqe": str(weights)}, "caption_embedder": "auto"}
    assert entries(["--iqa", "niqe", "--iqa-weights", f"topiq_fr={weights}", "--metrics", "none"],
                   protocols.get("cmc-bench")) == {"iqa": ["niqe", "topiq_fr", "topiq_nr"],
                                                  "iqa_weights": {"topiq_fr": str(weights)}, "caption_embedder": "none"}
    assert entries(["--metrics", "none", "--caption-embedder", "auto"])["caption_embedder"] == "auto"
    out = tmp_path / "runs"
    assert cli.main(["run", *QUIET, "--iqa", "niqe", "--iqa-weights", f"musiq={weights}", "--out", str(out)]) == 1
    assert capsys.readouterr().err == "error: --iqa-weights musiq=...: musiq is not among --iqa niqe.\n"
    assert cli.main(["run", *QUIET, "--protocol", "cmc-bench", "--iqa-weights", f"musiq={weights}", "--out",
                     str(out)]) == 1
    assert capsys.readouterr().err == ("error: --iqa-weights musiq=...: musiq is not among --iqa topiq_fr,topiq_nr."
                                       "\n")
    assert cli.main(["run", *QUIET, "--caption-embedder", "atuo", "--out", str(out)]) == 1
    assert "did you mean --caption-embedder=auto?" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main(["run", "--resume", str(tmp_path), "--iqa", "niqe", "--caption-embedder", "none"]) == 1
    assert "drop --iqa, --caption-embedder (or start a new run without --resume)" in capsys.readouterr().err


def test_psnr_hvs_equals_the_psnr_hvsm_packages_own_call(odd_images):
    from psnr_hvsm.compute_all_metrics import compute_all_metrics

    from metrics.psnr_hvs import psnr_hvs, psnr_hvsm

    rng = np.random.default_rng(0)
    for path in sorted(odd_images.glob("*.png")):
        a = np.asarray(Image.open(path))
        b = np.clip(a.astype(int) + rng.integers(-12, 13, a.shape), 0, 255).astype(np.uint8)
        h, w = (n - n % 8 for n in a.shape[:2])  # whole 8x8 blocks, as the reference code steps over them
        hvs, hvsm, *_ = compute_all_metrics(a[:h, :w], b[:h, :w])
        assert psnr_hvs(a, b) == (float(hvs), "") and psnr_hvsm(a, b) == (float(hvsm), "")
        assert 20 < float(hvs) < float(hvsm) < 60  # masking hides error: HVS-M above HVS
    assert psnr_hvs(a, a)[0] == 100.0  # identical: the package's 100 dB
    value, note = psnr_hvsm(a[:7], b[:7])
    assert np.isnan(value) and "at least 8 x 8" in note


def test_a_run_asked_for_psnr_hvs_scores_every_reconstruction_as_the_package_does(odd_images, tmp_path):
    from psnr_hvsm.compute_all_metrics import compute_all_metrics

    run_dir = run(["--dataset", str(odd_images), "--codec", "jpeg quality=20,60", "--save-reconstructions",
                   "--add-metric", "psnr_hvs", "--add-metric", "psnr_hvsm"], tmp_path, "hvs")
    rows, summary = load_run(run_dir)
    assert len(rows) == 6 and (rows.status == "ok").all()
    for row in rows.itertuples():
        original = np.asarray(Image.open(odd_images / row.image_id))
        recon = np.asarray(Image.open(output_path(run_dir, "jpeg", row.setting_label, row.image_id, ".png")))
        h, w = (n - n % 8 for n in original.shape[:2])
        hvs, hvsm, *_ = compute_all_metrics(original[:h, :w], recon[:h, :w])
        assert (row.psnr_hvs, row.psnr_hvsm) == (float(hvs), float(hvsm))
    means = rows.groupby("setting_index")[["psnr_hvs", "psnr_hvsm"]].mean().reset_index()
    merged = summary.merge(means, on="setting_index", suffixes=("", "_rows"))
    assert np.allclose(merged.psnr_hvs, merged.psnr_hvs_rows) and np.allclose(merged.psnr_hvsm, merged.psnr_hvsm_rows)
    assert (summary.sort_values("setting_index").psnr_hvsm.diff().dropna() > 0).all()  # quality 60 above 20
    states = json.loads((run_dir / "config.json").read_text())["metrics"]
    assert states["psnr_hvs"] == {"status": "ok", "reason": ""}

    plain = run(["--dataset", str(odd_images), "--codec", "jpeg quality=20"], tmp_path, "plain")
    assert "psnr_hvs" not in json.loads((plain / "config.json").read_text())["metrics"]  # absent when not asked
    assert "psnr_hvs" not in load_run(plain)[1]


def test_without_the_package_psnr_hvs_is_unavailable_with_its_reason_and_the_run_goes_on(odd_images, tmp_path,
                                                                                          monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "psnr_hvsm" else find_spec(name, *a))
    run_dir = run(["--dataset", str(odd_images), "--codec", "jpeg quality=20", "--add-metric", "psnr_hvs"],
                  tmp_path, "missing")
    state = json.loads((run_dir / "config.json").read_text())["metrics"]["psnr_hvs"]
    assert state == {"status": "unavailable", "reason": "PSNR-HVS needs the psnr-hvsm package: pip install psnr-hvsm"}
    rows, summary = load_run(run_dir)
    assert rows.psnr_hvs.isna().all() and summary.psnr_hvs.isna().all() and rows.psnr.notna().all()
    assert summary.psnr_hvs_status.str.startswith("unavailable: PSNR-HVS needs").all()


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from tiny_models import tiny_clip

    return tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def _clip_embeddings(model, images) -> np.ndarray:
    """The test's own CLIP embedding: one image at a time through transformers, unit-normalised."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    clip, processor = CLIPModel.from_pretrained(model).eval(), CLIPProcessor.from_pretrained(model)
    out = []
    for image in images:
        with torch.no_grad():
            e = clip.get_image_features(**processor(images=[image], return_tensors="pt"))
        e = getattr(e, "pooler_output", e)
        out.append((e / e.norm(dim=-1, keepdim=True))[0].numpy().astype(np.float64))
    return np.stack(out)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_clip_embedding_does_not_depend_on_the_batch_it_shared(tmp_path, threads):
    """FD-CLIP's extractor embeds a task's images in batches, and a resumed run's batches are not an uninterrupted
    run's: each image's embedding must be the same in a batch of 1, 7 or 16, and the one CLIP similarity uses."""
    import torch
    from tiny_models import tiny_clip

    from metrics.fd_clip import extractor

    folder = tiny_clip(tmp_path / "clip", width=384, projection=256)  # wide enough for a batched product to round
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8) for _ in range(16)]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        embedded = {size: extractor({"model": str(folder)}, "cpu", size)(images) for size in (1, 7, 16)}
        alone = extractor({"model": str(folder)}, "cpu", 16).clip.image_embedding(images[5]).numpy()
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(embedded[7], embedded[1])
    np.testing.assert_array_equal(embedded[16], embedded[1])
    np.testing.assert_array_equal(embedded[16][5], alone)


def test_fd_clip_is_torch_fidelitys_fid_formula_on_the_runs_clip_embeddings(tiny_clip, natural_images, tmp_path):
    import torch
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    from benchmark.analysis.bootstrap import run_resamples

    args = ["--dataset", str(natural_images), "--codec", "jpeg quality=5,90", "--save-reconstructions",
            "--clip", str(tiny_clip), "--add-metric", "fd_clip"]
    run_dir = run(args, tmp_path, "fd")
    images, summary = load_run(run_dir)
    ids = sorted(images.image_id.unique())
    real = _clip_embeddings(tiny_clip, [np.asarray(Image.open(natural_images / i)) for i in ids])
    for row in summary.itertuples():
        fake = _clip_embeddings(tiny_clip, [np.asarray(Image.open(output_path(run_dir, "jpeg", row.setting_label, i,
                                                                                ".png"))) for i in ids])
        expected = fid_statistics_to_metric(fid_features_to_statistics(torch.from_numpy(fake)),
                                            fid_features_to_statistics(torch.from_numpy(real)), False)
        assert row.n_clip == 4 and row.clip_status == "ok"
        assert row.fd_clip == pytest.approx(expected["frechet_inception_distance"], rel=1e-4)
        assert "FD-CLIP from 4 < 2048 samples" in row.clip_note
    assert summary.set_index("setting").fd_clip[90] < summary.set_index("setting").fd_clip[5]
    passes = json.loads((run_dir / "clip_passes.json").read_text())
    assert (passes["reference"], passes["reconstruction"]) == (4, 8)  # each image once per setting
    intervals = run_resamples(run_dir, 50, 0).values
    assert all(np.isfinite(v["fd_clip"]).all() for v in intervals.values())  # recomputed in every resample

    again = run(args, tmp_path, "again")
    assert json.loads((again / "clip_passes.json").read_text())["reference"] == 0  # originals cached across runs
    pd.testing.assert_series_equal(summary.fd_clip, load_run(again)[1].fd_clip)


def test_fd_clip_without_clip_is_refused_before_any_work(natural_images, tmp_path, capsys):
    rc = cli.main(["run", *QUIET, "--dataset", str(natural_images), "--codec", "jpeg quality=5",
                   "--add-metric", "fd_clip", "--out", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert rc != 0 and "--add-metric fd_clip needs a stage this run does not request" in err and "--clip auto" in err
    assert not (tmp_path / "results").exists() or not any(p for p in (tmp_path / "results").iterdir()
                                                          if not p.name.startswith("."))


def test_a_feature_space_runs_when_the_config_gives_inception_no_device(tiny_clip, natural_images, tmp_path):
    """A RunConfig made in Python with Inception off ({"enabled": False}) gives FD-CLIP's network the default
    device and batch size (it raised KeyError: 'device')."""
    from benchmark.codecs.codec_spec import parse_codec_spec
    from benchmark.run.runner import RunConfig, create_run, execute

    config = RunConfig(dataset=str(natural_images), codecs=[parse_codec_spec("jpeg quality=50")],
                       inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none", "clip": str(tiny_clip)},
                       add_metrics=["fd_clip"])
    run_dir = create_run(config, tmp_path / "results", progress=False)
    execute(run_dir, jobs=1, progress=False)
    _, summary = load_run(run_dir)
    assert summary.fd_clip.notna().all() and (summary.n_clip == 4).all()
