#!/usr/bin/env python3
"""Where a default run's time goes, and what its metrics cost at start-up.

`profile`: runs `bench.py run` (default metrics unless told otherwise) in a fresh process and prints the
per-stage profile the run wrote (timings.json): the orchestrator's wall-clock stages (network loads and
forward passes, writing, set metrics, summary, plots) and the workers' stages summed over the pool (reading,
encoding, decoding, each per-image metric, network loads), so the next bottleneck is visible.

`startup`: a 1-image run (`--limit 1 --codec "jpeg quality=50"`) with the default metrics against the same
with metrics off, interleaved, whole processes; prints both wall times, the networks' forward time inside
the default run, and the ratio with that forward time taken out.

Arguments after `--` go to `bench.py run` in both runs (for example `--inception-weights PATH --lpips PATH`).

    python scripts/profile_run.py profile [--dataset ../shared/datasets/kodak] [--limit 4] [-- --codec jpeg]
    python scripts/profile_run.py startup [--repeat 3] [-- --inception-weights PATH --lpips PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_common import DEFAULT_DATASET, image_folder  # noqa: E402

METRICS_OFF = ["--metrics", "none", "--no-ms-ssim", "--lpips", "none", "--caption-embedder", "none"]
FORWARD = ("Inception: forward (originals)", "Inception: forward (reconstructions)", "worker: lpips")


def bench_run(dataset: str, out: pathlib.Path, args: list[str]) -> tuple[float, dict]:
    """Wall seconds of a whole `bench.py run` process and the timings record it wrote."""
    env = dict(os.environ, CMCBENCH_NO_PROGRESS="1")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "bench.py"), "run", "--dataset", dataset, "--out", str(out),
                           *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"error: bench.py run failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    run_dir = max(out.iterdir(), key=lambda p: p.stat().st_mtime)
    return wall, json.loads((run_dir / "timings.json").read_text())[-1]


def print_profile(wall: float, record: dict) -> None:
    stages = record["stages"]
    own = {k: v for k, v in stages.items() if not k.startswith("worker: ")}
    workers = {k: v for k, v in stages.items() if k.startswith("worker: ")}
    accounted = sum(v["seconds"] for v in own.values())
    print(f"whole process: {wall:.2f} s; run (execute + plots): {record['total_s']:.2f} s; before and around it "
          f"(interpreter, imports, checks, creating the run): {wall - record['total_s']:.2f} s")
    print(f"\n{'orchestrator (wall clock)':44s} {'seconds':>8s} {'count':>6s} {'ms each':>9s} {'% of process':>13s}")
    for name, v in sorted(own.items(), key=lambda kv: -kv[1]["seconds"]):
        print(f"{name:44s} {v['seconds']:8.3f} {v['count']:6d} {1000 * v['seconds'] / max(v['count'], 1):9.1f} "
              f"{100 * v['seconds'] / wall:12.1f}%")
    print(f"{'waiting for workers, other':44s} {record['total_s'] - accounted:8.3f}")
    if workers:
        total = sum(v["seconds"] for v in workers.values())
        print(f"\n{'workers (process-seconds, summed)':44s} {'seconds':>8s} {'count':>6s} {'ms each':>9s} "
              f"{'% of workers':>13s}")
        for name, v in sorted(workers.items(), key=lambda kv: -kv[1]["seconds"]):
            print(f"{name[len('worker: '):]:44s} {v['seconds']:8.3f} {v['count']:6d} "
                  f"{1000 * v['seconds'] / max(v['count'], 1):9.1f} {100 * v['seconds'] / total:12.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["profile", "startup"])
    ap.add_argument("--dataset", default=str(DEFAULT_DATASET))
    ap.add_argument("--limit", type=int, default=4, help="images for `profile` (startup uses 1)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved pairs for `startup`")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    folder, _ = image_folder(args.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp)
        if args.mode == "profile":
            wall, record = bench_run(str(folder), out / "profile", ["--limit", str(args.limit), *extra])
            print_profile(wall, record)
            return
        one = ["--limit", "1", "--codec", "jpeg quality=50"]
        bench_run(str(folder), out / "warm", one + extra + METRICS_OFF)  # page cache, compiled bytecode
        walls: dict[str, list[float]] = {"default": [], "off": []}
        forward: list[float] = []
        for _ in range(args.repeat):
            wall, record = bench_run(str(folder), out / "default", one + extra)
            walls["default"].append(wall)
            forward.append(sum(record["stages"].get(k, {}).get("seconds", 0.0) for k in FORWARD))
            walls["off"].append(bench_run(str(folder), out / "off", one + extra + METRICS_OFF)[0])
        default, off, fwd = (statistics.median(walls["default"]), statistics.median(walls["off"]),
                             statistics.median(forward))
        print(f"1 image, jpeg quality=50, whole processes, median of {args.repeat} interleaved pairs")
        print(f"default metrics: {default:.2f} s  ({', '.join(f'{w:.2f}' for w in walls['default'])})")
        print(f"metrics off:     {off:.2f} s  ({', '.join(f'{w:.2f}' for w in walls['off'])})")
        print(f"network forward passes inside the default run: {fwd:.2f} s ({' + '.join(FORWARD)}; LPIPS's is its "
              "whole per-image time)")
        print(f"default without forward passes / off: {(default - fwd) / off:.2f}x (target: within 2x)")
        print("\nprofile of the last default run:")
        print_profile(walls["default"][-1], record)


if __name__ == "__main__":
    main()
