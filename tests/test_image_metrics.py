"""MS-SSIM and LPIPS: agreement with independent or reference computations, and their place in runs."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from benchmark.codecs.codec_spec import parse_codec_spec
from benchmark.run.record import RunRecord
from benchmark.run.results import load_run
from benchmark.run.runner import RunConfig, create_run, execute
from metrics.msssim import MIN_SIDE, ms_ssim

torch = pytest.importorskip("torch")

WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])


def _numpy_ms_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """MS-SSIM written out from Wang et al. 2003 with pytorch-msssim's conventions (valid Gaussian filtering,
    sigma 1.5, 2x2 average pooling that zero-pads odd sides, per-channel values averaged)."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    g /= g.sum()
    # pytorch-msssim builds its window in float32; its rounded weights (3e-8 off) move MS-SSIM by ~1e-6.
    from pytorch_msssim.ssim import _fspecial_gauss_1d

    rounded = _fspecial_gauss_1d(11, 1.5).numpy().ravel().astype(np.float64)
    assert np.abs(rounded - g).max() < 1e-7
    g = rounded

    def filt(a):
        a = np.apply_along_axis(lambda r: np.convolve(r, g, "valid"), 0, a)
        return np.apply_along_axis(lambda r: np.convolve(r, g, "valid"), 1, a)

    def pool(a):
        ph, pw = a.shape[0] % 2, a.shape[1] % 2
        a = np.pad(a, ((ph, ph), (pw, pw)))
        h, w = (a.shape[0] - 2) // 2 + 1, (a.shape[1] - 2) // 2 + 1
        return a[:2 * h, :2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3))

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    per_channel = []
    for c in range(3):
        a, b = x[..., c].astype(np.float64), y[..., c].astype(np.float64)
        values = []
        for level in range(5):
            mu1, mu2 = filt(a), filt(b)
            s11, s22, s12 = filt(a * a) - mu1 ** 2, filt(b * b) - mu2 ** 2, filt(a * b) - mu1 * mu2
            cs = (2 * s12 + c2) / (s11 + s22 + c2)
            ssim = (2 * mu1 * mu2 + c1) / (mu1 ** 2 + mu2 ** 2 + c1) * cs
            values.append(max(cs.mean(), 0) if level < 4 else max(ssim.mean(), 0))
            a, b = pool(a), pool(b)
        per_channel.append(np.prod(np.array(values) ** WEIGHTS))
    return float(np.mean(per_channel))


def _photo(h, w, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 80 * np.sin(x / 9 + c) * np.cos(y / (13 + c)) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def test_ms_ssim_matches_the_formula_and_is_one_on_itself():
    img = _photo(183, 201)  # odd sides exercise the padded pooling
    noisy = np.clip(img + np.random.default_rng(1).normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    value, note = ms_ssim(img, noisy)
    assert note == "" and 0.5 < value < 0.99
    assert value == pytest.approx(_numpy_ms_ssim(img, noisy), rel=2e-6)  # float32 against float64
    assert ms_ssim(img, img) == (pytest.approx(1.0, abs=1e-6), "")
    worse, _ = ms_ssim(img, np.clip(img + np.random.default_rng(2).normal(0, 40, img.shape), 0, 255).astype(np.uint8))
    assert worse < value


@pytest.mark.parametrize("h,w", [(161, 161), (183, 201), (256, 384), (331, 250)])
def test_ms_ssim_equals_pytorch_msssim(h, w):
    """cmcbench's OpenCV implementation against the reference package, on JPEG artefacts and on noise."""
    import io

    from pytorch_msssim import ms_ssim as reference

    img = _photo(h, w, seed=h)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=20)
    jpeg = np.asarray(Image.open(buf).convert("RGB"))
    noisy = np.clip(img + np.random.default_rng(w).normal(0, 30, img.shape), 0, 255).astype(np.uint8)
    for other in (jpeg, noisy, img[::-1].copy()):
        x = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]
        y = torch.from_numpy(other.astype(np.float32)).permute(2, 0, 1)[None]
        expected = float(reference(x, y, data_range=255, size_average=True, win_size=11))
        assert ms_ssim(img, other)[0] == pytest.approx(expected, abs=1e-6)


def test_ms_ssim_reused_buffers_carry_nothing_between_images():
    a, b = _photo(200, 240, seed=1), _photo(200, 240, seed=2)
    c, d = _photo(333, 171, seed=3), _photo(333, 171, seed=4)
    first = ms_ssim(a, b)
    for pair in ((c, d), (b, a), (c, c)):
        ms_ssim(*pair)
    assert ms_ssim(a, b) == first and ms_ssim(b, a)[0] == pytest.approx(first[0], abs=1e-6)


def test_ms_ssim_window_is_pytorch_msssims_bit_for_bit():
    from pytorch_msssim.ssim import _fspecial_gauss_1d

    from metrics.msssim import gaussian_window

    assert gaussian_window().tobytes() == _fspecial_gauss_1d(11, 1.5).numpy().ravel().tobytes()


def test_ms_ssim_small_image_is_unavailable_not_invented():
    img = _photo(MIN_SIDE - 1, 300)
    value, note = ms_ssim(img, img)
    assert np.isnan(value) and "smaller than its 161-px minimum side" in note


def test_the_config_hash_says_ms_ssim_is_on_exactly_when_the_run_computes_it():
    """MS-SSIM's switch is a stage of its metric file: the hash and the resolved state read the same default, so a
    configuration that leaves it out is hashed as on, as it runs, and --no-ms-ssim is the reason when it is off."""
    from benchmark import cli
    from benchmark.run import fullref

    for options, on in (({"lpips": "none"}, True), ({"ms_ssim": True}, True), ({"ms_ssim": False}, False)):
        hashed = RunConfig(image_metrics=options).hashed_part()["image_metrics"]["ms_ssim"]
        state = fullref.resolve(options)["ms_ssim"]
        assert hashed is on and (state["status"] != "disabled") is on, (options, hashed, state)
    assert fullref.resolve({"ms_ssim": False})["ms_ssim"]["reason"] == "not requested (--no-ms-ssim)"
    parser = cli.build_parser()
    assert parser.parse_args(["run", "--no-ms-ssim"]).ms_ssim is False
    assert parser.parse_args(["run"]).ms_ssim is None  # filled in after --resume compares flags with defaults


@pytest.fixture(scope="session")
def random_alexnet(tmp_path_factory):
    """A seeded random torchvision AlexNet saved as a weights file: the real --lpips PATH loading path."""
    import torchvision

    torch.manual_seed(0)
    alex = torchvision.models.alexnet(weights=None)
    path = tmp_path_factory.mktemp("lpips") / "alexnet-random.pth"
    torch.save(alex.state_dict(), path)
    return path, alex


def test_lpips_matches_the_lpips_package(random_alexnet, monkeypatch):
    import lpips
    import lpips.pretrained_networks as pn

    from metrics.lpips import LPIPS

    path, alex = random_alexnet
    ours = LPIPS(str(path))
    for i, layer in enumerate(alex.features):
        if hasattr(layer, "weight"):  # every backbone weight came from the file
            slice_ = next(s for s in (ours.model.net.slice1, ours.model.net.slice2, ours.model.net.slice3,
                                      ours.model.net.slice4, ours.model.net.slice5) if str(i) in s._modules)
            assert torch.equal(slice_._modules[str(i)].weight, layer.weight)
    # The package's own model, built its own way around the same AlexNet, and its own forward pass.
    monkeypatch.setattr(pn.tv, "alexnet", lambda *a, **k: alex)
    reference = lpips.LPIPS(net="alex", version="0.1", pretrained=True, verbose=False).eval()
    a, b = _photo(64, 96, 0), _photo(64, 96, 5)
    to01 = lambda im: torch.from_numpy(im).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    with torch.inference_mode():
        expected = float(reference(to01(a), to01(b), normalize=True))
    got = ours.distance(ours.features(a), b)
    assert got > 1e-4 and got == pytest.approx(expected, rel=1e-5)
    assert ours.distance(ours.features(a), a) == 0.0


def test_lpips_missing_weights_file_is_a_clear_message():
    from metrics.lpips import LPIPSUnavailable, resolve_backbone

    with pytest.raises(LPIPSUnavailable, match="does not exist"):
        resolve_backbone("/nonexistent/alexnet.pth")


def test_runs_report_ms_ssim_and_lpips(random_alexnet, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(_photo(176, 192, i)).save(folder / f"im{i}.png")
    Image.fromarray(_photo(96, 128, 9)).save(folder / "small.png")
    config = RunConfig(dataset=f"folder:{folder}", inception={"enabled": False}, caption_embedder="none",
                       codecs=[parse_codec_spec("codecs_for_tests:Raw level=1"), parse_codec_spec("jpeg quality=10,60")],
                       image_metrics={"ms_ssim": True, "lpips": str(random_alexnet[0])})
    run_dir = create_run(config, tmp_path / "runs", "m", progress=False)
    execute(run_dir, jobs=2, progress=False)
    images, summary = load_run(run_dir)
    assert (images.status == "ok").all()
    raw = images[(images.codec == "raw") & (images.image_id != "small.png")]
    assert np.allclose(raw.ms_ssim, 1.0, atol=1e-6) and (raw.lpips == 0).all()
    small = images[images.image_id == "small.png"]
    assert small.ms_ssim.isna().all() and small.metric_notes.str.contains("161-px").all()
    assert small.lpips.notna().all()
    jpeg = summary[summary.codec == "jpeg"].sort_values("setting")
    assert jpeg.ms_ssim.is_monotonic_increasing and jpeg.lpips.is_monotonic_decreasing
    assert (summary.ms_ssim_status == "ok").all() and (summary.lpips_status == "ok").all()
    from benchmark.analysis.plots import rd_plots

    names = {p.stem for p in rd_plots(summary, tmp_path / "plots")}
    assert {"rd_ms_ssim", "rd_lpips"} <= names


def test_lpips_unavailable_is_nan_with_reason(tmp_path, monkeypatch, natural_images, no_downloads):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))  # no cached weights, and no network here
    monkeypatch.setattr("metrics.download.download_url_to_file",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    config = RunConfig(dataset=f"folder:{natural_images}", inception={"enabled": False}, caption_embedder="none",
                       codecs=[parse_codec_spec("jpeg quality=50")])
    run_dir = create_run(config, tmp_path / "runs", "u", progress=False)
    execute(run_dir, jobs=1, progress=False)
    _, summary = load_run(run_dir)
    assert summary.lpips.isna().all() and summary.lpips_status.str.contains("--lpips PATH").all()
    assert summary.lpips_status.str.contains("alexnet-owt-7be5be79.pth failed").all()  # names the file and why


def test_lpips_runs_on_the_runs_device(random_alexnet, tmp_path, monkeypatch, natural_images):
    """--device reaches the per-image networks (LPIPS was always on the CPU, even with --device cuda). No GPU
    here: the device check is passed through and the network, recorded, is built on the CPU."""
    import metrics.inception
    import metrics.lpips

    seen = []
    real_load = metrics.lpips.load
    monkeypatch.setattr(metrics.inception, "pick_device", lambda device="auto": device)
    monkeypatch.setattr(metrics.lpips, "load", lambda state, device="cpu": seen.append(device) or real_load(state, "cpu"))
    config = RunConfig(dataset=f"folder:{natural_images}", inception={"enabled": False, "device": "cuda:1"},
                       caption_embedder="none", codecs=[parse_codec_spec("jpeg quality=40,80")],
                       image_metrics={"ms_ssim": False, "lpips": str(random_alexnet[0])})
    execute(create_run(config, tmp_path / "runs", "d", progress=False), jobs=1, progress=False)
    assert seen == ["cuda:1"]  # once per process, on the run's device


@pytest.fixture(scope="session")
def random_vgg16(tmp_path_factory):
    """torchvision's VGG16, random-init (seeded): the file holds its feature layers, as DISTS uses them."""
    import torchvision

    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).eval()
    path = tmp_path_factory.mktemp("vgg") / "vgg16-random.pth"
    torch.save({k: v for k, v in vgg.state_dict().items() if k.startswith("features.")}, path)
    return path, vgg


def test_dists_matches_the_dists_pytorch_package(random_vgg16, monkeypatch):
    """DISTS_pytorch's own model (its network, its bundled alpha/beta, its forward) around the same VGG16,
    against cmcbench's split computation, on photos, JPEG artefacts, noise and the image itself."""
    import io

    import DISTS_pytorch.DISTS_pt as package

    from metrics.dists import DISTS, alpha_beta_path

    path, vgg = random_vgg16
    monkeypatch.setattr(package.models, "vgg16", lambda *a, **k: vgg)  # their constructor would download it
    theirs = package.DISTS(load_weights=False).eval()
    weights = torch.load(alpha_beta_path(), map_location="cpu", weights_only=True)
    theirs.alpha.data, theirs.beta.data = weights["alpha"], weights["beta"]
    ours = DISTS(str(path))
    img = _photo(96, 128, seed=3)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=15)
    jpeg = np.asarray(Image.open(buf).convert("RGB"))
    noisy = np.clip(img + np.random.default_rng(4).normal(0, 25, img.shape), 0, 255).astype(np.uint8)
    as_tensor = lambda a: torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float() / 255  # noqa: E731 - ToTensor()
    values = []
    for other in (jpeg, noisy, img):
        expected = float(theirs(as_tensor(img), as_tensor(other)).detach())
        values.append(ours.distance(ours.features(img), other))
        assert values[-1] == pytest.approx(expected, abs=1e-5)
    assert values[2] == pytest.approx(0.0, abs=1e-6) and values[0] > 0 and values[1] > 0


def test_runs_report_dists_when_asked(random_vgg16, tmp_path, natural_images):
    config = RunConfig(dataset=f"folder:{natural_images}", inception={"enabled": False}, caption_embedder="none",
                       codecs=[parse_codec_spec("jpeg quality=20,90"), parse_codec_spec("codecs_for_tests:Raw")],
                       image_metrics={"ms_ssim": False, "lpips": "none", "dists": str(random_vgg16[0])})
    run_dir = create_run(config, tmp_path / "runs", "d", progress=False)
    execute(run_dir, jobs=1, progress=False)
    images, summary = load_run(run_dir)
    assert images.dists.notna().all() and (images[images.codec == "raw"].dists.abs() < 1e-6).all()
    assert (images[images.codec == "jpeg"].dists > 0).all() and (summary.dists_status == "ok").all()
    off = create_run(RunConfig(dataset=f"folder:{natural_images}", inception={"enabled": False}, caption_embedder="none",
                               codecs=[parse_codec_spec("jpeg quality=50")]), tmp_path / "runs", "off", progress=False)
    execute(off, jobs=1, progress=False)
    assert "dists" not in load_run(off)[0]  # not asked for: no column, never a made-up value


def test_lpips_vgg_matches_the_lpips_package(random_vgg16, monkeypatch, tmp_path, natural_images):
    """LPIPS with the VGG16 backbone: the lpips package's own model and forward around the same VGG16."""
    import lpips
    import lpips.pretrained_networks as pn

    from metrics.lpips import LPIPS

    path, vgg = random_vgg16
    monkeypatch.setattr(pn.tv, "vgg16", lambda *a, **k: vgg)  # the package would download it
    theirs = lpips.LPIPS(net="vgg", version="0.1", verbose=False).eval()
    ours = LPIPS(str(path), net="vgg")
    img = _photo(64, 96, seed=5)
    noisy = np.clip(img + np.random.default_rng(6).normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    as_tensor = lambda a: torch.from_numpy(np.array(a, np.float32)).permute(2, 0, 1)[None] / 127.5 - 1  # noqa: E731
    with torch.no_grad():
        expected = float(theirs(as_tensor(img), as_tensor(noisy)))
    assert ours.distance(ours.features(img), noisy) == pytest.approx(expected, abs=1e-6) and expected > 0
    config = RunConfig(dataset=f"folder:{natural_images}", inception={"enabled": False}, caption_embedder="none",
                       codecs=[parse_codec_spec("jpeg quality=20,90")],
                       image_metrics={"ms_ssim": False, "lpips": "none", "lpips_vgg": str(path)})
    run_dir = create_run(config, tmp_path / "runs", "v", progress=False)
    execute(run_dir, jobs=1, progress=False)
    images, summary = load_run(run_dir)
    assert images.lpips_vgg.gt(0).all() and (summary.lpips_vgg_status == "ok").all() and "lpips" not in images


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    from tiny_models import tiny_clip

    return tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def test_clip_metrics_equal_a_direct_computation(tiny_clip, tmp_path):
    """CLIP similarity and CLIP score in a run against the same model called directly (transformers), on the
    sample set's captions and the saved reconstructions; a text codec's transmitted text gets its own score."""
    from transformers import CLIPModel, CLIPProcessor

    from benchmark.data.datasets import open_dataset
    from benchmark.run.results import output_path
    from benchmark.data.sample import render

    config = RunConfig(dataset="sample", limit=3, inception={"enabled": False}, caption_embedder="none",
                       codecs=[parse_codec_spec("jpeg quality=10,90"), parse_codec_spec("cmc text_codec=huffman")],
                       image_metrics={"ms_ssim": False, "lpips": "none", "clip": str(tiny_clip)},
                       save_reconstructions=True)
    run_dir = create_run(config, tmp_path / "runs", "c", progress=False)
    execute(run_dir, jobs=1, progress=False)
    images, summary = load_run(run_dir)
    model, processor = CLIPModel.from_pretrained(tiny_clip).eval(), CLIPProcessor.from_pretrained(tiny_clip)
    records = {r.image_id: r for r in open_dataset("sample").records}

    def unit(out):
        out = getattr(out, "pooler_output", out)
        return out / out.norm(dim=-1, keepdim=True)

    def image(a):
        return unit(model.get_image_features(**processor(images=[np.asarray(a)], return_tensors="pt")))[0]

    def texts(t):
        return unit(model.get_text_features(**processor(text=list(t), return_tensors="pt", padding=True,
                                                        truncation=True)))

    with torch.no_grad():
        for row in images.itertuples():
            original = np.asarray(render(int(row.image_id.rsplit("-", 1)[1])))
            recon = np.asarray(Image.open(output_path(run_dir, row.codec, row.setting_label, row.image_id, ".png")))
            e = image(recon)
            assert row.clip_similarity == pytest.approx(float(image(original) @ e), abs=1e-5)
            expected = float((100 * (texts(records[row.image_id].captions) @ e)).clamp(min=0).mean())
            assert row.clip_score == pytest.approx(expected, abs=1e-4)
            if row.codec == "cmc":
                sent = float((100 * (texts([row.caption]) @ e)).clamp(min=0)[0])
                assert row.clip_score_text == pytest.approx(sent, abs=1e-4)
            else:
                assert np.isnan(row.clip_score_text)
    assert (summary.clip_status == "ok").all() and images.clip_similarity.notna().all()


def test_clip_offline_without_the_model_is_nan_with_its_reason(tmp_path):
    config = RunConfig(dataset="sample", limit=2, inception={"enabled": False}, caption_embedder="none",
                       codecs=[parse_codec_spec("jpeg quality=50")],
                       image_metrics={"ms_ssim": False, "lpips": "none", "clip": "auto"})
    run_dir = create_run(config, tmp_path / "runs", "o", progress=False)
    execute(run_dir, jobs=1, progress=False)
    images, summary = load_run(run_dir)
    assert images.clip_similarity.isna().all() and images.clip_score.isna().all()
    assert summary.clip_status.str.contains("openai/clip-vit-large-patch14 is not in the local Hugging Face cache").all()


@pytest.mark.parametrize("metric", ["lpips", "lpips_vgg", "dists", "clip", "dinov2", "inception"])
def test_every_weight_file_is_hashed_and_a_swapped_one_stops_resume(metric, random_alexnet, random_vgg16, tiny_clip,
                                                                    random_inception_weights, tmp_path):
    """A run records every weight file its metrics use, puts it in the config hash, and refuses to resume once
    one of them changed (here: replaced by another random network of the same architecture)."""
    import json
    import shutil

    from tiny_models import tiny_dinov2

    from benchmark.run import weights

    own = tmp_path / "weights"
    own.mkdir()
    image_metrics = {"ms_ssim": False, "lpips": "none"}
    inception, dinov2 = {"enabled": False, "device": "cpu", "batch_size": 4}, {"model": "none"}
    if metric in ("lpips", "lpips_vgg", "dists"):
        source = random_alexnet[0] if metric == "lpips" else random_vgg16[0]
        path = own / source.name
        shutil.copy(source, path)
        image_metrics[metric] = str(path)
    elif metric == "clip":
        path = own / "clip"
        shutil.copytree(tiny_clip, path)
        image_metrics["clip"] = str(path)
    elif metric == "dinov2":
        path = tiny_dinov2(own / "dinov2")
        dinov2 = {"model": str(path), "k": 3}
    else:
        path = own / "inception.pth"
        shutil.copy(random_inception_weights, path)
        inception = {"enabled": True, "weights": str(path), "device": "cpu", "batch_size": 4, "isc_splits": 2,
                     "kid_subsets": 4, "kid_subset_size": 2, "seed": 2020, "patch_fid": False}
    config = RunConfig(dataset="sample:6", split="all", inception=inception, caption_embedder="none", chunk_size=2,
                       image_metrics=image_metrics, dinov2=dinov2, codecs=[parse_codec_spec("jpeg quality=50")])
    run_dir = create_run(config, tmp_path / "runs", "w", progress=False)
    info = json.loads((run_dir / "config.json").read_text())
    files = weights.recorded(RunRecord.from_json(info))
    ours = [p for p, _ in files.values() if p.startswith(str(own))]  # the rest ship with packages (lpips, DISTS)
    assert len(ours) == 1, files
    other = create_run(RunConfig(**{**config.__dict__, "image_metrics": {"ms_ssim": False, "lpips": "none"},
                                    "inception": {"enabled": False}, "dinov2": {"model": "none"}}),
                       tmp_path / "runs", "without", progress=False)
    assert json.loads((other / "config.json").read_text())["config_hash"] != info["config_hash"]
    execute(run_dir, jobs=1, progress=False)
    sorted((run_dir / "images" / "jpeg").glob("*.parquet"))[-1].unlink()  # as if killed before the last task
    target = ours[0]
    data = bytearray(pathlib.Path(target).read_bytes())
    data[-1] ^= 0xFF  # another file of the same size
    pathlib.Path(target).write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=r"Cannot resume .*weights at .* changed"):
        execute(run_dir, jobs=1, progress=False, resume=True)
