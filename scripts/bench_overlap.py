"""Scoring beside a GPU codec against scoring after it: one run each, measured on this machine.

A codec that wants the GPU has its batches scored (per-image metrics, saved outputs) in one thread while it
produces the next batch. With no GPU here, the test codec `OnDevice` (tests/codecs_for_tests.py) stands in:
JPEG bits, and a decoder that waits `--latency` seconds per image the way a process waits on a CUDA stream
(a sleep, which releases the GIL). `gpu=false` turns the thread off, so the two runs differ only in the
overlap. Prints wall time per run, the ratio, and whether the rows agree.

    python scripts/bench_overlap.py [--dataset ../shared/datasets/kodak] [--latency 0.05] [--settings 30,80]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "scripts")]

from bench_common import DEFAULT_DATASET, image_folder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET), help="a folder of PNG images (default: Kodak)")
    parser.add_argument("--latency", type=float, default=0.05, help="the stand-in device's seconds per image")
    parser.add_argument("--settings", default="30,80", help="JPEG qualities (default 30,80)")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs each (default 2)")
    parser.add_argument("--chunk", type=int, default=None,
                        help="images per task (default: the run's own plan, 4 batches of 4 for this codec; the "
                             "scoring thread is drained at the end of each task)")
    args = parser.parse_args()

    from benchmark.codecs.codec_spec import parse_codec_spec
    from benchmark.run.record import read_record
    from benchmark.run.results import load_run
    from benchmark.run.runner import RunConfig, create_run, execute, plan

    folder, files = image_folder(args.dataset)
    timings, rows = {}, {}
    with tempfile.TemporaryDirectory(prefix="overlap-") as root:  # the runs and their saved PNGs go with it
        for repeat in range(args.repeats):
            for gpu in (False, True):
                spec = f"codecs_for_tests:OnDevice gpu={gpu} latency={args.latency} quality={args.settings} label=dev"
                config = RunConfig(dataset=f"folder:{folder}", codecs=[parse_codec_spec(spec)],
                                   inception={"enabled": False}, caption_embedder="none", save_reconstructions=True,
                                   chunk_size=args.chunk)
                run_dir = create_run(config, root, f"gpu-{gpu}-{repeat}", progress=False)
                start = time.perf_counter()
                outcome = execute(run_dir, jobs=1, progress=False)
                seconds = time.perf_counter() - start
                assert outcome.n_failed == 0, outcome.failed_reasons
                timings[gpu] = min(timings.get(gpu, float("inf")), seconds)
                rows[gpu] = load_run(run_dir)[0]
                task_images = max(t.stop - t.start for t in plan(read_record(run_dir), len(files)))
    varying = {"run_id", "created", "encode_s", "decode_s", "config_hash", "codec_options"}  # gpu= differs
    same = all(rows[True][c].equals(rows[False][c]) for c in rows[True].columns.difference(varying))
    n = len(rows[True])
    print(f"OnDevice codec, {len(files)} images x {len(args.settings.split(','))} settings = {n} rows, "
          f"{args.latency * 1000:.0f} ms device latency per image, PSNR + MS-SSIM + saved PNGs, best of "
          f"{args.repeats}, tasks of {task_images} images:")
    print(f"  scored after each batch : {timings[False]:6.2f} s  ({timings[False] / n * 1000:.0f} ms/row)")
    print(f"  scored beside the codec : {timings[True]:6.2f} s  ({timings[True] / n * 1000:.0f} ms/row)")
    print(f"  ratio {timings[False] / timings[True]:.2f}x; rows {'identical' if same else 'DIFFER'} "
          "(timings aside)")


if __name__ == "__main__":
    main()
