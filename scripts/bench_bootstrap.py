#!/usr/bin/env python
"""Bootstrap cost at scale: 200 resamples of one N-image setting (default N = 5,000, 2048-d features).

Prints the time per metric family for the intervals cmcbench computes (per-image means, FID, the
duplicate-aware KID from Gram matrices computed once, IS), and what KID would cost if each resample
recomputed its kernels (the way a naive implementation does), measured on a few resamples and scaled.
Synthetic features stand in for a run's stored ones; the arithmetic is the same. Where the three kernel
matrices would not fit in `GRAM_MAX_ENTRIES` (above about 5,000 images), KID takes them a block of rows at
a time, as a run's bootstrap does; the peak RSS is printed (`--images 30000 --resamples 20` checks that).
"""

from __future__ import annotations

import argparse
import pathlib
import resource
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmark.analysis.bootstrap import SettingData, resample_positions  # noqa: E402
from metrics.kid import GRAM_MAX_ENTRIES, kernels, mmd2_whole  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--dim", type=int, default=2048)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, d = args.images, args.dim
    ref = rng.normal(size=(n, d)).astype(np.float32)
    pool = (ref + rng.normal(scale=0.5, size=(n, d))).astype(np.float32)
    logits = rng.normal(0, 3, (n, 1008)).astype(np.float32)
    data = SettingData("c", 0, "1", np.array([f"{i:06d}" for i in range(n)]),
                       {"bpp": rng.random(n), "psnr": 30 + rng.random(n)}, pool, logits, ref, {"isc_splits": 10})
    positions = resample_positions(n, args.resamples, np.random.default_rng(1))
    counts = np.stack([np.bincount(p, minlength=n) for p in positions])
    print(f"{args.resamples} resamples of one setting of {n} images, {d}-d features, on this machine:")
    whole = 3 * n * n <= GRAM_MAX_ENTRIES  # else KID takes the kernel matrices a block of rows at a time
    t0 = time.perf_counter()
    if whole:
        data.kernels()
    t_gram = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = data.evaluate_counts(counts)
    total = time.perf_counter() - t0
    if whole:
        print(f"  Gram matrices for KID, once     : {t_gram:8.1f} s")
    else:
        print(f"  KID from blocks of the kernel matrices (whole, they would take {3 * n * n * 8 / 2**30:.1f} GiB)")
    print(f"  all metrics, all resamples      : {total:8.1f} s  ({total / args.resamples:.2f} s per resample; "
          f"metrics {', '.join(sorted(out))})")
    if whole:
        k = 3
        t0 = time.perf_counter()
        for p in positions[:k]:
            mmd2_whole(*kernels(pool[p], ref[p]))
        naive = (time.perf_counter() - t0) / k * args.resamples
        print(f"  KID recomputing kernels per resample (scaled from {k}): {naive:8.1f} s")
    print(f"  total                           : {t_gram + total:8.1f} s = {(t_gram + total) / 60:.1f} min; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
