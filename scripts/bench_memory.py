#!/usr/bin/env python3
"""Peak memory against dataset size: the runner must stay flat from 100 to 1,000 images.

Each size runs in a fresh process; prints the peak RSS of the main process and of the largest worker.

    python scripts/bench_memory.py --sizes 100 1000
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from benchmark.codec import parse_codec_spec
from benchmark.runner import RunConfig, create_run, execute
n = {n}
config = RunConfig(dataset=f"sample:{{3 * n}}", codecs=[parse_codec_spec("jpeg"), parse_codec_spec("jpeg2000 ratio=24,96")], inception={{"enabled": False}})
t = time.perf_counter()
outcome = execute(create_run(config, {out!r}), jobs=2, progress=False)
print(json.dumps({{"images": n, "rows": outcome.n_rows, "seconds": time.perf_counter() - t,
                  "main_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as out:
        for n in args.sizes:
            code = CHILD.format(root=str(ROOT), n=n, out=out)
            line = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            results.append(json.loads(line.strip().splitlines()[-1]))
    for r in results:
        print(f"{r['images']:6d} images  {r['rows']:7d} rows  {r['seconds']:7.1f} s  "
              f"main peak {r['main_peak_mib']:7.1f} MiB  largest worker peak {r['worker_peak_mib']:7.1f} MiB")
    first, last = results[0], results[-1]
    print(f"growth from {first['images']} to {last['images']} images: main "
          f"{last['main_peak_mib'] - first['main_peak_mib']:+.1f} MiB, worker "
          f"{last['worker_peak_mib'] - first['worker_peak_mib']:+.1f} MiB")


if __name__ == "__main__":
    main()
