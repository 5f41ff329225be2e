#!/usr/bin/env python3
"""Runner overhead: cmcbench's runner with its default metrics against a bare loop doing the same work.

Both sweep JPEG over the dataset at the default qualities with the same number of processes and compute
the metrics the runner computes by default on this machine, through the same library calls: PSNR (numpy),
MS-SSIM (metrics.msssim, the pure function the runner calls), LPIPS (the lpips formula on torchvision's AlexNet, original features once per
image) when its weights are available, and InceptionV3 features (torch-fidelity) for IPD, IS, FID and KID
when its weights are available. The runner also reads and hashes images, checks outputs, writes shards,
the summary and provenance. Runs are interleaved so drift in machine load hits both alike; the script
also checks that the runner's mean bpp, PSNR and MS-SSIM per quality equal the bare loop's.

    python scripts/bench_throughput.py --dataset ../shared/datasets/kodak --jobs 2 --repeat 3 \
        [--inception-weights PATH] [--lpips PATH]
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
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from baselines.jpeg import JPEG  # noqa: E402
from bench_common import DEFAULT_DATASET, image_folder  # noqa: E402
from benchmark.codecs.codec_spec import parse_codec_spec  # noqa: E402
from benchmark.run.record import RunRecord, read_record  # noqa: E402
from benchmark.run.results import load_run  # noqa: E402
from benchmark.run.runner import RunConfig, create_run, execute  # noqa: E402

QUALITIES = list(JPEG.default_sweep)
_LPIPS = None


def _init(lpips_state: dict | None) -> None:
    global _LPIPS
    if lpips_state:
        import torch

        from metrics.lpips import load

        torch.set_num_threads(1)  # as the runner's workers

        _LPIPS = load(lpips_state)


def bare_image(args: tuple[str, bool, bool]):
    """One image at every quality: encode, decode and the per-image metrics, with the libraries' own calls."""
    path, ms_ssim_on, keep = args
    from metrics.msssim import ms_ssim

    img = np.asarray(Image.open(path).convert("RGB"))
    out, recons, cache = [], [], {}
    for q in QUALITIES:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=q, subsampling=2, optimize=False, progressive=False)
        data = buf.getvalue()
        rec = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        mse = np.mean((img.astype(np.float64) - rec) ** 2)
        row = {"q": q, "bytes": len(data), "psnr": 10 * np.log10(255.0 ** 2 / mse) if mse else float("inf")}
        if ms_ssim_on:
            row["ms_ssim"] = ms_ssim(img, rec)[0]
        if _LPIPS is not None:
            if "lpips" not in cache:
                cache["lpips"] = _LPIPS.features(img)
            row["lpips"] = _LPIPS.distance(cache["lpips"], rec)
        out.append(row)
        if keep:
            recons.append(rec)
    return out, (img if keep else None), recons


def bare(paths: list[str], jobs: int, record: RunRecord) -> tuple[float, list]:
    t0 = time.perf_counter()
    ms_on = record.image_metrics["ms_ssim"]["status"] == "ok"
    lpips_state = record.image_metrics["lpips"] if record.image_metrics["lpips"]["status"] == "ok" else None
    inception = record.inception["status"] == "ok"
    with multiprocessing.get_context("fork").Pool(jobs, initializer=_init, initargs=(lpips_state,)) as pool:
        results = pool.map(bare_image, [(p, ms_on, inception) for p in paths], chunksize=1)
    if inception:  # the same network, batch size and set metrics as the runner, on the same features
        from metrics.fid import fid
        from metrics.inception import InceptionExtractor
        from metrics.inception_score import inception_score
        from metrics.kid import kid

        opts = record.config["inception"]
        net = InceptionExtractor(record.inception["weights_path"], record.inception["weights_sha256"],
                                 opts["device"], opts["batch_size"])
        ref_pool, _ = net([orig for _, orig, _ in results])
        per_q = [net([recons[k] for _, _, recons in results]) for k in range(len(QUALITIES))]
        for pool_q, logits_q in per_q:
            fid(pool_q, ref_pool)
            kid(pool_q, ref_pool, opts["kid_subsets"], opts["kid_subset_size"], opts["seed"])
            if len(logits_q) >= opts["isc_splits"]:
                inception_score(logits_q, opts["isc_splits"], opts["seed"])
    return time.perf_counter() - t0, [rows for rows, _, _ in results]


def runner(config: RunConfig, jobs: int, out: str):
    t0 = time.perf_counter()
    run_dir = create_run(config, out, progress=False)
    execute(run_dir, jobs=jobs, progress=False)
    return time.perf_counter() - t0, run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(DEFAULT_DATASET), help="a folder of PNG images (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--inception-weights", help="InceptionV3 weights (default: the runner's default resolution)")
    ap.add_argument("--lpips", default="auto", help="AlexNet weights for LPIPS, auto or none (as bench.py run)")
    args = ap.parse_args()
    dataset, paths = image_folder(args.dataset)
    config = RunConfig(dataset=str(dataset), codecs=[parse_codec_spec("jpeg")],
                       inception={**RunConfig().inception.to_json(), "weights": args.inception_weights},
                       image_metrics={"ms_ssim": True, "lpips": args.lpips})
    bare_times, run_times = [], []
    with tempfile.TemporaryDirectory() as out:
        for k in range(args.repeat):  # interleaved, so drift in machine load hits both alike
            tr, run_dir = runner(config, args.jobs, str(pathlib.Path(out) / str(k)))
            record = read_record(run_dir)
            tb, bare_rows = bare(paths, args.jobs, record)
            bare_times.append(tb)
            run_times.append(tr)
        _, summary = load_run(run_dir)
    metrics = ["psnr"] + [m for m in ("ms_ssim", "lpips") if record.image_metrics[m]["status"] == "ok"]
    computed = metrics + (["ipd", "inception_score", "fid", "kid"] if record.inception["status"] == "ok" else [])
    sizes = [np.asarray(Image.open(p).size).prod() for p in paths]
    worst = {m: 0.0 for m in ["bpp", *metrics]}
    for k, q in enumerate(QUALITIES):
        row = summary[summary.setting == q].iloc[0]
        worst["bpp"] = max(worst["bpp"], abs(row.bpp - np.mean([8 * r[k]["bytes"] / s for r, s in zip(bare_rows, sizes)])))
        for m in metrics:
            worst[m] = max(worst[m], abs(getattr(row, m) - np.mean([r[k][m] for r in bare_rows])))
    b, r = min(bare_times), min(run_times)
    n_ops = len(paths) * len(QUALITIES)
    print(f"images {len(paths)} x qualities {len(QUALITIES)} = {n_ops} encode/decode, jobs={args.jobs}; "
          f"metrics computed by both: {', '.join(computed)}")
    skipped = [f"{k}: {v['reason']}" for k, v in {**record.image_metrics, "inception": record.inception}.items()
               if v["status"] != "ok"]
    if skipped:
        print("not computed by either (as in a default run here): " + "; ".join(s[:120] for s in skipped))
    print(f"bare loop        : best {b:.3f} s  ({n_ops / b:7.1f} images/s)  all {', '.join(f'{t:.3f}' for t in bare_times)}")
    print(f"cmcbench runner  : best {r:.3f} s  ({n_ops / r:7.1f} images/s)  all {', '.join(f'{t:.3f}' for t in run_times)}")
    print(f"runner overhead  : {100 * (r / b - 1):+.1f}% (best of {args.repeat}; "
          f"median {100 * (np.median(run_times) / np.median(bare_times) - 1):+.1f}%)")
    print("agreement        : " + ", ".join(f"max |d mean {m}| = {v:.3g}" for m, v in worst.items()))


if __name__ == "__main__":
    main()
