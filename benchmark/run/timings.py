"""Where a run's time goes: seconds per stage, kept apart from the rows and written next to them.

Each process keeps a `Timings` (a stage name -> seconds and count); workers send theirs back with each task
and the orchestrator adds them up, so worker stages are process-seconds summed over the pool while its own
stages are wall-clock. `execute` appends one record per call to the run's `timings.json`, which
`scripts/profile_run.py` prints. Timings never enter the rows: a resumed run's rows stay identical.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import time
from collections import defaultdict

from benchmark.run.integrity import atomic_write_bytes

TIMINGS_FILE = "timings.json"
WORKER_PREFIX = "worker: "  # stages measured in worker processes (summed over them)


class Timings:
    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, stage: str, seconds: float, count: int = 1) -> None:
        self.seconds[stage] += seconds
        self.counts[stage] += count

    @contextlib.contextmanager
    def stage(self, name: str, count: int = 1):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start, count)

    def merge(self, other: "Timings | dict | None", prefix: str = "") -> None:
        if other is None:
            return
        seconds, counts = (other.seconds, other.counts) if isinstance(other, Timings) else other
        for name, value in seconds.items():
            self.add(prefix + name, value, counts.get(name, 1))

    def state(self) -> tuple[dict, dict]:
        """Plain dicts, to send from a worker process."""
        return dict(self.seconds), dict(self.counts)

    def as_record(self, total: float) -> dict:
        return {"total_s": round(total, 4),
                "stages": {k: {"seconds": round(v, 4), "count": self.counts[k]} for k, v in self.seconds.items()}}


def append(run_dir: pathlib.Path, record: dict) -> None:
    path = pathlib.Path(run_dir) / TIMINGS_FILE
    records = read(run_dir)
    records.append(record)
    atomic_write_bytes(path, json.dumps(records, indent=1).encode())


def add_to_last(run_dir: pathlib.Path, stage: str, seconds: float) -> None:
    """Add a stage measured after `execute` (the CLI's plots) to the latest record."""
    records = read(run_dir)
    if not records:
        return
    records[-1]["stages"][stage] = {"seconds": round(seconds, 4), "count": 1}
    records[-1]["total_s"] = round(records[-1]["total_s"] + seconds, 4)
    atomic_write_bytes(pathlib.Path(run_dir) / TIMINGS_FILE, json.dumps(records, indent=1).encode())


def read(run_dir: pathlib.Path) -> list[dict]:
    path = pathlib.Path(run_dir) / TIMINGS_FILE
    return json.loads(path.read_text()) if path.exists() else []
