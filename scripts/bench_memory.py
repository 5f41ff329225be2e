#!/usr/bin/env python3
"""Peak memory against dataset size: the runner must stay flat as the dataset grows.

Each size runs in a fresh process (JPEG at two settings, 2 jobs) and prints the peak RSS of the main process
and of the largest worker, the throughput, and the main process's peak after its first task and before the
set metrics: memory that grows with the dataset shows between those two, a peak set by one network batch
shows at the first task already. With --inception, --lpips and --clip the networks are random-init copies of
the real architectures, built here (speed and memory do not depend on the weights' values).

--inception-stand-in keeps the whole Inception stage (its network loaded, batching, the bound on pending
images, feature files, IPD, the summary's set metrics) but replaces the network's forward pass by a cheap
function of the pixels with the same outputs (2,048 pool features, 1,008 logits): for sizes whose CPU forward
passes would take hours (30,000 images at two passes each: about 1.9 h at this machine's 9 images/s).
--bootstrap B then times the run's bootstrap intervals (B resamples) and prints their own peak RSS.

    python scripts/bench_memory.py --sizes 100 1000 [--inception | --inception-stand-in] [--lpips] [--clip]
                                   [--image-size 256] [--batch-size 32] [--qualities 30,80]
                                   [--max-pending N] [--bootstrap B]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_mib(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def reset_peak() -> None:
    """Start this process's peak RSS (VmHWM) afresh, so that a later phase's peak is its own (Linux)."""
    pathlib.Path("/proc/self/clear_refs").write_text("5")


def phase_peak_mib() -> float:
    """This process's peak RSS since the last `reset_peak` (VmHWM)."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stand_in_inception() -> None:
    """The Inception network's forward pass replaced by a seeded projection of 8 x 8 average-pooled pixels,
    with the network's output shapes (the network itself is still built and held)."""
    import numpy as np
    import torch

    from metrics import inception

    projection = torch.from_numpy(np.random.default_rng(0).standard_normal((192, inception.FEATURE_DIM))
                                  .astype(np.float32) / 100)

    def forward(self, batch):
        pool = torch.relu(torch.nn.functional.adaptive_avg_pool2d(batch.float(), 8).flatten(1) @ projection)
        self.passes += len(batch)
        pool = pool.numpy()
        return pool, inception.unbiased_logits(pool, self.fc_weight).astype(np.float32)

    inception.InceptionExtractor.forward = forward


def random_clip(folder: pathlib.Path) -> pathlib.Path:
    """A random-init CLIP of openai/clip-vit-base-patch32's size (its image tower, 224 px, patch 32; its text
    tower over a 55-token letter vocabulary), with its processor, saved as a checkpoint folder."""
    import torch
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTextConfig,
                              CLIPTokenizer, CLIPVisionConfig)

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for i, ch in enumerate("abcdefghijklmnopqrstuvwxyz"):
        vocab[ch], vocab[ch + "</w>"] = 3 + i, 29 + i
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    torch.manual_seed(0)
    config = CLIPConfig(text_config=CLIPTextConfig(vocab_size=len(vocab), bos_token_id=0, eos_token_id=1,
                                                   pad_token_id=1).to_dict(),
                        vision_config=CLIPVisionConfig(patch_size=32).to_dict(), projection_dim=512)
    model_dir = folder / "clip"
    CLIPModel(config).eval().save_pretrained(model_dir)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(model_dir)
    return model_dir


def random_weights(folder: pathlib.Path, inception: bool, lpips: bool, clip: bool = False) -> dict:
    import torch

    paths = {}
    if clip:
        paths["clip"] = random_clip(folder)
    if inception:
        from bench_inception import random_weights as inception_weights

        paths["inception"] = folder / "inception.pth"
        inception_weights(paths["inception"])
    if lpips:
        import torchvision

        torch.manual_seed(0)
        paths["lpips"] = folder / "alexnet.pth"
        torch.save(torchvision.models.alexnet(weights=None).state_dict(), paths["lpips"])
    return {k: str(v) for k, v in paths.items()}


def child(args) -> None:
    """One run of `args.images` images; prints one JSON line."""
    from benchmark.run import runner
    from benchmark.codecs.codec_spec import parse_codec_spec
    from benchmark.run.runner import RunConfig, create_run, execute

    weights = json.loads(args.weights)
    inception = {"enabled": False}
    if "inception" in weights:
        inception = {"enabled": True, "weights": weights["inception"], "sha256": None, "device": "cpu",
                     "batch_size": args.batch_size, "isc_splits": 10, "kid_subsets": 100, "kid_subset_size": 1000,
                     "seed": 2020}
    if args.inception_stand_in:
        stand_in_inception()
    config = RunConfig(dataset=f"sample:{3 * args.images}",  # the sample set's test split is a third of it
                       preprocess="none" if args.image_size == 256 else f"resize-{args.image_size}",
                       codecs=[parse_codec_spec(f"jpeg quality={args.qualities}")], inception=inception,
                       caption_embedder="none", image_metrics={"ms_ssim": True, "lpips": weights.get("lpips", "none"),
                                                               "clip": weights.get("clip", "none")},
                       add_metrics=["fd_clip"] if "clip" in weights else [])
    marks = {}

    def on_result(result) -> None:
        marks.setdefault("first_task_peak_mib", peak_mib())

    summary = runner.set_level_summary

    def timed_summary(*a, **k):
        marks["before_set_metrics_peak_mib"] = peak_mib()
        return summary(*a, **k)

    runner.set_level_summary = timed_summary
    stats: dict = {}
    bound = {"max_pending": args.max_pending} if args.max_pending else {}  # older checkouts: no such option
    t = time.perf_counter()
    outcome = execute(create_run(config, args.out), jobs=2, progress=False, on_result=on_result, stats=stats, **bound)
    seconds = time.perf_counter() - t
    main_peak = peak_mib()  # before the bootstrap, which starts its own peak
    if args.bootstrap:
        from benchmark.analysis import bootstrap

        reset_peak()
        t = time.perf_counter()
        table = bootstrap.intervals(outcome.run_dir, args.bootstrap, use_cache=False)
        marks.update(bootstrap_seconds=time.perf_counter() - t, bootstrap_peak_mib=phase_peak_mib(),
                     bootstrap_intervals=len(table))
    print(json.dumps({"images": args.images, "rows": outcome.n_rows, "seconds": seconds,
                      "rows_per_s": outcome.n_rows / seconds, "main_peak_mib": main_peak,
                      "worker_peak_mib": peak_mib(resource.RUSAGE_CHILDREN), **marks,
                      **{k: stats[k] for k in ("max_pending", "peak_pending") if k in stats}}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--inception", action="store_true", help="IS, FID, KID, IPD with a random-init InceptionV3")
    ap.add_argument("--inception-stand-in", action="store_true",
                    help="--inception with a cheap stand-in for the network's forward pass (see above)")
    ap.add_argument("--qualities", default="30,80", help="the JPEG qualities (settings) run (default 30,80)")
    ap.add_argument("--bootstrap", type=int, default=0, metavar="B",
                    help="after each run, its bootstrap intervals with B resamples: seconds and peak RSS")
    ap.add_argument("--lpips", action="store_true", help="LPIPS with a random-init AlexNet backbone")
    ap.add_argument("--clip", action="store_true", help="CLIP similarity and score per image (in the workers) and "
                                                        "FD-CLIP (its feature stage here) with a random-init CLIP")
    ap.add_argument("--image-size", type=int, default=256, help="images are resized to N x N (default 256)")
    ap.add_argument("--batch-size", type=int, default=32, help="Inception batch size (default 32, as a run's)")
    ap.add_argument("--max-pending", type=int, help="the run's --max-pending (default: its own default)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.inception = args.inception or args.inception_stand_in
    if args.child:
        args.images = args.child
        return child(args)
    results = []
    with tempfile.TemporaryDirectory() as out:
        weights = json.dumps(random_weights(pathlib.Path(out), args.inception, args.lpips, args.clip))
        for n in args.sizes:
            command = [sys.executable, __file__, "--child", str(n), "--weights", weights, "--out", out,
                       "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
                       "--qualities", args.qualities, "--bootstrap", str(args.bootstrap)]
            command += ["--max-pending", str(args.max_pending)] if args.max_pending else []
            command += ["--inception-stand-in"] if args.inception_stand_in else []
            line = subprocess.run(command, capture_output=True, text=True, check=True,
                                  cwd=pathlib.Path(__file__).parent).stdout
            results.append(json.loads(line.strip().splitlines()[-1]))
    for r in results:
        print(f"{r['images']:6d} images  {r['rows']:7d} rows  {r['seconds']:7.1f} s  {r['rows_per_s']:6.2f} rows/s  "
              f"main peak {r['main_peak_mib']:7.1f} MiB (after the first task {r.get('first_task_peak_mib', 0):7.1f}, "
              f"before set metrics {r.get('before_set_metrics_peak_mib', 0):7.1f})  largest worker peak "
              f"{r['worker_peak_mib']:7.1f} MiB" + (f"  pending images: at most {r['peak_pending']} of "
                                                      f"{r['max_pending']}" if "peak_pending" in r else "")
              + (f"  bootstrap ({args.bootstrap} resamples, {r['bootstrap_intervals']} intervals): "
                 f"{r['bootstrap_seconds']:.1f} s, peak {r['bootstrap_peak_mib']:.1f} MiB" if args.bootstrap else ""))
    first, last = results[0], results[-1]
    print(f"growth from {first['images']} to {last['images']} images: main "
          f"x{last['main_peak_mib'] / first['main_peak_mib']:.2f} "
          f"({last['main_peak_mib'] - first['main_peak_mib']:+.1f} MiB), worker "
          f"{last['worker_peak_mib'] - first['worker_peak_mib']:+.1f} MiB; throughput "
          f"x{last['rows_per_s'] / first['rows_per_s']:.2f}")


if __name__ == "__main__":
    main()
