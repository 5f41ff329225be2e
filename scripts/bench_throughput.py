#!/usr/bin/env python3
"""Runner overhead: cmcbench's runner against a bare Pillow encode/decode/PSNR loop.

Both do the same work (read each image once, JPEG-encode and decode it at every quality, compute PSNR)
with the same number of processes; the runner also writes shards, the summary and provenance.
Also checks that the runner's mean bpp and PSNR per quality equal the bare loop's.

    python scripts/bench_throughput.py --dataset ../shared/datasets/kodak --jobs 2 --repeat 3
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import pathlib
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmark.codec import parse_codec_spec  # noqa: E402
from benchmark.results import load_run  # noqa: E402
from benchmark.runner import RunConfig, create_run, execute  # noqa: E402

QUALITIES = list(range(5, 100, 5))


def bare_image(path: str) -> list[tuple[int, int, float]]:
    img = np.asarray(Image.open(path).convert("RGB"))
    out = []
    for q in QUALITIES:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=q)
        data = buf.getvalue()
        rec = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        mse = np.mean((img.astype(np.float64) - rec) ** 2)
        out.append((q, len(data), 10 * np.log10(255.0 ** 2 / mse)))
    return out


def bare(paths: list[str], jobs: int):
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        results = pool.map(bare_image, paths, chunksize=1)
    return time.perf_counter() - t0, results


def runner(dataset: str, jobs: int, out: str):
    config = RunConfig(dataset=dataset, codecs=[parse_codec_spec("jpeg")], inception={"enabled": False})
    t0 = time.perf_counter()
    run_dir = create_run(config, out)
    execute(run_dir, jobs=jobs, progress=False)
    return time.perf_counter() - t0, run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(pathlib.Path(__file__).resolve().parents[2] / "shared/datasets/kodak"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    paths = sorted(str(p) for p in pathlib.Path(args.dataset).glob("*.png"))
    n_ops = len(paths) * len(QUALITIES)
    bare_times, run_times = [], []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.repeat):  # interleaved, so drift in machine load hits both alike
            tb, bare_results = bare(paths, args.jobs)
            tr, run_dir = runner(args.dataset, args.jobs, out)
            bare_times.append(tb)
            run_times.append(tr)
        _, summary = load_run(run_dir)
    per_q = {q: ([], []) for q in QUALITIES}
    for image in bare_results:
        for q, nbytes, p in image:
            per_q[q][0].append(nbytes)
            per_q[q][1].append(p)
    sizes = [np.asarray(Image.open(p).size).prod() for p in paths]
    max_bpp_diff = max_psnr_diff = 0.0
    for q in QUALITIES:
        bpp = np.mean([8 * b / s for b, s in zip(per_q[q][0], sizes)])
        psnr = np.mean(per_q[q][1])
        row = summary[summary.setting == q].iloc[0]
        max_bpp_diff = max(max_bpp_diff, abs(row.bpp - bpp))
        max_psnr_diff = max(max_psnr_diff, abs(row.psnr - psnr))
    b, r = min(bare_times), min(run_times)
    print(f"images {len(paths)} x qualities {len(QUALITIES)} = {n_ops} encode/decode/PSNR, jobs={args.jobs}")
    print(f"bare Pillow loop : best {b:.3f} s  ({n_ops / b:7.1f} ops/s)  all {', '.join(f'{t:.3f}' for t in bare_times)}")
    print(f"cmcbench runner  : best {r:.3f} s  ({n_ops / r:7.1f} ops/s)  all {', '.join(f'{t:.3f}' for t in run_times)}")
    print(f"runner overhead  : {100 * (r / b - 1):+.1f}% (best of {args.repeat}; "
          f"median {100 * (np.median(run_times) / np.median(bare_times) - 1):+.1f}%)")
    print(f"agreement        : max |d mean bpp| = {max_bpp_diff:.3g}, max |d mean PSNR| = {max_psnr_diff:.3g} dB")


if __name__ == "__main__":
    main()
