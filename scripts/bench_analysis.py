#!/usr/bin/env python
"""What reading a large run costs: `compare` of two N-image runs and `leaderboard` of one (200 resamples each;
default N = 30,000, MS-COCO 30k's size), their time and peak memory, and the same at N/10, so the ratio says how
they grow with the dataset.

Two small real runs (sample:48, all 48 images; JPEG and WebP at five qualities, AVIF at its ten default ones; no
networks) are grown to N images (20 settings: 600,000 rows at 30,000): each image's rows are copied under new ids
with bpp and PSNR jittered, written in shards of 64 images as a run writes them, and summarised by the run's own
code. Each command runs in a fresh child
process (its peak RSS is its own) with an empty cache folder. The grown runs are kept, so a second call only times.

    python scripts/bench_analysis.py [--images 30000] [--root /tmp/cmcbench-analysis-runs]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from benchmark.codecs.codec_spec import parse_codec_spec  # noqa: E402
from benchmark.run.record import read_record  # noqa: E402
from benchmark.run.results import shard_files, shard_path, write_summary, write_table  # noqa: E402
from benchmark.run.runner import RunConfig, create_run, execute, set_level_summary  # noqa: E402

CHUNK = 64
# The child's own peak: VmHWM (getrusage's ru_maxrss keeps the parent's peak across fork and exec, on Linux)
MEASURE = ("import re, runpy, sys; sys.argv = sys.argv[1:]\n"
           "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
           "finally:\n    status = open('/proc/self/status').read()\n"
           "    print('peak_kib', re.search(r'VmHWM:\\s*(\\d+)', status).group(1), file=sys.stderr)")


def grown(root: pathlib.Path, name: str, n: int, seed: int) -> pathlib.Path:
    """A run of `n` images made from a 48-image one, as described above (made once)."""
    run_dir = root / f"{name}-{n}"
    if (run_dir / "summary.parquet").exists():
        return run_dir
    config = RunConfig(dataset="sample:48", split="all", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"},
                       codecs=[parse_codec_spec(c) for c in ("jpeg quality=20,35,50,65,80",
                                                             "webp quality=20,35,50,65,80", "avif")])
    small = create_run(config, root, f"{name}-{n}", progress=False)
    execute(small, jobs=1, progress=False)
    rng = np.random.default_rng(seed)
    by_codec: dict[str, list[pa.Table]] = {}
    for path in shard_files(small):
        table = pq.read_table(path)
        by_codec.setdefault(table["codec"][0].as_py(), []).append(table)
        path.unlink()
    for codec, tables in by_codec.items():
        base = pa.concat_tables(tables)
        ids, index = base["image_id"].to_pylist(), base["image_index"].to_numpy()
        copies = []
        for k in range(-(-n // 48)):
            t = base.set_column(base.schema.get_field_index("image_id"), "image_id",
                                pa.array([f"{i}#{k}" for i in ids]))
            t = t.set_column(t.schema.get_field_index("image_index"), "image_index", pa.array(index + 48 * k))
            for c in ("bpp", "psnr"):
                t = t.set_column(t.schema.get_field_index(c), c,
                                 pa.array(t[c].to_numpy(zero_copy_only=False) + rng.normal(0, 0.01, len(t))))
            copies.append(t)
        big = pa.concat_tables(copies)
        index = big["image_index"].to_numpy()
        order = np.argsort(index, kind="stable")
        big, index = big.take(order[index[order] < n]), np.sort(index)
        bounds = np.searchsorted(index[index < n], np.arange(0, n + CHUNK, CHUNK))
        for chunk, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            if b > a:
                write_table(shard_path(small, codec, chunk), big.slice(a, b - a))
    write_summary(small, set_level_summary(small, read_record(small)))
    return small


def timed(args: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of `bench.py ARGS` in a fresh process with an empty cache folder."""
    with tempfile.TemporaryDirectory(prefix="bench-analysis-") as cache:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", MEASURE, str(ROOT / "bench.py"), *args], capture_output=True,
                              text=True, env={**os.environ, "XDG_CACHE_HOME": cache})
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"error: bench.py {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    peak = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("peak_kib")][-1]
    return seconds, int(peak) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=30000)
    ap.add_argument("--root", type=pathlib.Path, default=pathlib.Path("/tmp/cmcbench-analysis-runs"))
    args = ap.parse_args()
    results = {}
    for n in (args.images // 10, args.images):
        base, new = grown(args.root, "base", n, 0), grown(args.root, "new", n, 1)
        results[n] = {"compare": timed(["compare", str(base), str(new)]),
                      "leaderboard": timed(["leaderboard", str(base), "--out", str(args.root / f"leaderboard-{n}")])}
        rows = sum(pq.read_metadata(p).num_rows for p in shard_files(base, verify=False))
        for command, (seconds, mib) in results[n].items():
            print(f"{command:12s} {n:6d} images ({rows:,} rows a run): {seconds:6.1f} s, peak {mib:6.0f} MiB")
    small, large = results[args.images // 10], results[args.images]
    for command in small:
        (t0, m0), (t1, m1) = small[command], large[command]
        print(f"{command}: x{t1 / t0:.1f} time, x{m1 / m0:.2f} peak memory for x10 images")


if __name__ == "__main__":
    main()
