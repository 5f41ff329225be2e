"""The local executor: a process pool on this machine, with a bounded number of tasks in flight.

Each worker process holds one `Worker` (codecs set up once); results are committed by the caller as
they arrive. A crashed worker breaks the pool: it is rebuilt and the tasks in flight are retried one at
a time; a task that kills its worker when alone becomes failed rows instead of stopping the run.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import pathlib
import signal
import sys
from typing import Callable

from benchmark.datasets import Dataset
from benchmark.worker import Task, TaskResult, Worker

_WORKER: Worker | None = None


def _init_worker(info: dict, dataset: Dataset, run_dir: str) -> None:
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    _WORKER = Worker(info, dataset, run_dir)


def _run_in_worker(task: Task, keep_pixels: bool) -> TaskResult:
    return _WORKER.run(task, keep_pixels)


def start_method() -> str:
    """fork is cheapest, but unsafe once torch (threads, CUDA) is live in this process."""
    if not sys.platform.startswith("linux"):
        return "spawn"
    return "forkserver" if "torch" in sys.modules else "fork"


def run_pool(tasks: list[Task], jobs: int, info: dict, dataset: Dataset, run_dir: pathlib.Path, keep_pixels: bool,
             commit: Callable[[TaskResult], None], crashed: Callable[[Task], TaskResult], max_attempts: int = 2) -> None:
    ctx = multiprocessing.get_context(start_method())
    queue = list(reversed(tasks))
    attempts: dict[Task, int] = {}
    while queue:
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                    initargs=(info, dataset, str(run_dir))) as pool:
            in_flight: dict[cf.Future, Task] = {}
            lost: list[Task] = []
            while (queue or in_flight) and not lost:
                while queue and len(in_flight) < 2 * jobs:
                    if attempts.get(queue[-1]) and in_flight:
                        break  # a task that was in flight when a worker died is retried alone
                    task = queue.pop()
                    in_flight[pool.submit(_run_in_worker, task, keep_pixels)] = task
                    if attempts.get(task):
                        break
                done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    task = in_flight.pop(future)
                    try:
                        result = future.result()
                    except cf.process.BrokenProcessPool:
                        lost.append(task)
                        continue
                    commit(result)
            if lost:
                lost += in_flight.values()
                for task in lost:
                    attempts[task] = attempts.get(task, 0) + 1
                    if attempts[task] >= max_attempts:
                        commit(crashed(task))
                    else:
                        queue.append(task)
