"""Finished tasks waiting for the network stages, within a bound.

A task's result reaches this process with its pixels (the originals a stage has not seen, every
reconstruction). It waits here until a full batch of either kind has gathered; then every network stage
forwards the waiting images together, and each task's shard is written. So a network's batch is `batch_size`
images whatever the chunk size (which grows with the dataset): the main process's peak memory is set by the
batch, not by how many images the run has.

Before sending out a task, an executor asks `admit`: the images waiting here plus those of the tasks sent out
and not yet back (counted at their most: each image's original and every reconstruction) stay within the
bound (`--max-pending`), so producers wait for the networks instead of queueing pixels. A task larger than the
bound still runs, alone. Results that wait here are finished work not yet on disk: a killed run redoes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from metrics import defaults
from benchmark.data.preprocess import output_side
from benchmark.run.worker import Task, TaskResult

ASSUMED_SIDE = 1024  # pixels per side of an image whose size the preprocessing does not fix


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def default_bound(preprocess: str, batch_size: int) -> int:
    """Images that fit in the memory share for waiting pixels (`defaults.PENDING_MEMORY_SHARE`), at the size
    the preprocessing gives (else `ASSUMED_SIDE` per side), and at least one batch."""
    side = output_side(preprocess) or ASSUMED_SIDE
    return max(batch_size, int(defaults.PENDING_MEMORY_SHARE * physical_memory()) // (3 * side * side))


@dataclass
class Backlog:
    """`stages` have `on_results(results)`; `write` puts one result's rows on disk; `images_of(task)` is the
    most images a task's result can carry."""

    stages: list
    write: Callable[[TaskResult], None]
    images_of: Callable[[Task], int]
    batch_size: int
    bound: int
    waiting: list[TaskResult] = field(default_factory=list)
    sent: dict[Task, int] = field(default_factory=dict)  # tasks out, and the images each may bring back
    peak: int = 0  # most images ever waiting or sent out at once

    @property
    def pending(self) -> int:
        return sum(map(carried, self.waiting)) + sum(self.sent.values())

    def admit(self, task: Task) -> bool:
        """Whether `task` may be sent out now (then it counts as pending until it comes back)."""
        images = self.images_of(task)
        if self.pending + images > self.bound and self.waiting:
            self.flush()
        if self.pending + images > self.bound and self.sent:
            return False
        self.sent[task] = images
        self.peak = max(self.peak, self.pending)
        return True

    def abandon(self, task: Task) -> None:
        """A task sent out that will not come back as sent (its worker died; it is retried or failed)."""
        self.sent.pop(task, None)

    def commit(self, result: TaskResult) -> None:
        """A task's result is back: it waits for a full batch (a result without pixels goes straight through
        when nothing waits)."""
        self.sent.pop(result.task, None)
        self.waiting.append(result)
        self.peak = max(self.peak, self.pending)
        originals = sum(len(r.originals) for r in self.waiting)
        reconstructions = sum(len(r.reconstructions) for r in self.waiting)
        if max(originals, reconstructions) >= self.batch_size or not (originals or reconstructions):
            self.flush()

    def flush(self) -> None:
        """Every waiting result through every stage, together; then their shards, in the order they came."""
        results, self.waiting = self.waiting, []
        if any(carried(r) for r in results):
            for stage in self.stages:
                stage.on_results(results)
        for result in results:
            self.write(result)


class Unbounded:
    """The executors' stand-in where no backlog is given: every task goes out at once."""

    def admit(self, task: Task) -> bool:
        return True

    def abandon(self, task: Task) -> None:
        pass


def carried(result: TaskResult) -> int:
    return len(result.originals) + len(result.reconstructions)


def carried_at_most(task: Task, settings: int, samples: int = 1) -> int:
    """The most images a task's result carries: each original, and each reconstruction of each setting it
    runs (and each further sample of a stochastic decoder)."""
    return (task.stop - task.start) * (1 + (len(task.settings) or settings) * samples)
