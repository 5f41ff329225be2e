"""The Ray executor: the same tasks as the local process pool, run as Ray tasks on a cluster.

Only the execution changes. Each Ray task is one (chunk of images, codec) task run by the same `Worker`
code as locally (a worker process keeps its `Worker`, with its codecs set up, across the tasks it runs);
its rows and, when a hook needs them, its pixels come back to the driver, which commits them through
the same atomic shard writer as the local executor. So rows are the same, set-level metrics are built
afterwards from the stored features exactly as locally, and a resumed run (after a driver crash) redoes
just the missing shards. A task whose worker process dies is retried by Ray (`max_retries`); one that
keeps killing its worker becomes failed rows, as locally. Codecs that declare `wants_gpu` (model-based
ones) ask Ray for a GPU share when the cluster has GPUs.

Ray is an optional dependency (`pip install -e '.[ray]'`), imported only when `--executor ray` is used.
The Inception network runs in a Ray actor that asks for a GPU when the cluster has GPUs (then the
driver needs none); on a CPU-only cluster it stays in the driver, where it would otherwise hold a CPU
that codec tasks need. On a multi-node cluster every node needs cmcbench installed and the dataset
(and the Inception and LPIPS weight files) at the same paths.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Callable

from benchmark.run.record import RunRecord

MAX_RETRIES = 2  # a task is tried at most 1 + MAX_RETRIES times when its worker process dies

_WORKERS: dict = {}  # per Ray worker process: (run directory, config hash, created) -> Worker
REMOTE_EXTRACTOR = "auto"  # auto: in an actor when the cluster has GPUs; always; never
# GPU shares: the Inception actor holds its share for the whole run, so a one-GPU cluster still runs
# model-based codec tasks beside it.
EXTRACTOR_GPUS = 0.5
MODEL_TASK_GPUS = 0.5


def import_ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError("--executor ray needs Ray: pip install -e '.[ray]' (or pip install 'ray>=2.9')") from None
    return ray


def _run_task(record: RunRecord, dataset, run_dir: str, task, keep_pixels: bool, skip: dict | None = None):
    from benchmark.run.local_executor import HEARTBEATS
    from benchmark.run.worker import Worker

    key = (str(pathlib.Path(run_dir).resolve()), record.config_hash, record.created)
    worker = _WORKERS.get(key)
    if worker is None:  # a worker process serves one run at a time; a new run gets a fresh Worker
        _WORKERS.clear()
        worker = _WORKERS[key] = Worker(record, dataset, run_dir)
        worker.heartbeat = pathlib.Path(run_dir) / HEARTBEATS / str(os.getpid())
    return worker.run(task, keep_pixels, skip)


@contextmanager
def session(address: str | None, workers: int | None):
    """Ray for the duration of a run: joined or started, and shut down only if started here. The workers of a Ray
    started here keep their temporary files in one folder, removed after the shutdown: Ray kills its workers, so no
    library's temporary folder is cleaned up at their exit (importing timm imports wandb, which makes two)."""
    with tempfile.TemporaryDirectory(prefix="cmcbench-workers-", ignore_cleanup_errors=True) as scratch:
        ray, started = start(address, workers, scratch)
        try:
            yield ray
        finally:
            if started:
                ray.shutdown()


class _ExtractorActor:
    def __init__(self, build: Callable, threads: int):
        import torch

        torch.set_num_threads(threads)  # the driver's count: CPU float sums then match the local executor's
        self.extractor = build()

    def extract(self, images):
        return self.extractor(images)

    def extract_texts(self, texts):
        return self.extractor.texts(texts)


class RemoteExtractor:
    """The driver's stand-in for a feature stage's extractor (Inception's, or any feature space's): the network
    runs in a Ray actor, built there by `build`; it counts the images it sends."""

    def __init__(self, ray, build: Callable, num_gpus: float):
        import torch

        # num_cpus=0: it works when the driver calls it, and must not hold a CPU that tasks need (with a
        # resource given, Ray would otherwise keep one CPU per actor for its lifetime: two networks' actors
        # on a 2-CPU machine left no CPU for any task)
        actor = ray.remote(_ExtractorActor).options(num_cpus=0, num_gpus=num_gpus, max_restarts=2,
                                                    max_task_retries=2)
        self.ray = ray
        self.actor = actor.remote(build, torch.get_num_threads())
        self.passes = 0

    def __call__(self, images):
        out = self.ray.get(self.actor.extract.remote(images))
        self.passes += len(images)
        return out

    def texts(self, texts):
        """A text feature space's embeddings of transmitted texts (`metrics.spec.FeatureSpace.input`)."""
        out = self.ray.get(self.actor.extract_texts.remote(texts))
        self.passes += len(texts)
        return out


def feature_extractor(ray, build: Callable):
    """A RemoteExtractor on a GPU when the cluster has one (or when forced), else None (the driver's own)."""
    gpus = ray.cluster_resources().get("GPU", 0)
    if REMOTE_EXTRACTOR == "never" or (REMOTE_EXTRACTOR == "auto" and not gpus):
        return None
    return RemoteExtractor(ray, build, EXTRACTOR_GPUS if gpus else 0)


def start(address: str | None, workers: int | None, scratch: str | None = None) -> tuple[object, bool]:
    """(ray module, whether this call started Ray): joins `address`, or a running Ray, or starts a local one (whose
    workers' temporary folder is `scratch`, if given)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    if address:
        ray.init(address=address, **kwargs)
    else:
        # A local instance: its workers see the same modules as this process (codecs given as module:Class).
        env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p), **({"TMPDIR": scratch} if scratch else {})}
        ray.init(num_cpus=workers or os.cpu_count() or 1, runtime_env={"env_vars": env}, **kwargs)
    return ray, True


def run_ray(ray, tasks: list, record: RunRecord, dataset, run_dir: pathlib.Path, keep_pixels: bool,
            commit: Callable, crashed: Callable, workers: int | None = None, stats: dict | None = None,
            backlog=None) -> None:
    """Run `tasks` on Ray with at most 2 x (cluster CPUs) in flight, and no more than `backlog` admits (a bound
    on the pixels waiting for the network stages, which also bounds what the object store holds for the
    driver), committing results as they arrive."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    gpus = ray.cluster_resources().get("GPU", 0)
    # a GPU share for codecs whose networks want one (older runs: those that had to run in the main process)
    wants_gpu = {c.label: c.on_gpu for c in record.codecs}
    remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(_run_task)
    record_ref, dataset_ref = ray.put(record), ray.put(dataset)
    from benchmark.run.backlog import Unbounded
    from benchmark.run.local_executor import GRACE_S, HEARTBEATS, stuck_workers

    backlog = backlog or Unbounded()

    limit = 2 * max(1, workers or cpus)
    queue = list(reversed(tasks))
    in_flight: dict = {}
    skips: dict = {}  # rows that hung an attempt (past --timeout, in native code): failed on the retry
    timeout = float(record.config.get("timeout") or 0)
    t0 = time.perf_counter()
    while queue or in_flight:
        while queue and len(in_flight) < limit:
            if not backlog.admit(queue[-1]):
                break
            task = queue.pop()
            options = {"num_cpus": 1}
            if wants_gpu.get(task.codec, False) and gpus:
                options = {"num_cpus": 1, "num_gpus": MODEL_TASK_GPUS}
            ref = remote.options(**options).remote(record_ref, dataset_ref, str(run_dir), task, keep_pixels,
                                                   skips.get(task, {}))
            in_flight[ref] = task
        done, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
        for state in stuck_workers(run_dir, timeout):  # a worker on this machine stuck in native code: cancel its task
            ref = next((r for r, t in in_flight.items() if (t.chunk, t.codec) == (state["chunk"], state["codec"])),
                       None)
            if ref is not None:
                task = in_flight.pop(ref)
                skips.setdefault(task, {})[(state["index"], state["setting_index"])] = (
                    f"{state['stage']} timed out after {timeout:g} s (stuck in native code; the worker was killed "
                    f"{GRACE_S:g} s later)")
                ray.cancel(ref, force=True)
                backlog.abandon(task)
                queue.append(task)
            (run_dir / HEARTBEATS / str(state["pid"])).unlink(missing_ok=True)
        for ref in done:
            if ref not in in_flight:
                continue
            task = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayTaskError,
                    ray.exceptions.NodeDiedError) as exc:
                if isinstance(exc, ray.exceptions.RayTaskError) and not _is_crash(exc):
                    raise
                result = crashed(task)
            commit(result)
    shutil.rmtree(run_dir / HEARTBEATS, ignore_errors=True)
    if stats is not None:
        stats.update(seconds=time.perf_counter() - t0, tasks=len(tasks), cluster_cpus=cpus, cluster_gpus=gpus)


def _is_crash(exc) -> bool:
    cause = getattr(exc, "cause", None)
    return type(cause).__name__ in ("WorkerCrashedError", "NodeDiedError", "SystemExit")
