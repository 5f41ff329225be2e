import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import pandas as pd
from PIL import Image

from benchmark.codecs.codec_spec import parse_codec_spec
from benchmark.run.results import load_run
from benchmark.run.runner import RunConfig, create_run, execute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ["encode_s", "decode_s"]


def run(tmp_path, dataset, codecs, jobs=1, **kw):
    config = RunConfig(dataset=dataset, codecs=[parse_codec_spec(c) for c in codecs], **kw)
    run_dir = create_run(config, tmp_path / "results")
    outcome = execute(run_dir, jobs=jobs, progress=False)
    images, summary = load_run(run_dir)
    return outcome, images, summary


def test_rows_summary_and_provenance(tmp_path):
    outcome, images, summary = run(tmp_path, "sample", ["jpeg quality=10,50", "codecs_for_tests:Raw"], limit=4)
    assert outcome.n_rows == len(images) == 4 * 2 * 2 and outcome.n_failed == 0
    assert not images.duplicated(["image_id", "codec", "setting_index"]).any()
    for col in ["run_id", "created", "git_sha", "cmcbench_version", "config_hash", "versions", "dataset",
                "dataset_fingerprint", "preprocess", "image_sha256", "codec_versions"]:
        assert images[col].notna().all() and (images[col] != "").all(), col
    assert "libjpeg" in images[images.codec == "jpeg"].codec_versions.iloc[0]
    assert np.allclose(images.bpp, 8 * images.bytes / (images.width * images.height))
    raw = images[images.codec == "raw"]
    assert (raw.bytes == raw.width * raw.height * 3 + 4).all() and np.isinf(raw.psnr).all()
    means = images.groupby(["codec", "setting_index"])[["bpp", "psnr", "bytes"]].mean().reset_index()
    merged = summary.merge(means, on=["codec", "setting_index"], suffixes=("", "_ref"))
    assert len(merged) == 4 and np.allclose(merged.bpp, merged.bpp_ref) and np.allclose(merged.bytes, merged.bytes_ref)
    assert (summary.n_images == 4).all() and (summary.n_ok == 4).all()


def test_summary_is_tidy_no_means_of_identities_pixels_counted_whole_settings_as_integers(tmp_path, natural_images):
    _, images, summary = run(tmp_path, str(natural_images), ["jpeg quality=10,50", "codecs_for_tests:Raises"])
    assert not {"width", "height", "image_index", "sample"} & set(summary.columns)
    assert summary.setting.dtype == "int64" and sorted(summary[summary.codec == "jpeg"].setting) == [10, 50]
    ok = images[images.status == "ok"].assign(pixels=lambda d: d.width * d.height)
    counted = ok.groupby(["codec", "setting_index"]).pixels.agg(["sum", "mean"]).reset_index()
    merged = summary.merge(counted, on=["codec", "setting_index"], how="left")
    assert (merged.pixels_total == merged["sum"].fillna(0)).all() and merged.n_failed.any()
    assert np.allclose(merged.pixels_mean, merged["mean"], equal_nan=True)
    _, _, fractional = run(tmp_path / "f", "sample", ["jpeg quality=10.5,50"], limit=2)
    assert fractional.setting.dtype == "float64" and list(fractional.setting) == [10.5, 50.0]


def test_decoder_gets_only_the_bytes(tmp_path):
    outcome, images, _ = run(tmp_path, "sample", ["codecs_for_tests:Smuggler"], limit=2)
    assert outcome.n_failed == 2
    assert images.error.str.startswith("decode failed: AttributeError").all()


def test_misbehaving_codecs_fail_only_their_rows(tmp_path, natural_images):
    codecs = ["codecs_for_tests:Raises", "codecs_for_tests:Hangs", "codecs_for_tests:WrongSize", "jpeg quality=50"]
    outcome, images, summary = run(tmp_path, str(natural_images), codecs, timeout=0.5)
    by = images.set_index(["codec", "image_id", "setting_index"])
    assert (images[images.codec == "raises"].groupby("setting_index").status.first() == ["ok", "failed"]).all()
    assert by.loc[("raises", "img0.png", 1)].error == "encode failed: RuntimeError: boom at level 2"
    assert (images[images.codec == "hangs"].error == "decode timed out after 0.5 s").all()
    assert images[images.codec == "wrongsize"].error.str.match(r"output check failed: ValueError: decoded image "
                                                                r"is 128x95, expected 128x96").any()
    assert (images[images.codec == "jpeg"].status == "ok").all()
    assert outcome.n_failed == 4 + 8 + 8
    assert summary.set_index("codec").loc["jpeg"].n_ok == 4


def test_a_crashing_codec_loses_only_its_image(tmp_path, natural_images):
    outcome, images, _ = run(tmp_path, str(natural_images), ["codecs_for_tests:Crashes"], jobs=2)
    failed = images[images.status != "ok"]
    assert set(failed.image_id) == {"img1.png"} and failed.error.str.contains("worker process died").all()
    assert (images[images.image_id != "img1.png"].status == "ok").all() and len(images) == 8


def test_a_dying_worker_under_the_command_line_loses_only_its_image(tmp_path, natural_images):
    """Through bench.py (no network: its workers are forked, with the command line's signal handlers): the pool
    breaks while the next task is being sent; it is rebuilt and the lost tasks retried, and the workers the pool
    ends print no traceback. The run stopped with 'the process pool is not usable anymore'."""
    done = _cli(["run", "--dataset", str(natural_images), "--codec", "codecs_for_tests:Crashes", "--metrics", "none",
                 "--jobs", "2", "--no-progress", "--no-plots", "--allow-failures", "--out", str(tmp_path),
                 "--name", "c"])
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    images, _ = load_run(tmp_path / "c")
    failed = images[images.status != "ok"]
    assert set(failed.image_id) == {"img1.png"} and failed.error.str.contains("worker process died").all()
    assert (images[images.image_id != "img1.png"].status == "ok").all() and len(images) == 8


def _odd_folder(folder):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "good.png")
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")
    Image.fromarray(np.dstack([rgb, rgb[..., 0]]), "RGBA").save(folder / "rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rgb).convert("P").save(folder / "palette.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(folder / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(rgb[:, :40]).save(folder / "rotated.jpg", exif=exif.tobytes())
    Image.fromarray(rgb[:4, :4]).save(folder / "tiny.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "fake.jpg").write_text("hello")
    data = (folder / "good.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[:300])
    Image.new("L", (3000, 3000)).save(folder / "bomb.png")


@pytest.mark.parametrize("labels", [("模型", "模式"), ("a b", "a_b"), ("SD", "sd")])
def test_two_codec_labels_that_would_share_a_folder_are_refused_before_any_work(labels, tmp_path):
    """Labels that differ only in characters a folder name cannot hold (or only in case, on a file system that
    ignores it) wrote both codecs' shards into one folder: one codec's rows silently replaced the other's."""
    import dataclasses

    def config(first, second):
        return RunConfig(dataset="sample:8", split="all", inception={"enabled": False}, caption_embedder="none",
                         image_metrics={"ms_ssim": False, "lpips": "none"},
                         codecs=[dataclasses.replace(parse_codec_spec(f"{name} quality=50"), label=label)
                                 for name, label in (("jpeg", first), ("webp", second))])

    with pytest.raises(ValueError, match=f"Codec labels {labels[0]!r} and {labels[1]!r} would share one results "
                                         "folder"):
        create_run(config(*labels), tmp_path / "results", "r")
    assert not (tmp_path / "results" / "r" / "config.json").exists()
    run_dir = create_run(config(labels[0], "webp"), tmp_path / "results", "r")  # a folder each: both codecs' rows
    execute(run_dir, jobs=1, progress=False)
    images, _ = load_run(run_dir)
    assert images.groupby("codec").size().to_dict() == {labels[0]: 8, "webp": 8}


def test_mixed_folder_completes_with_reasons(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    _odd_folder(folder)
    outcome, images, _ = run(tmp_path, str(folder), ["jpeg quality=50", "jpeg2000 ratio=24"], max_pixels=4_000_000)
    reasons = images[images.status != "ok"].groupby("image_id").error.first().to_dict()
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert reasons["fake.jpg"] == "not a recognised image format"
    assert reasons["truncated.png"].startswith("truncated or corrupt image data")
    assert reasons["bomb.png"].startswith("decompression bomb guard: 3000x3000 = 9,000,000 pixels")
    assert "too small for JPEG 2000" in reasons["tiny.png"]
    assert set(reasons) == {"empty.png", "fake.jpg", "truncated.png", "bomb.png", "tiny.png"}
    ok = images[images.status == "ok"].groupby("image_id").first()
    assert ok.loc["gray.png"].input_notes == "grayscale replicated to RGB"
    assert ok.loc["cmyk.jpg"].source_mode == "CMYK"
    assert "exif orientation 8 applied" in ok.loc["rotated.jpg"].input_notes
    assert (ok.loc["rotated.jpg"].width, ok.loc["rotated.jpg"].height) == (64, 40)
    assert "16-bit scaled to 8-bit" in ok.loc["deep.png"].input_notes
    assert outcome.n_failed == 4 * 2 + 1


def _cli(args, **kw):
    return subprocess.run([sys.executable, os.path.join(ROOT, "bench.py"), *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.path.dirname(__file__)}, **kw)


def test_kill_9_then_resume_gives_the_uninterrupted_rows(tmp_path):
    gate = tmp_path / "gate"  # images from index 10 on wait for it: the run cannot end before the kill
    args = ["run", "--dataset", "sample:90", "--codec", f"codecs_for_tests:Gated gate={gate} after=10", "--codec",
            "jpeg quality=20,80", "--out", str(tmp_path), "--jobs", "2", "--no-plots", "--no-progress"]
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench.py"), *args, "--name", "killed"],
                            env={**os.environ, "PYTHONPATH": os.path.dirname(__file__)}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = tmp_path / "killed" / "images"
    while len(list(shards.glob("*/chunk-*.parquet"))) < 12:  # observable state, no clock
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_done = len(list(shards.glob("*/chunk-*.parquet")))
    assert 12 <= n_done < 60 and not (tmp_path / "killed" / "summary.parquet").exists()
    gate.touch()
    assert _cli(["run", "--resume", str(tmp_path / "killed"), "--no-plots", "--no-progress"]).returncode == 0
    assert _cli(args + ["--name", "clean"]).returncode == 0
    resumed, s1 = load_run(tmp_path / "killed")
    clean, s2 = load_run(tmp_path / "clean")
    same = [c for c in clean.columns if c not in TIMING + ["run_id", "created"]]
    assert len(resumed) == len(clean) == 30 * 4
    pd.testing.assert_frame_equal(resumed[same], clean[same])
    cols = ["codec", "setting_index", "n_images", "n_ok", "bpp", "psnr", "bytes"]
    pd.testing.assert_frame_equal(s1[cols], s2[cols])


def test_cli_default_run_help_and_codecs(tmp_path):
    done = _cli(["--out", str(tmp_path), "--no-progress", "--limit", "3"])
    assert done.returncode == 0, done.stderr
    run_dir = next(tmp_path.iterdir())
    assert (run_dir / "plots" / "rd_psnr.png").exists() and (run_dir / "plots" / "rd_psnr.svg").exists()
    images, summary = load_run(run_dir)
    assert set(summary.codec) == {"jpeg", "jpeg2000", "webp", "avif", "jpegxl", "cmc"}
    assert len(images) == 3 * (19 + 12 + 12 + 10 + 11 + 4)
    assert {"rd_ms_ssim.png", "rd_psnr.png"} <= {p.name for p in (run_dir / "plots").iterdir()}
    assert summary.ms_ssim.notna().all() and summary.lpips.isna().all()  # no AlexNet weights offline: NaN
    assert summary.lpips_status.str.startswith("unavailable: no AlexNet weights").all()
    assert "Unavailable: LPIPS (left empty, not zero): no AlexNet weights" in done.stdout
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dataset"]["n_images"] == 3 and "openjpeg" in json.dumps(config["codecs"])
    assert "Plots:" in done.stdout and str(run_dir) in done.stdout
    assert (run_dir / "plots" / "rd_psnr.pdf").exists()
    assert "--resume" in _cli(["run", "--help"]).stdout
    listing = _cli(["codecs"]).stdout
    assert "jpeg2000" in listing and "quality=5,10" in listing


def test_cli_failed_rows_exit_status(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    Image.new("RGB", (64, 64)).save(folder / "ok.png")
    (folder / "bad.png").write_bytes(b"")
    done = _cli(["run", "--dataset", str(folder), "--codec", "jpeg quality=50", "--out", str(tmp_path / "r"),
                 "--no-progress", "--no-plots"])
    assert done.returncode == 3 and "empty file (0 bytes)" in done.stdout
    done = _cli(["run", "--dataset", "nonesuch:1", "--out", str(tmp_path / "r")])
    assert done.returncode == 1 and done.stderr.startswith("error: Unknown dataset")


def test_timings_count_every_stage_and_stay_out_of_the_rows(tmp_path):
    """timings.json: worker stages summed over the pool (one encode, decode and PSNR per row), the
    orchestrator's own stages, one record per execute call; no timing column enters the rows."""
    from benchmark.run import timings

    config = RunConfig(dataset="sample", codecs=[parse_codec_spec("jpeg quality=10,50")], limit=4, chunk_size=1,
                       inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": True, "lpips": "none"})
    run_dir = create_run(config, tmp_path / "results")
    outcome = execute(run_dir, jobs=2, progress=False)
    [record] = timings.read(run_dir)
    stages = record["stages"]
    for stage in ("worker: encode", "worker: decode", "worker: psnr", "worker: ms_ssim"):
        assert stages[stage]["count"] == outcome.n_rows == 8 and stages[stage]["seconds"] > 0, stage
    assert stages["worker: read image"]["count"] == 4 and stages["write shards"]["count"] == 4
    assert 0 < sum(v["seconds"] for k, v in stages.items() if not k.startswith("worker: ")) <= record["total_s"]
    images, _ = load_run(run_dir)
    assert not any("timing" in c or c.endswith("_seconds") for c in images.columns)
    execute(run_dir, jobs=2, progress=False)  # nothing left to do: a second record, without worker stages
    assert len(timings.read(run_dir)) == 2 and "worker: encode" not in timings.read(run_dir)[1]["stages"]


WORKER_THREADS = """
import concurrent.futures as cf, os, sys
import torch  # live in this process, as in the CLI with networks: workers fork from a forkserver
from benchmark.run import local_executor

def math_threads(_):
    import threadpoolctl
    import torch
    return [torch.get_num_threads(), sorted({i["num_threads"] for i in threadpoolctl.threadpool_info()})]

if __name__ == "__main__":
    with cf.ProcessPoolExecutor(2, mp_context=local_executor.pool_context()) as pool:
        workers = list(pool.map(math_threads, range(2)))
    import json
    print(json.dumps([workers, torch.get_num_threads(),
                      [os.environ.get(v) for v in local_executor.MATH_THREAD_VARIABLES]]))
"""


def test_local_workers_start_with_one_math_thread_each_and_the_parent_keeps_its_own(tmp_path):
    """Workers fork from a forkserver that loaded torch and numpy under one thread each (they read the count when
    they load); the parent's environment and threads are left as they were."""
    script = tmp_path / "threads.py"
    script.write_text(WORKER_THREADS)
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, cwd=os.getcwd())
    assert done.returncode == 0, done.stderr
    workers, parent_threads, parent_env = json.loads(done.stdout.strip().splitlines()[-1])
    assert workers == [[1, [1]], [1, [1]]]
    assert parent_threads == (os.cpu_count() or 1) and parent_env == [None, None, None]


def test_temporary_folders_that_workers_hold_until_they_exit_are_removed_with_the_pool(tmp_path):
    """A worker ends in os._exit, where no library's temporary folder is cleaned up: they must not pile up in the
    system's temporary folder, run after run."""
    log = tmp_path / "held.txt"
    outcome, _, _ = run(tmp_path, "sample", [f"codecs_for_tests:HoldsTemporaryFolder log={log}"], jobs=2, limit=4,
                        chunk_size=1)
    held = log.read_text().split()
    assert outcome.n_failed == 0 and len(held) >= 2  # one per worker process that encoded
    assert [p for p in held if os.path.exists(p)] == []
    assert all(os.path.dirname(p) != os.path.realpath(tempfile.gettempdir()) for p in held)  # in the pool's folder


RAY_HOLDS = """
import json, tempfile
from benchmark.run.ray_executor import session

def hold():
    import tempfile
    tempfile.held = tempfile.TemporaryDirectory(prefix="cmcbench-test-held-")  # kept until the worker is killed
    return tempfile.held.name

with session(None, 2) as ray:
    names = ray.get([ray.remote(hold).remote() for _ in range(4)])
print(json.dumps([names, tempfile.gettempdir()]))
"""


def test_temporary_folders_of_the_workers_of_a_ray_started_for_the_run_are_removed_after_it(tmp_path):
    """Ray kills its workers at shutdown, where no library's temporary folder is cleaned up."""
    pytest.importorskip("ray")
    done = subprocess.run([sys.executable, "-c", RAY_HOLDS], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    held, system = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(held) == 4
    assert [p for p in held if os.path.exists(p)] == []
    assert all(os.path.dirname(p) != system for p in held)  # in the run's folder for them
