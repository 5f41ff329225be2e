#!/usr/bin/env python3
"""Ray executor: speedup with 2 workers over the local executor with one process, on a codec-bound sweep,
and the scheduling overhead per task.

The sweep (JPEG 2000 and WebP at effort 6 over the dataset, no network metrics) is the same in both runs;
rows are checked equal. The Ray time is measured with Ray already started (its start-up is printed
apart); the overhead per task is measured on empty tasks (a codec that does nothing, on 8x8 images).

    python scripts/bench_ray.py --dataset ../shared/datasets/kodak --workers 2
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

import numpy as np
import pandas as pd
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "scripts")]

from bench_common import DEFAULT_DATASET, image_folder  # noqa: E402
from benchmark.codecs.codec_spec import parse_codec_spec  # noqa: E402
from benchmark.run.results import load_run  # noqa: E402
from benchmark.run.runner import RunConfig, create_run, execute  # noqa: E402

SWEEP = ["jpeg2000 ratio=12,24,48,96,192", "webp quality=10,30,50,70,90 method=6"]


def config(dataset: str, codecs: list[str], chunk_size: int | None = None) -> RunConfig:
    return RunConfig(dataset=dataset, codecs=[parse_codec_spec(c) for c in codecs], inception={"enabled": False},
                     caption_embedder="none", image_metrics={"ms_ssim": False, "lpips": "none"},
                     chunk_size=chunk_size)


def timed(cfg: RunConfig, out: str, **kwargs) -> tuple[float, pathlib.Path]:
    run_dir = create_run(cfg, out, progress=False)
    t0 = time.perf_counter()
    execute(run_dir, progress=False, **kwargs)
    return time.perf_counter() - t0, run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET), help="a folder of PNG images (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--empty-tasks", type=int, default=200)
    args = parser.parse_args()
    args.dataset = str(image_folder(args.dataset)[0])
    import ray

    with tempfile.TemporaryDirectory() as out:
        t_local, local_dir = timed(config(args.dataset, SWEEP, chunk_size=1), out, jobs=1)
        t0 = time.perf_counter()
        env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 runtime_env={"env_vars": env})
        ray.get([ray.remote(lambda: os.getpid()).remote() for _ in range(args.workers * 2)])  # workers up
        t_start = time.perf_counter() - t0
        t_ray, ray_dir = timed(config(args.dataset, SWEEP, chunk_size=1), out, executor="ray", jobs=args.workers)
        a, _ = load_run(local_dir)
        b, _ = load_run(ray_dir)
        cols = [c for c in a.columns if c not in ("encode_s", "decode_s", "run_id", "created")]
        pd.testing.assert_frame_equal(a[cols], b[cols])
        n_tasks = a.groupby(["codec", "image_id"]).ngroups

        # Overhead per task: empty tasks (8x8 images, a codec that does nothing), one task per image.
        tiny = pathlib.Path(out) / "tiny"
        tiny.mkdir()
        for i in range(args.empty_tasks):
            Image.fromarray(np.full((8, 8, 3), i % 256, np.uint8)).save(tiny / f"{i:04d}.png")
        empty = config(f"folder:{tiny}", ["codecs_for_tests:Raw level=1"], chunk_size=1)
        t_empty_ray, _ = timed(empty, out, executor="ray", jobs=args.workers)
        t_empty_local, _ = timed(config(f"folder:{tiny}", ["codecs_for_tests:Raw level=1"], chunk_size=1), out, jobs=1)
        ray.shutdown()

    print(f"codec-bound sweep: {len(a)} rows, {n_tasks} tasks ({', '.join(SWEEP)}) on {args.dataset}")
    print(f"local executor, 1 process : {t_local:7.2f} s")
    print(f"ray executor, {args.workers} workers  : {t_ray:7.2f} s   speedup {t_local / t_ray:.2f}x "
          f"(Ray start-up, not included: {t_start:.1f} s; with it: {t_local / (t_ray + t_start):.2f}x)")
    print("rows equal: yes")
    print(f"empty tasks ({args.empty_tasks}): ray {1000 * t_empty_ray / args.empty_tasks:.1f} ms/task wall "
          f"({args.workers} workers), local 1 process {1000 * t_empty_local / args.empty_tasks:.1f} ms/task; "
          f"Ray scheduling overhead about {1000 * (t_empty_ray * args.workers - t_empty_local) / args.empty_tasks:.1f} "
          "worker-ms per task beyond the local executor's own")


if __name__ == "__main__":
    main()
