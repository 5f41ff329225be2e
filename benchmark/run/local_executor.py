"""The local executor: a process pool on this machine, with a bounded number of tasks in flight.

Each worker process holds one `Worker` (codecs set up once); results are committed by the caller as
they arrive. A crashed worker breaks the pool: it is rebuilt and the tasks in flight are retried one at
a time; a task that kills its worker when alone becomes failed rows instead of stopping the run.

Deadlines are enforced here too: a worker says (in a heartbeat file) which image and setting it is
encoding or decoding; one stuck past --timeout plus a grace period (in code that never returns to the
interpreter, where the worker's own alarm cannot fire) is killed, and its task is retried with that one
(image, setting) failed as timed out.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import multiprocessing
import multiprocessing.forkserver
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import time
from typing import Callable

from benchmark.data.datasets import Dataset
from benchmark.run.backlog import Unbounded
from benchmark.run.record import RunRecord
from benchmark.run.worker import Task, TaskResult, Worker

_WORKER: Worker | None = None


# One math thread per worker, set before torch or numpy's BLAS start their pools (each reads its count once,
# when it loads): the pool already uses every core, and a pool created with more threads stays several times
# slower (MS-SSIM: 4x on 2 cores). A user's own setting of these wins.
MATH_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Imported once in the forkserver, under the one-thread setting, so that each worker forked from it starts
# with them loaded: a short pooled run takes a quarter of the time (scripts/bench_worker_start.py). A forkserver
# is used only when torch is live in this process, where the workers' network metrics (LPIPS by default) need it.
FORKSERVER_PRELOAD = ["__main__", "torch", "benchmark.run.local_executor"]

GRACE_S = 5.0  # beyond --timeout, before a worker stuck in one encode or decode is killed
HEARTBEATS = ".heartbeats"


def _init_worker(record: RunRecord, dataset: Dataset, run_dir: str, scratch: str) -> None:
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    # A pool that lost a worker ends the others with SIGTERM: a plain end, not the command line's handler (which
    # a forked worker inherits, and which would print a traceback in each of them)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ.update(_one_math_thread(os.environ))
    # A worker ends in os._exit, which removes no library's temporary folder (importing timm imports wandb, which
    # makes two): they go into one folder that run_pool removes once its workers have stopped.
    os.environ["TMPDIR"] = tempfile.tempdir = scratch
    _WORKER = Worker(record, dataset, run_dir)
    _WORKER.heartbeat = pathlib.Path(run_dir) / HEARTBEATS / str(os.getpid())


def _run_in_worker(task: Task, keep_pixels: bool, skip: dict) -> TaskResult:
    return _WORKER.run(task, keep_pixels, skip)


def stuck_workers(run_dir: pathlib.Path, timeout: float) -> list[dict]:
    """Heartbeats of workers busy on one (image, setting) for longer than its deadline."""
    out = []
    if not timeout:
        return out
    now = time.time()
    for path in (run_dir / HEARTBEATS).glob("[0-9]*"):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if state.get("busy") and now - state["started"] > timeout + GRACE_S:
            out.append(state)
    return out


def _one_math_thread(environ) -> dict[str, str]:
    return {var: "1" for var in MATH_THREAD_VARIABLES if var not in environ}


def start_method() -> str:
    """fork is cheapest, but unsafe once torch (threads, CUDA) is live in this process."""
    if not sys.platform.startswith("linux"):
        return "spawn"
    return "forkserver" if "torch" in sys.modules else "fork"


def pool_context() -> multiprocessing.context.BaseContext:
    """The context worker pools start from; a forkserver is started (once per process) with the workers'
    environment and modules already loaded."""
    ctx = multiprocessing.get_context(start_method())
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(FORKSERVER_PRELOAD)
        with _environ(_one_math_thread(os.environ)):  # the forkserver inherits this process's environment
            multiprocessing.forkserver.ensure_running()
    return ctx


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    os.environ.update(values)
    try:
        yield
    finally:
        for var in values:
            os.environ.pop(var, None)


def run_pool(tasks: list[Task], jobs: int, record: RunRecord, dataset: Dataset, run_dir: pathlib.Path,
             keep_pixels: bool, commit: Callable[[TaskResult], None], crashed: Callable[[Task], TaskResult],
             max_attempts: int = 2,
             on_started: Callable[[], None] | None = None, backlog=None) -> None:
    """`on_started` is called once the first workers are running (forked or spawned), e.g. to load a network
    in this process while they work. A task is sent out only when `backlog` admits it (a bound on the pixels
    waiting for the network stages); results go to `commit`."""
    ctx = pool_context()
    backlog = backlog or Unbounded()
    queue = list(reversed(tasks))
    attempts: dict[Task, int] = {}
    skips: dict[Task, dict] = {}  # rows that hung an attempt: failed as timed out on the retry
    timeout = float(record.config.get("timeout") or 0)
    with tempfile.TemporaryDirectory(prefix="cmcbench-workers-", ignore_cleanup_errors=True) as scratch:
        while queue:
            with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                        initargs=(record, dataset, str(run_dir), scratch)) as pool:
                in_flight: dict[cf.Future, Task] = {}
                lost: list[Task] = []
                try:
                    _drain(pool, queue, in_flight, lost, attempts, skips, jobs, keep_pixels, run_dir, timeout, commit,
                           on_started, backlog)
                    on_started = None
                except BaseException:  # Ctrl-C or a failing commit: stop the workers now, not after their tasks
                    _stop(pool)
                    raise
                if lost:
                    lost += in_flight.values()
                    for task in lost:
                        backlog.abandon(task)
                        attempts[task] = attempts.get(task, 0) + 1
                        if attempts[task] >= max_attempts:
                            commit(crashed(task))
                        else:
                            queue.append(task)
    shutil.rmtree(run_dir / HEARTBEATS, ignore_errors=True)


def _stop(pool: cf.ProcessPoolExecutor) -> None:
    for process in list(getattr(pool, "_processes", {}).values()):
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _drain(pool, queue, in_flight, lost, attempts, skips, jobs, keep_pixels, run_dir, timeout, commit,
           on_started, backlog) -> None:
    """Keep up to 2 x jobs tasks in flight (as many as the backlog admits) and commit results as they come,
    until done or a worker dies."""
    while (queue or in_flight) and not lost:
        while queue and len(in_flight) < 2 * jobs:
            if attempts.get(queue[-1]) and in_flight:
                break  # a task that was in flight when a worker died is retried alone
            if not backlog.admit(queue[-1]):
                break  # enough pixels wait for the networks: the workers wait too
            task = queue.pop()
            try:
                in_flight[pool.submit(_run_in_worker, task, keep_pixels, skips.get(task, {}))] = task
            except cf.process.BrokenProcessPool:  # a worker died since the last wait: this task was never sent
                queue.append(task)
                backlog.abandon(task)
                _settle(cf.wait(in_flight)[0], in_flight, lost, commit)  # each task in flight, to its end
                return
            if attempts.get(task):
                break
        if on_started is not None:  # the pool's first submissions started its processes
            on_started()
            on_started = None
        done, _ = cf.wait(in_flight, timeout=1.0, return_when=cf.FIRST_COMPLETED)
        for state in stuck_workers(run_dir, timeout):
            hung = next((t for t in in_flight.values() if (t.chunk, t.codec) == (state["chunk"], state["codec"])),
                        None)
            if hung is not None:
                skips.setdefault(hung, {})[(state["index"], state["setting_index"])] = (
                    f"{state['stage']} timed out after {timeout:g} s (stuck in native code; the worker "
                    f"was killed {GRACE_S:g} s later)")
                attempts[hung] = attempts.get(hung, 0) - 1  # a known hang is not a crash attempt
            _kill(state["pid"])
            (run_dir / HEARTBEATS / str(state["pid"])).unlink(missing_ok=True)
        _settle(done, in_flight, lost, commit)


def _settle(done, in_flight: dict, lost: list, commit) -> None:
    """The tasks of finished futures: a result that came back is committed; a task whose worker died is lost
    (run_pool retries it in a new pool)."""
    for future in done:
        task = in_flight.pop(future)
        try:
            result = future.result()
        except cf.process.BrokenProcessPool:
            lost.append(task)
            continue
        commit(result)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
