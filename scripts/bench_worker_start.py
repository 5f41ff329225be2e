#!/usr/bin/env python3
"""Worker start-up of the local executor: a short pooled run (2 workers) with the workers forked from a
forkserver that preloaded torch and the worker modules, against the same run with the forkserver preloading
nothing (each worker imports them itself, as before the preload).

Each variant runs in its own process (one forkserver per process), with torch imported first, as in the CLI
with network metrics and in the test suite: that is when the local executor uses a forkserver. The first run
of each process starts the forkserver and is printed apart; the rest are the per-run cost. Rows are checked
equal between the variants.

    python scripts/bench_worker_start.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

ONE_VARIANT = """
import json, sys, tempfile, time
import torch  # noqa: F401 - live here, as in the CLI with networks: workers start from a forkserver
sys.path.insert(0, {root!r})
from benchmark import cli
from benchmark.run import local_executor
from benchmark.run.results import load_run

if not {preload}:
    local_executor.FORKSERVER_PRELOAD = ["__main__"]
times = []
with tempfile.TemporaryDirectory() as out:
    for k in range({runs}):
        start = time.perf_counter()
        assert cli.main(["run", "--dataset", "sample:4", "--codec", "jpeg quality=50", "--codec", "webp quality=50",
                         "--jobs", "2", "--metrics", "none", "--lpips", "none", "--no-ms-ssim", "--caption-embedder",
                         "none", "--no-plots", "--no-progress", "--out", out, "--name", f"r{{k}}"]) == 0
        times.append(time.perf_counter() - start)
    rows = load_run(out + "/r0")[0].sort_values(["codec", "setting_index", "image_id"])
print(json.dumps({{"times": times, "rows": rows[["codec", "image_id", "bpp", "psnr"]].to_json()}}))
"""


def variant(preload: bool, runs: int) -> dict:
    done = subprocess.run([sys.executable, "-c", ONE_VARIANT.format(root=str(ROOT), preload=preload, runs=runs)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per variant, the first starting the forkserver")
    args = parser.parse_args()
    runs = max(2, args.runs)
    bare, preloaded = variant(False, runs), variant(True, runs)
    assert bare["rows"] == preloaded["rows"], "the rows differ between the variants"
    for name, result in (("without preload", bare), ("with preload", preloaded)):
        first, rest = result["times"][0], result["times"][1:]
        print(f"{name:>16}: first run {first:.2f} s (starts the forkserver), then {statistics.median(rest):.2f} s "
              f"per run (median of {len(rest)})")
    ratio = statistics.median(preloaded["times"][1:]) / statistics.median(bare["times"][1:])
    print(f"per-run time with preload / without: {ratio:.2f} (rows equal)")


if __name__ == "__main__":
    main()
