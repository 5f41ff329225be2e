"""The backlog between codec work and the network stages: bounded, full batches, rows unchanged."""

import concurrent.futures as cf

import numpy as np
import pandas as pd

from benchmark.codecs.codec_spec import parse_codec_spec
from benchmark.run.backlog import Backlog, carried_at_most
from benchmark.run.results import load_run
from benchmark.run.runner import RunConfig, create_run, execute
from benchmark.run.worker import Task, TaskResult
from metrics.inception import InceptionExtractor

BATCH = 8


def _config(weights) -> RunConfig:
    return RunConfig(dataset="sample:36", codecs=[parse_codec_spec("jpeg quality=10,90")], chunk_size=1,
                     inception={"enabled": True, "weights": str(weights), "sha256": None, "device": "cpu",
                                "batch_size": BATCH, "isc_splits": 4, "kid_subsets": 10, "kid_subset_size": 8,
                                "seed": 2020})


def _observed_run(tmp_path, name, weights, monkeypatch, max_pending=None):
    """A run whose Inception stage is slowed down; returns (stats, most images ever handed to the workers and not
    yet written, counted here from the pool's submissions and the written results, batch sizes, rows, summary)."""
    out = {"pending": 0, "most": 0, "calls": []}
    submit, call = cf.ProcessPoolExecutor.submit, InceptionExtractor.__call__

    def counting_submit(pool, fn, task, *args, **kwargs):
        out["pending"] += carried_at_most(task, 2)
        out["most"] = max(out["most"], out["pending"])
        return submit(pool, fn, task, *args, **kwargs)

    def slow_call(extractor, images):
        out["calls"].append(len(images))
        import time

        time.sleep(0.2)  # the workers finish tasks much faster than this stage takes them
        return call(extractor, images)

    def written(result):
        out["pending"] -= carried_at_most(result.task, 2)

    monkeypatch.setattr(cf.ProcessPoolExecutor, "submit", counting_submit)
    monkeypatch.setattr(InceptionExtractor, "__call__", slow_call)
    run_dir = create_run(_config(weights), tmp_path / name, progress=False)
    stats: dict = {}
    execute(run_dir, jobs=2, progress=False, on_result=written, stats=stats, max_pending=max_pending)
    monkeypatch.undo()
    return stats, out, *load_run(run_dir)


def test_a_slow_network_stage_holds_no_more_than_the_bound_and_rows_are_unchanged(tmp_path, random_inception_weights,
                                                                                 monkeypatch):
    bound = 9  # three tasks of one image: its original and two reconstructions each
    stats, seen, rows, summary = _observed_run(tmp_path, "bounded", random_inception_weights, monkeypatch, bound)
    assert stats["max_pending"] == bound
    assert 6 < seen["most"] <= bound and stats["peak_pending"] <= bound
    free_stats, free, free_rows, free_summary = _observed_run(tmp_path, "free", random_inception_weights, monkeypatch)
    # unbounded: the pool's 2 x jobs tasks out, and the results waiting for a full batch beside them
    assert free["most"] > bound and free_stats["peak_pending"] == free["most"]
    # unbounded, the stage forwards full batches: every reconstructions' call but the last has one batch or more
    recon_calls = free["calls"][1::2]
    assert min(recon_calls[:-1]) >= BATCH and len(recon_calls) < len(rows) / BATCH + 1
    key = ["codec", "setting_index", "image_index"]
    cols = key + ["bpp", "psnr", "ipd"]
    pd.testing.assert_frame_equal(rows.sort_values(key)[cols].reset_index(drop=True),
                                  free_rows.sort_values(key)[cols].reset_index(drop=True))
    assert rows["ipd"].notna().all()
    set_cols = ["codec", "setting_index", "fid", "kid", "inception_score", "inception_passes_reconstruction"]
    pd.testing.assert_frame_equal(summary[set_cols], free_summary[set_cols])


def _result(task: Task) -> TaskResult:
    pixels = np.zeros((4, 4, 3), np.uint8)
    rows = [{"image_index": i, "image_sha256": str(i), "setting_index": 0} for i in range(task.start, task.stop)]
    return TaskResult(task, rows, {i: pixels for i in range(task.start, task.stop)},
                      [(k, pixels) for k in range(len(rows))])


def test_a_task_larger_than_the_bound_runs_alone_and_results_wait_for_a_full_batch():
    forwarded, written = [], []

    class Stage:
        def on_results(self, results):
            forwarded.append(sum(len(r.reconstructions) for r in results))

    backlog = Backlog([Stage()], written.append, lambda t: carried_at_most(t, 1), batch_size=4, bound=3)
    big, small = Task(0, "c", 0, 2), Task(1, "c", 2, 3)  # 4 images at most, 2 at most
    assert backlog.admit(big)  # alone: larger than the bound, still sent out
    assert not backlog.admit(small)  # not beside it
    backlog.commit(_result(big))
    assert written == [] and backlog.pending == 4  # 2 reconstructions wait for a batch of 4
    assert backlog.admit(small)  # 4 + 2 > 3: the waiting results went through the stage first
    assert forwarded == [2] and len(written) == 1 and backlog.pending == 2
    backlog.commit(_result(small))
    backlog.flush()
    assert forwarded == [2, 1] and len(written) == 2 and backlog.pending == 0 and backlog.peak == 4
