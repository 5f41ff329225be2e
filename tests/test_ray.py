"""The Ray executor: the same rows and set-level metrics as the local executor, and no work lost or
duplicated when a Ray worker is killed mid-run or the driver dies and the run is resumed."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from benchmark.cli import DEFAULT_CODECS
from benchmark.codecs.codec_spec import parse_codec_spec
from benchmark.run.results import load_run, shard_files
from benchmark.run.runner import RunConfig, create_run, execute

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

TIMING = ["encode_s", "decode_s", "run_id", "created"]


@pytest.fixture(scope="module")
def local_ray(hermetic_module, tmp_path_factory):
    """A local Ray instance with 2 CPUs (as in CI); the executor joins it instead of starting its own. Its workers'
    temporary folders are the test's (Ray kills them at shutdown, where none is cleaned up)."""
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "TMPDIR": str(tmp_path_factory.mktemp("tmp"))}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = [c for c in a.columns if c not in TIMING]
    assert set(cols) == {c for c in b.columns if c not in TIMING}
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True))


def _same_summary(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = [c for c in a.columns if c not in TIMING]
    pd.testing.assert_frame_equal(a[cols], b[cols])


def _default_specs():
    specs = []
    for name in DEFAULT_CODECS:  # what `python bench.py` runs
        spec = parse_codec_spec(name)
        try:
            spec.codec_class().check_available()
        except Exception:  # noqa: BLE001 - an optional codec missing here is missing in both runs
            continue
        specs.append(spec)
    return specs


def _local_and_ray(tmp_path, make_config, monkeypatch=None):
    outcomes = {}
    for executor in ("local", "ray"):
        run_dir = create_run(make_config(), tmp_path / executor, "run", progress=False)
        stats = {}
        outcomes[executor] = execute(run_dir, jobs=2, progress=False, executor=executor, stats=stats)
        if executor == "ray":
            assert stats["tasks"] == len(list(shard_files(run_dir))) and stats["cluster_cpus"] == 2
    local_images, local_summary = load_run(outcomes["local"].run_dir)
    ray_images, ray_summary = load_run(outcomes["ray"].run_dir)
    assert len(local_images) == len(ray_images) and (local_images.status == "ok").all()
    _same_rows(local_images, ray_images)
    _same_summary(local_summary, ray_summary)
    return outcomes, local_summary


@pytest.fixture(scope="module")
def random_alexnet(tmp_path_factory):
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("alexnet") / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


def test_ray_gives_the_local_rows_and_summary_on_the_default_benchmark(local_ray, tmp_path, random_alexnet):
    """Every default codec at its default sweep, with MS-SSIM, LPIPS and the caption metrics (the Inception
    metrics have their own test below: their FIDs, 3 s each on this CPU, would dominate here)."""
    specs = _default_specs()
    make = lambda: RunConfig(dataset="sample", limit=2, codecs=specs, inception={"enabled": False},  # noqa: E731
                             image_metrics={"ms_ssim": True, "lpips": str(random_alexnet)})
    _, summary = _local_and_ray(tmp_path, make)
    assert {"cmc", "jpeg", "jpeg2000", "webp", "avif"} <= set(summary.codec) and len(summary) > 50
    for column in ("psnr", "ms_ssim", "lpips", "caption_bleu4", "caption_cosine"):
        assert summary[column].notna().any(), column


def test_ray_gives_the_local_set_level_metrics(local_ray, tmp_path, monkeypatch, random_inception_weights):
    from tiny_models import tiny_dinov2

    from benchmark.run import ray_executor

    # Inception and DINOv2 (the feature stage's space) each in a Ray actor, as on a GPU cluster (here on the
    # CPU): the same features.
    monkeypatch.setattr(ray_executor, "REMOTE_EXTRACTOR", "always")
    actors = []
    monkeypatch.setattr(ray_executor, "RemoteExtractor",
                        lambda *a, cls=ray_executor.RemoteExtractor: actors.append(cls(*a)) or actors[-1])
    dinov2 = tiny_dinov2(tmp_path / "dinov2")
    make = lambda: RunConfig(  # noqa: E731
        dataset="sample", limit=8, caption_embedder="none", image_metrics={"ms_ssim": False, "lpips": "none"},
        codecs=[parse_codec_spec("jpeg quality=10,60"), parse_codec_spec("cmc max_words=4,16")],
        inception={"enabled": True, "weights": str(random_inception_weights), "device": "cpu", "batch_size": 16,
                   "isc_splits": 4, "kid_subsets": 20, "kid_subset_size": 4, "seed": 2020, "patch_fid": False},
        dinov2={"model": str(dinov2), "k": 3})
    outcomes, summary = _local_and_ray(tmp_path, make)
    for column in ("fid", "kid", "inception_score", "ipd", "fd_dinov2", "dinov2_precision"):
        assert summary[column].notna().all(), column
    # Each image went through each network once per setting, on both executors; on Ray in its actors.
    assert outcomes["ray"].passes == outcomes["local"].passes == {"reference": 8, "reconstruction": 32, "patches": 0}
    assert [a.passes for a in actors] == [8 + 32, 8 + 32]
    for executor in ("local", "ray"):
        counts = json.loads((tmp_path / executor / "run" / "dinov2_passes.json").read_text())
        assert (counts["reference"], counts["reconstruction"]) == (8, 32)


def _slow_config(gate=None, n=12, sleep=0.25):
    first = f"codecs_for_tests:Gated level=1,2 gate={gate} after=4" if gate else \
        f"codecs_for_tests:Raw level=1,2 sleep={sleep}"
    return RunConfig(dataset=f"sample:{n}", split="all", inception={"enabled": False}, caption_embedder="none",
                     image_metrics={"ms_ssim": False, "lpips": "none"}, chunk_size=1,
                     codecs=[parse_codec_spec(first), parse_codec_spec("jpeg quality=20,60")])


def _ray_task_pids() -> list[int]:
    pids = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any("ray::_run_task" in part for part in (p.info["cmdline"] or [])):
                pids.append(p.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


def test_killing_a_ray_worker_loses_and_duplicates_nothing(local_ray, tmp_path):
    gate = tmp_path / "gate"  # later images wait for it, so the run cannot end before a worker is killed
    gate.touch()
    reference = create_run(_slow_config(gate), tmp_path / "local", "ref", progress=False)
    execute(reference, jobs=2, progress=False)
    gate.unlink()
    run_dir = create_run(_slow_config(gate), tmp_path / "ray", "killed", progress=False)
    errors = []
    thread = threading.Thread(target=lambda: _catch(errors, execute, run_dir, jobs=2, progress=False, executor="ray"))
    thread.start()
    killed = []
    while thread.is_alive() and not killed:  # observable state, no clock
        if len(list(shard_files(run_dir))) >= 3:
            pids = _ray_task_pids()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
        time.sleep(0.05)
    gate.touch()
    thread.join()
    assert not errors, errors
    assert killed, "no Ray worker was found running a task"
    images, summary = load_run(run_dir)
    ref_images, ref_summary = load_run(reference)
    assert (images.status == "ok").all()  # the killed worker's task was retried, not failed
    assert not images.duplicated(["codec", "setting_index", "image_id"]).any()
    _same_rows(ref_images, images)
    _same_summary(ref_summary, summary)


def _catch(errors, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def test_resume_with_ray_after_the_driver_died(local_ray, tmp_path):
    reference = create_run(_slow_config(sleep=0), tmp_path / "local", "ref", progress=False)
    execute(reference, jobs=1, progress=False)
    run_dir = create_run(_slow_config(sleep=0), tmp_path / "crash", "crash", progress=False)
    committed = []

    def die_after_five(result):
        committed.append(result.task)
        if len(committed) == 5:
            raise KeyboardInterrupt("the driver dies")

    with pytest.raises(KeyboardInterrupt):
        execute(run_dir, jobs=1, progress=False, on_result=die_after_five)
    assert len(list(shard_files(run_dir))) == 4  # the fifth shard was never written
    execute(run_dir, jobs=2, progress=False, executor="ray")
    images, summary = load_run(run_dir)
    ref_images, ref_summary = load_run(reference)
    _same_rows(ref_images, images)
    _same_summary(ref_summary, summary)


def test_ray_is_imported_only_when_chosen(tmp_path):
    code = ("import sys; from benchmark import cli; from benchmark.run import runner; from benchmark.run.runner import RunConfig, create_run, execute;"
            "from benchmark.codecs.codec_spec import parse_codec_spec;"
            f"c = RunConfig(dataset='sample:2', split='all', codecs=[parse_codec_spec('jpeg quality=50')],"
            " inception={'enabled': False}, caption_embedder='none', image_metrics={'ms_ssim': False, 'lpips': 'none'});"
            f"execute(create_run(c, {str(tmp_path)!r}, 'x', progress=False), jobs=2, progress=False);"
            "assert 'ray' not in sys.modules, 'ray imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=pathlib.Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr


def test_ray_kills_a_task_hung_in_native_code(local_ray, tmp_path, natural_images):
    config = RunConfig(dataset=f"folder:{natural_images}", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"}, timeout=1.0,
                       codecs=[parse_codec_spec("codecs_for_tests:NativeHang"), parse_codec_spec("jpeg quality=50")])
    run_dir = create_run(config, tmp_path / "runs", "hang", progress=False)
    outcome = execute(run_dir, jobs=2, progress=False, executor="ray")
    images, _ = load_run(run_dir)
    failed = images[images.status != "ok"]
    assert set(failed.image_id) == {"img1.png"} and len(failed) == 2
    assert failed.error.str.startswith("decode timed out after 1 s (stuck in native code").all()
    assert outcome.n_failed == 2


def test_on_ray_no_more_than_the_bound_of_images_is_pending_and_rows_are_unchanged(local_ray, tmp_path, monkeypatch,
                                                                                  random_inception_weights):
    """The driver admits a Ray task only while the images waiting for the (slowed-down) Inception stage plus those
    of the tasks out stay within --max-pending: counted here from Ray's submissions and the written results."""
    from benchmark.run import ray_executor
    from benchmark.run.backlog import carried_at_most
    from metrics.inception import InceptionExtractor

    seen = {"pending": 0, "most": 0}
    real_remote, call = ray.remote, InceptionExtractor.__call__

    def counting_remote(*args, **kwargs):
        def wrap(fn):
            remote_fn = real_remote(*args, **kwargs)(fn)

            class Counted:
                def options(self, **options):
                    submit = remote_fn.options(**options).remote

                    class Submit:
                        @staticmethod
                        def remote(info, dataset, run_dir, task, *rest):
                            seen["pending"] += carried_at_most(task, 2)
                            seen["most"] = max(seen["most"], seen["pending"])
                            return submit(info, dataset, run_dir, task, *rest)
                    return Submit()
            return Counted()
        return wrap

    def slow_call(extractor, images):
        time.sleep(0.2)  # Ray's workers finish tasks much faster than this stage takes them
        return call(extractor, images)

    def written(result):
        seen["pending"] -= carried_at_most(result.task, 2)

    monkeypatch.setattr(ray_executor, "REMOTE_EXTRACTOR", "never")  # Inception in the driver, slowed down
    make = lambda: RunConfig(  # noqa: E731
        dataset="sample:24", codecs=[parse_codec_spec("jpeg quality=10,90")], chunk_size=1, caption_embedder="none",
        image_metrics={"ms_ssim": False, "lpips": "none"},
        inception={"enabled": True, "weights": str(random_inception_weights), "device": "cpu", "batch_size": 8,
                   "isc_splits": 4, "kid_subsets": 10, "kid_subset_size": 4, "seed": 2020, "patch_fid": False})
    bound = 9  # three tasks of one image: its original and two reconstructions each
    with monkeypatch.context() as m:
        m.setattr(ray, "remote", counting_remote)
        m.setattr(InceptionExtractor, "__call__", slow_call)
        run_dir = create_run(make(), tmp_path / "bounded", "run", progress=False)
        stats = {}
        execute(run_dir, jobs=2, progress=False, executor="ray", stats=stats, max_pending=bound, on_result=written)
    assert stats["max_pending"] == bound and stats["peak_pending"] <= bound
    assert 6 < seen["most"] <= bound and seen["pending"] == 0
    free = create_run(make(), tmp_path / "free", "run", progress=False)
    execute(free, jobs=2, progress=False, executor="local")
    (rows, summary), (free_rows, free_summary) = load_run(run_dir), load_run(free)
    key = ["codec", "setting_index", "image_index"]
    _same_rows(rows.sort_values(key), free_rows.sort_values(key))
    _same_summary(summary, free_summary)
