"""Task metrics (metrics/classify.py, one file): classification agreement with the original's prediction, from a
torchvision ResNet-50 built here with random weights, loaded through the same path as a user's weights file."""

import json
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark import cli
from benchmark.run.record import RunRecord
from benchmark.run.results import load_run, output_path

QUIET = ["--metrics", "none", "--lpips", "none", "--no-ms-ssim", "--caption-embedder", "none", "--no-plots",
         "--no-progress"]
CODECS = ["--codec", "codecs_for_tests:Raw", "--codec", "codecs_for_tests:Noisy sigma=30"]


def _images(folder):
    """Four photo-like PNGs of different sizes."""
    rng = np.random.default_rng(7)
    folder.mkdir()
    for i in range(4):
        h, w = 96 + 16 * i, 128
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([128 + 80 * np.sin(x / (9 + i) + c) * np.cos(y / (13 + c)) for c in range(3)], -1)
        Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def classified(hermetic_module, tmp_path_factory):
    """A random-init torchvision ResNet-50 (its BatchNorm statistics taken from noisy images, so that its
    predictions depend on the input), saved as a state_dict; and a run of a lossless and a noisy codec with it."""
    import torchvision

    root = tmp_path_factory.mktemp("classify")
    images = _images(root / "images")
    torch.manual_seed(1)
    model = torchvision.models.resnet50(weights=None)
    preprocess = torchvision.models.ResNet50_Weights.DEFAULT.transforms()
    rng = np.random.default_rng(0)
    pixels = [np.asarray(Image.open(p)) for p in sorted(images.glob("*.png"))]
    noisy = [np.clip(p + rng.normal(0, 30, p.shape), 0, 255).astype(np.uint8) for p in pixels]
    with torch.no_grad():
        model.train()(torch.stack([preprocess(torch.from_numpy(np.array(p)).permute(2, 0, 1)) for p in pixels + noisy]))
    weights = root / "resnet50.pth"
    torch.save(model.eval().state_dict(), weights)
    out = root / "results"
    args = ["run", *QUIET, "--dataset", str(images), *CODECS, "--classify", str(weights), "--save-reconstructions",
            "--out", str(out)]
    assert cli.main([*args, "--name", "first"]) == 0
    assert cli.main([*args, "--name", "second"]) == 0
    return weights, images, out


def _direct_logits(weights, images):
    """Logits by torchvision's own model and transforms, independent of cmcbench's batching."""
    import torchvision

    model = torchvision.models.resnet50(weights=None)
    model.load_state_dict(torch.load(weights, weights_only=True))
    preprocess = torchvision.models.ResNet50_Weights.DEFAULT.transforms()
    with torch.no_grad():
        return model.eval()(torch.stack([preprocess(torch.from_numpy(np.array(im)).permute(2, 0, 1))
                                         for im in images]))


def _direct_agreement(logits, original_logits) -> tuple[float, float, float]:
    """Top-1 and top-5 agreement and KL(p_original || p_reconstruction), by torch directly."""
    top1 = (logits.argmax(1) == original_logits.argmax(1)).double().mean().item()
    top5 = (logits.topk(5, 1).indices == original_logits.argmax(1)[:, None]).any(1).double().mean().item()
    kl = torch.nn.functional.kl_div(logits.double().log_softmax(1), original_logits.double().log_softmax(1),
                                    log_target=True, reduction="batchmean").item()
    return top1, top5, kl


def test_agreement_is_1_for_a_lossless_codec_lower_with_noise_and_equals_a_direct_computation(classified):
    weights, images, out = classified
    run_dir = out / "first"
    rows, summary = load_run(run_dir)
    ids = sorted(rows.image_id.unique())
    originals = _direct_logits(weights, [Image.open(images / i) for i in ids])
    for s in summary.itertuples():
        recon = [Image.open(output_path(run_dir, s.codec, s.setting_label, i, ".png")) for i in ids]
        top1, top5, kl = _direct_agreement(_direct_logits(weights, recon), originals)
        assert (s.classify_top1, s.classify_top5) == (top1, top5)
        assert s.classify_kl == pytest.approx(kl, rel=1e-4, abs=1e-6)
        assert s.n_classify == len(ids)
        if s.codec == "raw":
            assert s.classify_top1 == 1 and s.classify_top5 == 1 and abs(s.classify_kl) < 1e-6
    noisy = summary[summary.codec == "noisy"]
    assert noisy.classify_top1.min() < 1 and (noisy.classify_kl > 1e-3).all()


def test_one_pass_per_image_per_setting_and_originals_once_across_runs(classified):
    _, _, out = classified
    first = json.loads((out / "first" / "classify_passes.json").read_text())
    second = json.loads((out / "second" / "classify_passes.json").read_text())
    assert (first["reference"], first["reconstruction"]) == (4, 16)  # 4 originals; 4 images x 2 codecs x 2 settings
    assert (second["reference"], second["reconstruction"]) == (0, 16)  # the originals' logits: the shared cache
    a, b = load_run(out / "first")[1], load_run(out / "second")[1]
    assert np.array_equal(a.classify_top1, b.classify_top1) and np.allclose(a.classify_kl, b.classify_kl, atol=1e-9)


def test_the_weights_file_is_recorded_hashed_and_a_swapped_one_stops_resume(classified, tmp_path):
    import shutil

    from benchmark.run import weights as run_weights
    from benchmark.run.runner import execute
    from metrics.download import file_digest

    source, _, out = classified
    info = json.loads((out / "first" / "config.json").read_text())
    assert info["classify"]["weights_sha256"] == file_digest(source)
    assert info["config"]["stages"] == {"classify": str(source)}
    assert run_weights.recorded(RunRecord.from_json(info))["classify"] == (str(source), file_digest(source))
    run_dir = tmp_path / "run"
    shutil.copytree(out / "first", run_dir)
    sorted((run_dir / "images" / "noisy").glob("*.parquet"))[-1].unlink()  # as if killed before its last task
    original = source.read_bytes()
    data = bytearray(original)
    data[-1] ^= 0xFF  # another file of the same size
    try:
        source.write_bytes(bytes(data))
        with pytest.raises(RuntimeError, match=r"Cannot resume .*classify weights at .* changed"):
            execute(run_dir, jobs=1, progress=False, resume=True)
    finally:
        source.write_bytes(original)


def test_the_leaderboard_shows_the_class_kl_with_its_interval(classified, capsys, tmp_path):
    _, _, out = classified
    assert cli.main(["leaderboard", str(out / "first"), "--metric", "classify_kl", "--anchor", "raw",
                     "--bootstrap", "20", "--out", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    noisy = [line.split("|") for line in shown.splitlines() if line.startswith("| noisy   |         2 |")][-1]
    assert "[" in noisy[-2], shown  # the metric's own interval, not only the rate's


def test_offline_without_weights_it_is_unavailable_in_one_line_and_the_rest_runs(tmp_path, capsys, no_downloads):
    images = _images(tmp_path / "images")
    rc = cli.main(["run", *QUIET, "--dataset", str(images), "--codec", "jpeg quality=50", "--classify", "auto",
                   "--out", str(tmp_path / "results"), "--name", "offline"])
    out = capsys.readouterr().out
    assert rc == 0
    line = [x for x in out.splitlines() if x.startswith("Unavailable: Top-1 agr.")]
    assert len(line) == 1 and "resnet50-11ad3fa6.pth" in line[0] and "offline" in line[0], out
    _, summary = load_run(tmp_path / "results" / "offline")
    assert summary.psnr.notna().all() and summary.classify_top1.isna().all()
    assert summary.classify_status.str.startswith("unavailable: no weights for --classify auto").all()


@pytest.mark.parametrize("choice, message", [("resnet5", r"--classify resnet5: .*did you mean 'resnet50'"),
                                             ("WRONG_FILE", r"not a state_dict of torchvision's resnet50"),
                                             ("timm:resnet5O.a1_in1k", r"did you mean timm:resnet50.a1_in1k\?")])
def test_a_choice_that_cannot_work_is_one_sentence_before_any_work(choice, message, tmp_path, capsys):
    if choice == "WRONG_FILE":
        choice = str(tmp_path / "other.pth")
        torch.save({"fc.weight": torch.zeros(2, 3)}, choice)
    images = _images(tmp_path / "images")
    rc = cli.main(["run", *QUIET, "--dataset", str(images), "--codec", "jpeg quality=50", "--classify", choice,
                   "--out", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert rc != 0 and len(err.strip().splitlines()) == 1
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


TIMM_NAME = "test_resnet.r160_in1k"  # timm's own small test network, with pretrained weights on the Hub


def _in_hub_cache(cache, repo: str, weights: dict) -> pathlib.Path:
    """Save `weights` where a download of `repo`'s model.safetensors would leave them (the Hub cache's layout)."""
    import safetensors.torch

    folder = cache / f"models--{repo.replace('/', '--')}"
    revision = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    (folder / "snapshots" / revision).mkdir(parents=True)
    path = folder / "snapshots" / revision / "model.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    return path


def test_classify_takes_a_timm_model_by_name_equal_to_timms_own_pipeline(tmp_path, monkeypatch, capsys):
    """`--classify timm:NAME`: the weights file comes from the Hugging Face cache (a random-init network of the
    named architecture, saved there as a download would leave it), is loaded by timm's pretrained path and fed by
    timm's eval transforms; each setting's agreement equals timm's model and transforms applied directly."""
    import huggingface_hub.constants
    import safetensors.torch
    import timm
    import timm.data

    from metrics.download import file_digest

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    images = _images(tmp_path / "images")
    originals = [Image.open(p).convert("RGB") for p in sorted(images.glob("*.png"))]
    torch.manual_seed(0)
    model = timm.create_model(TIMM_NAME, pretrained=False)
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model), is_training=False)
    rng = np.random.default_rng(0)
    noisy = [Image.fromarray(np.clip(np.asarray(im) + rng.normal(0, 30, np.asarray(im).shape), 0, 255)
                             .astype(np.uint8)) for im in originals]
    with torch.no_grad():  # BatchNorm statistics from the images, so that predictions depend on the input
        model.train()(torch.stack([transform(im) for im in originals + noisy]))
    weights = _in_hub_cache(tmp_path / "hub", f"timm/{TIMM_NAME}", model.eval().state_dict())
    out = tmp_path / "results"
    assert cli.main(["run", *QUIET, "--dataset", str(images), *CODECS, "--classify", f"timm:{TIMM_NAME}",
                     "--save-reconstructions", "--out", str(out), "--name", "timm"]) == 0
    info = json.loads((out / "timm" / "config.json").read_text())["classify"]
    assert (info["model"], info["hub_id"]) == (f"timm:{TIMM_NAME}", f"timm/{TIMM_NAME}")
    assert info["weights_sha256"] == file_digest(weights)

    direct = timm.create_model(TIMM_NAME, pretrained=False)
    direct.load_state_dict(safetensors.torch.load_file(str(weights)))

    def logits(ims):
        with torch.no_grad():
            return direct.eval()(torch.stack([transform(im.convert("RGB")) for im in ims]))

    rows, summary = load_run(out / "timm")
    ids = sorted(rows.image_id.unique())
    reference = logits([Image.open(images / i) for i in ids])
    for s in summary.itertuples():
        recon = logits([Image.open(output_path(out / "timm", s.codec, s.setting_label, i, ".png")) for i in ids])
        top1, top5, kl = _direct_agreement(recon, reference)
        assert (s.classify_top1, s.classify_top5) == (top1, top5)
        assert s.classify_kl == pytest.approx(kl, rel=1e-4, abs=1e-6)
    assert (summary[summary.codec == "raw"].classify_top1 == 1).all()
    assert summary[summary.codec == "noisy"].classify_top1.min() < 1

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    capsys.readouterr()
    assert cli.main(["run", *QUIET, "--dataset", str(images), "--codec", "jpeg quality=50", "--classify",
                     f"timm:{TIMM_NAME}", "--out", str(out), "--name", "offline"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("Unavailable: Top-1 agr.")]
    assert len(line) == 1 and "not in the local Hugging Face cache and this machine is offline" in line[0], line


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from tiny_models import tiny_clip

    return tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def text_run(hermetic_module, tiny_clip, tmp_path_factory):
    """CMC and JPEG on 8 sample images, with retrieval from the text and FD-CLIP (which share the originals' CLIP
    embeddings)."""
    out = tmp_path_factory.mktemp("text") / "results"
    assert cli.main(["run", *QUIET, "--dataset", "sample:8", "--split", "all", "--codec", "cmc text_codec=huffman",
                     "--codec", "jpeg quality=50", "--clip", str(tiny_clip), "--add-metric", "text_retrieval",
                     "--add-metric", "fd_clip", "--out", str(out), "--name", "t"]) == 0
    return out / "t"


def test_retrieval_from_the_transmitted_text_equals_a_direct_clip_computation(text_run, tiny_clip):
    """CMC's transmitted caption, never decoded, against the sample set's originals through the run's CLIP; a
    codec that sends no text has no value, with its reason."""
    from transformers import CLIPModel, CLIPProcessor

    from benchmark.data.sample import render

    rows, summary = load_run(text_run)
    model, processor = CLIPModel.from_pretrained(tiny_clip).eval(), CLIPProcessor.from_pretrained(tiny_clip)

    def unit(x):
        x = getattr(x, "pooler_output", x)
        return (x / x.norm(dim=-1, keepdim=True)).double()

    ids = sorted(rows.image_id.unique())
    with torch.no_grad():
        originals = unit(model.get_image_features(**processor(
            images=[np.asarray(render(int(i.rsplit("-", 1)[1]))) for i in ids], return_tensors="pt")))
        for row in summary[summary.codec == "cmc"].itertuples():
            sent = rows[(rows.codec == "cmc") & (rows.setting_index == row.setting_index)].set_index("image_id")
            texts = unit(model.get_text_features(**processor(text=[sent.caption[i] for i in ids], return_tensors="pt",
                                                             padding=True, truncation=True)))
            similarity = texts @ originals.T
            rank = (similarity > similarity.diagonal()[:, None]).sum(1)
            assert row.text_retrieval_r1 == pytest.approx((rank < 1).double().mean().item(), abs=1e-6)
            assert row.text_retrieval_r5 == pytest.approx((rank < 5).double().mean().item(), abs=1e-6)
            assert row.n_clip_text == 8 and row.text_retrieval_r1 <= row.text_retrieval_r5
    n_cmc = int((summary.codec == "cmc").sum())
    jpeg = summary[summary.codec == "jpeg"].iloc[0]
    assert np.isnan(jpeg.text_retrieval_r1) and jpeg.clip_text_note == "the codec transmitted no text"
    image = json.loads((text_run / "clip_passes.json").read_text())
    text = json.loads((text_run / "clip_text_passes.json").read_text())
    # Each original through CLIP once, for FD-CLIP and retrieval together; each text once; no JPEG pixels
    assert (image["reference"], text["reference"], text["reconstruction"]) == (8, 0, 8 * n_cmc)
    assert summary.fd_clip.notna().all()


def test_ranks_do_not_count_a_duplicated_original_against_its_text():
    from metrics.text_retrieval import ranks

    originals = np.eye(3)[[0, 1, 1, 2]]  # image 1 drawn twice, as in a bootstrap resample
    texts = np.eye(3)[[0, 1, 1, 0]] * 0.9 + 0.01
    assert ranks(texts, originals).tolist() == [0, 0, 0, 1]


def test_an_interval_of_a_share_ends_within_0_and_1():
    """The bias-corrected percentile interval of a set metric is shifted by the resampling bias; for a share near
    1 the shift would end above 1, which a share cannot reach: it is clipped to the metric's declared bounds."""
    from types import SimpleNamespace

    from benchmark.analysis import bootstrap

    drawn = np.array([0.75] * 20 + [0.875] * 60 + [1.0] * 20)
    shifted = bootstrap.bias_corrected_percentile(drawn, 0.95, 0.95)
    assert shifted[1] > 1  # the arithmetic without bounds
    low, high = bootstrap.metric_interval(SimpleNamespace(per_image={}), "classify_top1", drawn, 0.95, 0.95)
    assert (low, high) == (pytest.approx(shifted[0]), 1.0)
    assert bootstrap.metric_interval(SimpleNamespace(per_image={}), "fid", drawn, 0.95, 0.95) == shifted


def test_cached_intervals_are_computed_again_after_the_code_that_made_them_changed(classified, monkeypatch):
    from benchmark.analysis import bootstrap

    run = classified[2] / "first"
    first = bootstrap.cache_path(run, "n20")
    monkeypatch.setattr(bootstrap, "code_key", lambda: "an-upgrade")
    assert bootstrap.cache_path(run, "n20") != first and "an-upgrade" in bootstrap.cache_path(run, "n20").name


def test_zero_shot_on_cub_from_pixels_and_from_the_transmitted_text_equals_a_direct_clip_computation(tiny_clip,
                                                                                                   tmp_path):
    """CUB's species as CLIP prompts: the reconstruction's, the original's and the transmitted text's predicted
    class against the label, each equal to transformers' CLIP called directly on the same pixels and text."""
    from test_datasets import _fake_cub
    from transformers import CLIPModel, CLIPProcessor

    root = tmp_path / "cub"
    names = _fake_cub(root)
    rng = np.random.default_rng(5)
    for n in names:  # distinct pictures, so that predictions can differ
        Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)).save(root / "CUB_200_2011" / "images"
                                                                                    / f"{n}.jpg")
    out = tmp_path / "results"
    assert cli.main(["run", *QUIET, "--dataset", f"cub:{root}", "--split", "official-test", "--preprocess", "none",
                     "--codec", "cmc text_codec=huffman", "--codec", "jpeg quality=5,50", "--clip", str(tiny_clip),
                     "--add-metric", "zeroshot", "--save-reconstructions", "--out", str(out), "--name", "z"]) == 0
    run_dir = out / "z"
    rows, _ = load_run(run_dir)
    info = json.loads((run_dir / "config.json").read_text())
    assert info["dataset"]["classes"] == ["Black footed Albatross", "Laysan Albatross"]
    model, processor = CLIPModel.from_pretrained(tiny_clip).eval(), CLIPProcessor.from_pretrained(tiny_clip)

    def unit(x):
        x = getattr(x, "pooler_output", x)
        return x / x.norm(dim=-1, keepdim=True)

    def text(t):
        return unit(model.get_text_features(**processor(text=t, return_tensors="pt", padding=True, truncation=True)))

    def image(pixels):
        return unit(model.get_image_features(**processor(images=[np.asarray(pixels)], return_tensors="pt")))[0]

    with torch.no_grad():
        prompts = text([f"a photo of a {c}, a type of bird." for c in info["dataset"]["classes"]])
        for row in rows.itertuples():
            label = int(row.image_id.startswith("002"))
            original = int((prompts @ image(Image.open(root / "CUB_200_2011" / "images" / f"{row.image_id}.jpg")))
                           .argmax())
            recon = int((prompts @ image(Image.open(output_path(run_dir, row.codec, row.setting_label, row.image_id,
                                                                  ".png")))).argmax())
            assert (row.zeroshot_original, row.zeroshot_reconstruction, row.zeroshot_agreement) == \
                (original == label, recon == label, recon == original)
            if row.codec == "cmc":
                assert row.zeroshot_text == (int((prompts @ text([row.caption])[0]).argmax()) == label)
            else:
                assert np.isnan(row.zeroshot_text)
    assert set(rows.columns) >= {"zeroshot_reconstruction", "zeroshot_original", "zeroshot_agreement",
                                 "zeroshot_text"}


def test_zero_shot_without_labels_is_nan_with_its_reason():
    from metrics import zeroshot

    value, reason = zeroshot.reconstruction_correct(None, None, None, {"label": None, "classes": ()})
    assert np.isnan(value) and "class labels" in reason


def test_add_metric_takes_a_metric_or_a_group_and_a_misspelt_group_gets_a_suggestion():
    from metrics import registry

    assert registry.expand("text_retrieval") == ["text_retrieval_r1", "text_retrieval_r5"]
    assert registry.expand("zeroshot") == ["zeroshot_reconstruction", "zeroshot_original", "zeroshot_agreement",
                                           "zeroshot_text"]
    assert registry.expand("psnr_y") == ["psnr_y"]
    with pytest.raises(ValueError, match="did you mean 'zeroshot'"):
        registry.expand("zeroshoot")


def test_the_semantic_protocol_turns_the_task_metrics_on_and_the_users_choice_wins(classified, tiny_clip, tmp_path,
                                                                                   capsys, no_downloads):
    out = tmp_path / "results"
    common = ["run", *QUIET, "--dataset", "sample:2", "--split", "all", "--codec", "cmc text_codec=huffman",
              "--protocol", "semantic", "--out", str(out)]
    assert cli.main([*common, "--classify", str(classified[0]), "--clip", str(tiny_clip), "--name", "given"]) == 0
    info = json.loads((out / "given" / "config.json").read_text())
    assert info["config"]["stages"] == {"classify": str(classified[0])}
    assert info["config"]["image_metrics"]["clip"] == str(tiny_clip)
    assert {"zeroshot_text", "text_retrieval_r1", "text_retrieval_r5"} <= set(info["config"]["add_metrics"])
    _, summary = load_run(out / "given")
    assert summary.classify_top1.notna().all() and summary.text_retrieval_r5.notna().all()
    # The sample set's class is the background's colour: CMC's transmitted text beside the reconstruction
    info = json.loads((out / "given" / "config.json").read_text())
    assert info["dataset"]["classes"][:3] == ["red", "green", "blue"]
    assert summary.zeroshot_text.between(0, 1).all() and summary.zeroshot_reconstruction.between(0, 1).all()
    assert cli.main([*common, "--name", "defaults"]) == 0  # offline: the protocol's own choices, unavailable
    shown = capsys.readouterr().out
    info = json.loads((out / "defaults" / "config.json").read_text())
    assert info["config"]["stages"] == {"classify": "auto"} and info["config"]["image_metrics"]["clip"] == "auto"
    assert "Unavailable: Top-1 agr." in shown and info["protocol"]["name"] == "semantic"


def _as_downloaded(model, weights) -> None:
    """Save `model` where a download of torchvision's `weights` would leave its file (the test's torch hub)."""
    from metrics.download import hub_dir

    target = hub_dir() / "checkpoints" / weights.url.rsplit("/", 1)[1]
    target.parent.mkdir(parents=True)
    torch.save(model.eval().state_dict(), target)


def _random_lraspp():
    """A random-init torchvision LR-ASPP MobileNetV3 whose classifier biases are zero and whose BatchNorm statistics
    come from the test's images, so that its label maps depend on the input."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model("lraspp_mobilenet_v3_large", weights=None, weights_backbone=None)
    for name, p in model.named_parameters():
        if name.startswith("classifier") and name.endswith("bias"):
            torch.nn.init.zeros_(p)
    return model


def test_segmentation_miou_is_1_when_lossless_lower_with_noise_and_equals_numpy(tmp_path, natural_images):
    """A torchvision segmentation model by name, its weights file in the torch hub cache as a download leaves it;
    pooled and per-image mIoU against label maps computed here with torchvision and numpy."""
    import torchvision


    weights = torchvision.models.segmentation.LRASPP_MobileNet_V3_Large_Weights.DEFAULT
    preprocess = weights.transforms()
    model = _random_lraspp()
    pixels = [np.asarray(Image.open(p)) for p in sorted(natural_images.glob("*.png"))]
    with torch.no_grad():
        model.train()
        for p in pixels:
            model(preprocess(torch.from_numpy(np.array(p)).permute(2, 0, 1))[None])
    _as_downloaded(model, weights)
    out = tmp_path / "results"
    assert cli.main(["run", *QUIET, "--dataset", str(natural_images), "--limit", "2",
                     "--codec", "codecs_for_tests:Raw level=1",
                     "--codec", "codecs_for_tests:Noisy sigma=40 level=1", "--segment", "lraspp_mobilenet_v3_large",
                     "--save-reconstructions", "--out", str(out), "--name", "s"]) == 0
    run_dir = out / "s"
    rows, summary = load_run(run_dir)
    ids = sorted(rows.image_id.unique())

    def label_map(image):
        with torch.no_grad():
            x = preprocess(torch.from_numpy(np.array(image)).permute(2, 0, 1))[None]
            return model(x)["out"].argmax(1)[0].numpy()

    originals = [label_map(Image.open(natural_images / i)) for i in ids]
    for s in summary.itertuples():
        recon = [label_map(Image.open(output_path(run_dir, s.codec, s.setting_label, i, ".png"))) for i in ids]
        inter, union, per_image = np.zeros(256), np.zeros(256), []
        for a, b in zip(originals, recon):
            present = np.union1d(a, b)  # the other classes have no pixel in either map
            i, u = np.zeros(256), np.zeros(256)
            i[present] = [np.logical_and(a == c, b == c).sum() for c in present]
            u[present] = [np.logical_or(a == c, b == c).sum() for c in present]
            inter, union = inter + i, union + u
            per_image.append(np.mean(i[u > 0] / u[u > 0]))
        assert s.segment_miou == pytest.approx(np.mean(inter[union > 0] / union[union > 0]), abs=1e-9)
        assert s.segment_miou_image == pytest.approx(np.mean(per_image), abs=1e-9)
        assert s.n_segment == len(ids)
    by_codec = summary.set_index("codec")
    assert by_codec.segment_miou["raw"] == 1 and by_codec.segment_miou_image["raw"] == 1
    assert by_codec.segment_miou["noisy"] < 1
    assert json.loads((run_dir / "segment_passes.json").read_text())["reference"] == 2


def test_segment_takes_a_deeplabv3_state_dict_file_and_refuses_another_architecture(tmp_path):
    import torchvision

    from metrics import segment

    torch.manual_seed(0)
    good = tmp_path / "deeplabv3.pth"
    torch.save(torchvision.models.segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None,
                                                                  aux_loss=True).state_dict(), good)
    state = segment.resolve(str(good), tmp_path)
    assert state["status"] == "ok" and state["arch"] == "deeplabv3_resnet50" and state["model"].endswith("file)")
    assert state["transforms"] == "DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1"
    bad = tmp_path / "lraspp.pth"
    torch.save(_random_lraspp().state_dict(), bad)
    with pytest.raises(ValueError, match="not a state_dict of torchvision's deeplabv3_resnet50"):
        segment.resolve(str(bad), tmp_path)


def _coco_eval(truth: list[dict], found: list[dict], n_images: int) -> tuple[float, float]:
    """pycocotools' COCOeval itself: (mAP@[.5:.95], mAP@.5)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": k} for k in range(n_images)], "annotations": truth,
                      "categories": [{"id": c} for c in sorted({a["category_id"] for a in truth + found})]}
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(found), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats[0], evaluation.stats[1]


DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"


def _random_detector():
    """A random-init torchvision detector whose class 1 is confident (boxes above the threshold), saved where a
    download of its DEFAULT weights would leave it; and a function giving its detections of one image."""
    import torchvision

    weights = torchvision.models.get_model_weights(DETECTOR).DEFAULT
    torch.manual_seed(0)
    model = torchvision.models.get_model(DETECTOR, weights=None, weights_backbone=None).eval()
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[1] = 8.0
    _as_downloaded(model, weights)

    def detect(image):
        with torch.no_grad():
            found = model([weights.transforms()(torch.from_numpy(np.array(image)).permute(2, 0, 1))])[0]
        return [(b.tolist(), float(s), int(c)) for b, s, c in zip(found["boxes"], found["scores"], found["labels"])]

    return detect


def test_detection_map_is_1_when_lossless_lower_with_noise_and_equals_cocoeval_on_torchvisions_detections(
        tmp_path, natural_images):
    """A torchvision detection model by name (random-init, one class's score raised so that it detects), its file
    in the torch hub cache as a download leaves it; mAP against pycocotools' COCOeval run here on detections that
    torchvision's model gives here."""
    detect = _random_detector()
    out = tmp_path / "results"
    assert cli.main(["run", *QUIET, "--dataset", str(natural_images), "--limit", "2",
                     "--codec", "codecs_for_tests:Raw level=1",
                     "--codec", "codecs_for_tests:Noisy sigma=40 level=1,2", "--detect", DETECTOR,
                     "--save-reconstructions", "--out", str(out), "--name", "d"]) == 0
    run_dir = out / "d"
    rows, summary = load_run(run_dir)
    ids = sorted(rows.image_id.unique())
    originals = [detect(Image.open(natural_images / i)) for i in ids]
    for s in summary.itertuples():
        recon = [detect(Image.open(output_path(run_dir, s.codec, s.setting_label, i, ".png"))) for i in ids]
        truth = [{"id": n + 1, "image_id": k, "category_id": c, "iscrowd": 0, "bbox": [x, y, X - x, Y - y],
                  "area": (X - x) * (Y - y)} for n, (k, (x, y, X, Y), c) in enumerate(
                      (k, b, c) for k, dets in enumerate(originals) for b, score, c in dets if score >= 0.5)]
        found = [{"image_id": k, "category_id": c, "bbox": [x, y, X - x, Y - y], "score": score}
                 for k, dets in enumerate(recon) for (x, y, X, Y), score, c in dets]
        ap, ap50 = _coco_eval(truth, found, len(ids))
        assert s.detect_map == pytest.approx(ap, abs=1e-9)
        assert s.detect_map50 == pytest.approx(ap50, abs=1e-9)
    by_codec = summary.groupby("codec")
    assert (by_codec.get_group("raw").detect_map == 1).all()
    assert by_codec.get_group("noisy").detect_map.max() < 1


def test_detection_map_against_coco_annotations_scaled_by_the_preprocessing_equals_cocoeval(tmp_path, natural_images,
                                                                                           capsys):
    """MS-COCO with instance annotations: each image's boxes move into the preprocessed (resized) image's pixels,
    and each setting's mAP against them, with the originals' own as the ceiling, equals COCOeval on detections
    torchvision's model gives here, with the boxes scaled here; the leaderboard gives it an interval."""
    detect = _random_detector()
    side = 160
    root = tmp_path / "coco"
    (root / "val2014").mkdir(parents=True)
    (root / "annotations").mkdir()
    files = sorted(natural_images.glob("*.png"))[:3]
    images, annotations = [], []
    for i, path in enumerate(files):
        im = Image.open(path).convert("RGB")
        images.append({"id": 10 + i, "file_name": f"COCO_val2014_{i:012d}.png", "width": im.width,
                       "height": im.height})
        im.save(root / "val2014" / images[-1]["file_name"])
        if i == 2:
            continue  # an image with nothing annotated
        sx, sy = side / im.width, side / im.height
        found = [b for b, score, _ in detect(im.resize((side, side), Image.BICUBIC)) if score >= 0.5][:3]
        for k, (x1, y1, x2, y2) in enumerate(found):  # the detector's boxes in the file's pixels, one moved aside
            shift = 0.4 * (x2 - x1) if k == 0 else 0.0
            annotations.append({"id": len(annotations) + 1, "image_id": 10 + i, "category_id": 1, "iscrowd": 0,
                                "bbox": [x1 / sx + shift, y1 / sy, (x2 - x1) / sx, (y2 - y1) / sy],
                                "area": (x2 - x1) * (y2 - y1) / (sx * sy)})
        annotations.append({"id": len(annotations) + 1, "image_id": 10 + i, "category_id": 3, "iscrowd": 0,
                            "bbox": [5, 6, 30, 20], "area": 600} if i == 0 else  # a car nothing detects
                           {"id": len(annotations) + 1, "image_id": 10 + i, "category_id": 1, "iscrowd": 1,
                            "bbox": [0, 0, im.width, im.height], "area": im.width * im.height})  # a crowd of people
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps(
        {"images": images, "annotations": [{"image_id": im["id"], "id": im["id"], "caption": "a picture"}
                                           for im in images]}))
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(
        {"images": images, "annotations": annotations,
         "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]}))
    out = tmp_path / "results"
    assert cli.main(["run", *QUIET, "--dataset", f"coco:{root}", "--preprocess", f"resize-{side}",
                     "--codec", "codecs_for_tests:Raw level=1", "--codec", "codecs_for_tests:Noisy sigma=40 level=1,2",
                     "--detect", DETECTOR, "--save-reconstructions", "--out", str(out), "--name", "d"]) == 0
    run_dir = out / "d"
    rows, summary = load_run(run_dir)
    ids = sorted(rows.image_id.unique())
    by_id = {im["file_name"].rsplit(".", 1)[0]: im for im in images}
    truth = []
    for k, i in enumerate(ids):  # the annotations scaled here into the resized image's pixels
        im = by_id[i]
        sx, sy = side / im["width"], side / im["height"]
        truth += [{**a, "image_id": k, "area": a["area"] * sx * sy,
                   "bbox": [a["bbox"][0] * sx, a["bbox"][1] * sy, a["bbox"][2] * sx, a["bbox"][3] * sy]}
                  for a in annotations if a["image_id"] == im["id"]]
    truth = [{**a, "id": n + 1} for n, a in enumerate(truth)]

    def as_results(per_image):
        return [{"image_id": k, "category_id": c, "bbox": [x, y, X - x, Y - y], "score": score}
                for k, dets in enumerate(per_image) for (x, y, X, Y), score, c in dets]

    originals = as_results([detect(Image.open(root / "val2014" / by_id[i]["file_name"]).convert("RGB")
                                   .resize((side, side), Image.BICUBIC)) for i in ids])
    ceiling = _coco_eval(truth, originals, len(ids))[0]
    assert 0 < ceiling < 1
    for s in summary.itertuples():
        recon = as_results([detect(Image.open(output_path(run_dir, s.codec, s.setting_label, i, ".png")))
                            for i in ids])
        ap, ap50 = _coco_eval(truth, recon, len(ids))
        assert (s.detect_map_gt, s.detect_map50_gt) == (pytest.approx(ap, abs=1e-9), pytest.approx(ap50, abs=1e-9))
        assert s.detect_map_gt_original == pytest.approx(ceiling, abs=1e-9)
    assert (summary[summary.codec == "raw"].detect_map_gt == ceiling).all()
    assert summary[summary.codec == "noisy"].detect_map_gt.min() < ceiling
    capsys.readouterr()
    assert cli.main(["leaderboard", str(run_dir), "--metric", "detect_map_gt", "--anchor", "raw", "--bootstrap", "20",
                     "--out", str(tmp_path / "board")]) == 0
    shown = capsys.readouterr().out
    noisy = [line.split("|") for line in shown.splitlines() if line.startswith("| noisy")]
    assert noisy and "[" in noisy[-1][-2], shown


@pytest.mark.parametrize("orientation", range(1, 9))
def test_annotated_boxes_turn_with_the_exif_orientation_and_scale_with_the_preprocessing(tmp_path, orientation):
    """A box annotated on the stored pixels lands where PIL's exif_transpose moves those pixels (reading an image
    applies its EXIF orientation), then scales as the preprocessing resizes the turned image."""
    from PIL import ImageOps

    from benchmark.data.datasets import Dataset, Record
    from benchmark.run.feature_stage import truth_table

    width, height, (x, y, w, h) = 40, 24, (6, 3, 10, 7)
    mask = np.zeros((height, width), np.uint8)
    mask[y:y + h, x:x + w] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "COCO_val2014_000000000001.png"
    Image.fromarray(mask).save(path, exif=exif)
    turned = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    ys, xs = np.nonzero(turned > 127)
    dataset = Dataset("coco", str(tmp_path), "val2014",
                      [Record(path.stem, 0, str(path), objects=((x, y, w, h, 1, 0, w * h),))])
    for preprocess, side in (("none", None), ("resize-80", 80)):
        sx, sy = (side / turned.shape[1], side / turned.shape[0]) if side else (1.0, 1.0)
        box = truth_table(dataset, preprocess).iloc[0]
        assert [box.x1, box.y1, box.x2, box.y2] == pytest.approx(
            [xs.min() * sx, ys.min() * sy, (xs.max() + 1) * sx, (ys.max() + 1) * sy])
        assert box.area == pytest.approx(w * h * sx * sy)


def test_the_semantic_protocol_adds_detection_on_ms_coco_only():
    from types import SimpleNamespace

    from benchmark.run import protocols

    semantic = protocols.get("semantic")
    args = SimpleNamespace(clip="none")
    assert semantic.options(args, "coco")[1] == {"classify": "auto", "detect": "auto"}
    assert semantic.options(args, "cub")[1] == {"classify": "auto"}
    assert semantic.as_record()["stages_by_kind"] == [["coco", "detect", "auto"]]



def _cub_classifier(root, images, order):
    """A random-init resnet50 for CUB's classes, its last layer fitted (least squares) to name each original's
    species, saved as a state_dict with its class list (in `order`, CUB's folder names) beside it."""
    import torchvision

    torch.manual_seed(3)
    model = torchvision.models.resnet50(weights=None, num_classes=len(order))
    preprocess = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.transforms()
    batch = torch.stack([preprocess(torch.from_numpy(np.array(im)).permute(2, 0, 1)) for im, _ in images])
    with torch.no_grad():
        model.train()(batch)  # BatchNorm statistics from these images, so that features depend on the input
        model.eval()
        head, model.fc = model.fc, torch.nn.Identity()
        features = model(batch).double()
        wanted = torch.zeros(len(images), len(order), dtype=torch.float64)
        for k, (_, species) in enumerate(images):
            wanted[k, order.index(species)] = 10.0
        head.weight.copy_((torch.linalg.pinv(features) @ wanted).T.float())
        head.bias.zero_()
        model.fc = head
    weights = root / "cub-resnet50.pth"
    torch.save(model.state_dict(), weights)
    (root / "cub-resnet50.txt").write_text("".join(f"{name}\n" for name in order))
    return weights


def test_classifier_accuracy_against_cub_labels_equals_a_direct_computation(tmp_path):
    """`--classifier FILE`: accuracy on originals and reconstructions against CUB's species labels, its outputs
    matched to the dataset's classes by name (its list in another order, with a species the dataset lacks)."""
    import torchvision
    from test_datasets import _fake_cub

    from benchmark.run import weights as run_weights
    from metrics.download import file_digest

    root = tmp_path / "cub"
    names = _fake_cub(root)
    rng = np.random.default_rng(11)
    for n in names:
        Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)).save(root / "CUB_200_2011" / "images"
                                                                                    / f"{n}.jpg")
    order = ["003.Sooty_Albatross", "002.Laysan_Albatross", "001.Black_footed_Albatross"]
    pictures = [(Image.open(root / "CUB_200_2011" / "images" / f"{n}.jpg").convert("RGB"), n.split("/")[0])
                for n in names[1:]]
    weights = _cub_classifier(tmp_path, pictures, order)
    out = tmp_path / "results"
    assert cli.main(["run", *QUIET, "--dataset", f"cub:{root}", "--split", "official-test", "--preprocess", "none",
                     *CODECS, "--classifier", str(weights), "--save-reconstructions", "--out", str(out),
                     "--name", "c"]) == 0
    run_dir = out / "c"
    rows, summary = load_run(run_dir)
    info = json.loads((run_dir / "config.json").read_text())
    assert info["classifier"]["classes_sha256"] == file_digest(tmp_path / "cub-resnet50.txt")
    assert set(run_weights.recorded(RunRecord.from_json(info))) >= {"classifier", "classifier classes"}
    model = torchvision.models.resnet50(weights=None, num_classes=3)
    model.load_state_dict(torch.load(weights, weights_only=True))
    preprocess = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.transforms()

    def species(path):
        with torch.no_grad():
            logits = model.eval()(preprocess(torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1))[None])
        return order[int(logits.argmax())].split(".", 1)[1].replace("_", " ")

    for row in rows.itertuples():
        label = info["dataset"]["classes"][int(row.image_id.startswith("002"))]
        original = species(root / "CUB_200_2011" / "images" / f"{row.image_id}.jpg")
        recon = species(output_path(run_dir, row.codec, row.setting_label, row.image_id, ".png"))
        assert (row.classifier_original, row.classifier_reconstruction) == (original == label, recon == label)
    assert (rows.classifier_original == 1).all()  # the head was fitted to the originals
    assert (summary[summary.codec == "raw"].classifier_reconstruction == 1).all()
    (tmp_path / "cub-resnet50.txt").write_text("".join(f"{name}\n" for name in reversed(order)))
    assert run_weights.changed(RunRecord.from_json(info)) == [f"the classifier classes weights at {tmp_path / 'cub-resnet50.txt'} "
                                         "changed"]


def test_classifier_files_that_cannot_work_are_refused_before_any_work_and_a_missing_class_is_nan(tmp_path):
    import torchvision

    from metrics import classifier

    weights = tmp_path / "birds.pth"
    torch.save(torchvision.models.resnet50(weights=None, num_classes=2).state_dict(), weights)
    with pytest.raises(ValueError, match=r"class list .*birds.txt is missing"):
        classifier.resolve(str(weights), None)
    (tmp_path / "birds.txt").write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match="last layer has 2 outputs but birds.txt names 3 classes"):
        classifier.resolve(str(weights), None)
    with pytest.raises(ValueError, match="no such file"):
        classifier.resolve(str(tmp_path / "nothing.pth"), None)
    assert cli.main(["run", "--dataset", "sample:2", "--classifier", str(tmp_path / "nothing.pth"),
                     "--out", str(tmp_path / "r")]) == 1
    assert not (tmp_path / "r").exists()

    class Known:  # a classifier of CUB's first species only
        def known(self, classes):
            return {0}

    value, reason = classifier.reconstruction_correct(Known(), None, None, {"label": 1, "classes": ("A", "B")})
    assert np.isnan(value) and reason == "its class 'B' is not one of the classifier's classes"
    value, reason = classifier.original_correct(Known(), None, None, {"label": None, "classes": ()})
    assert np.isnan(value) and "class labels" in reason


def test_zero_shot_on_coco_is_multi_label_presence_equal_to_a_direct_clip_computation(tiny_clip, tmp_path):
    """MS-COCO with its instance annotations: an image's label is the set of its annotated categories, and each
    value the share of them among CLIP's k best prompts (R-precision), equal to transformers' CLIP called
    directly; an image with no annotated object has no value."""
    from transformers import CLIPModel, CLIPProcessor

    from benchmark.data.datasets import open_dataset

    root = tmp_path / "coco"
    (root / "val2014").mkdir(parents=True)
    (root / "annotations").mkdir()
    rng = np.random.default_rng(9)
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in (5, 6, 7)]
    for im in images:
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(root / "val2014" / im["file_name"])
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps(
        {"images": images, "annotations": [{"image_id": i, "id": i, "caption": f"picture {i}"} for i in (5, 6, 7)]}))
    categories = [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"},
                  {"id": 4, "name": "motorcycle"}]
    objects = [(5, 18), (5, 1), (5, 18), (5, 3), (6, 3)]  # image 5: dogs, a person, a car; 6: a car; 7: nothing
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(
        {"images": images, "categories": categories,
         "annotations": [{"image_id": i, "id": k, "category_id": c} for k, (i, c) in enumerate(objects)]}))
    dataset = open_dataset(f"coco:{root}")
    assert dataset.classes == ("person", "car", "motorcycle", "dog")  # in category-id order
    assert [r.label for r in dataset.records] == [(0, 1, 3), (1,), ()]
    out = tmp_path / "results"
    assert cli.main(["run", *QUIET, "--dataset", f"coco:{root}", "--preprocess", "none", "--codec", "jpeg quality=5,50",
                     "--clip", str(tiny_clip), "--add-metric", "zeroshot", "--save-reconstructions", "--out", str(out),
                     "--name", "z"]) == 0
    run_dir = out / "z"
    rows, _ = load_run(run_dir)
    model, processor = CLIPModel.from_pretrained(tiny_clip).eval(), CLIPProcessor.from_pretrained(tiny_clip)

    def unit(x):
        x = getattr(x, "pooler_output", x)
        return x / x.norm(dim=-1, keepdim=True)

    with torch.no_grad():
        prompts = unit(model.get_text_features(**processor(text=[f"a photo of a {c}." for c in dataset.classes],
                                                           return_tensors="pt", padding=True)))

        def best(path, k):
            image = unit(model.get_image_features(**processor(images=[np.asarray(Image.open(path))],
                                                              return_tensors="pt")))[0]
            return set((prompts @ image).topk(k).indices.tolist())

        for row in rows.itertuples():
            present = {"COCO_val2014_000000000005": {0, 1, 3}, "COCO_val2014_000000000006": {1}}.get(row.image_id)
            if present is None:
                assert np.isnan(row.zeroshot_reconstruction) and "no object" in row.metric_notes
                continue
            original = best(root / "val2014" / f"{row.image_id}.jpg", len(present))
            recon = best(output_path(run_dir, row.codec, row.setting_label, row.image_id, ".png"), len(present))
            assert row.zeroshot_original == len(original & present) / len(present)
            assert row.zeroshot_reconstruction == len(recon & present) / len(present)
            assert row.zeroshot_agreement == len(recon & original) / len(present)
