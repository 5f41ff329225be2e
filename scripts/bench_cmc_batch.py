"""CMC's producing throughput, batched against one image at a time, measured in one run on this machine.

The tiny random-init BLIP captioner and Stable Diffusion pipeline the tests build (tests/tiny_models.py,
real architectures, small) run through CMC's batch protocol exactly as a run calls it: captions of a batch
of images in one call, then the batch's texts decoded in one call, each from its bitstream's own seed.
Prints images per second at each batch size, the ratio to batch 1, and whether the outputs agree.

    python scripts/bench_cmc_batch.py [--dataset ../shared/datasets/kodak] [--images 32] [--batches 1,8]
"""

from __future__ import annotations

import argparse
import atexit
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "scripts")]

from bench_common import DEFAULT_DATASET, image_folder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET), help="a folder of PNG images (default: Kodak)")
    parser.add_argument("--images", type=int, default=32, help="images per measurement (default 32)")
    parser.add_argument("--batches", default="1,8", help="batch sizes, the first is the baseline (default 1,8)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings per batch size")
    parser.add_argument("--size", type=int, default=32, help="generated image size (default 32)")
    parser.add_argument("--steps", type=int, default=4, help="diffusion steps (default 4)")
    args = parser.parse_args()

    import torch

    from baselines.cmc import CMC
    from benchmark.run.config import RunConfig, codec_context
    from tiny_models import tiny_blip, tiny_stable_diffusion

    import transformers

    transformers.logging.set_verbosity_error()  # the random captions overflow the tiny CLIP tokenizer: known
    _, files = image_folder(args.dataset)
    images = [np.asarray(Image.open(f).convert("RGB").resize((256, 256), Image.BICUBIC))
              for f in (files * args.images)[:args.images]]
    root = pathlib.Path(tempfile.mkdtemp(prefix="cmc-batch-"))
    atexit.register(shutil.rmtree, root, True)  # the tiny models are removed when the script exits
    blip, sd = tiny_blip(root / "blip"), tiny_stable_diffusion(root / "sd")
    context = codec_context(RunConfig(dataset="sample"), "test")
    batches = [int(b) for b in args.batches.split(",")]
    results = {}
    for batch in batches:
        best = float("inf")
        for _ in range(args.repeats):
            encoder = CMC(captioner=str(blip), generator=str(sd), size=args.size, steps=args.steps)
            decoder = CMC(captioner=str(blip), generator=str(sd), size=args.size, steps=args.steps)
            encoder.setup(context)
            decoder.setup(context)
            encoder.encode_batch(images[:1], 64), decoder.decode_batch([encoder.encode_batch(images[:1], 64)[0]], 64)
            encoder._captions.clear()  # the warm-up image is captioned again in the timed pass
            start = time.perf_counter()
            data, recon = [], []
            for k in range(0, len(images), batch):
                part = encoder.encode_batch(images[k:k + batch], 64)
                data += part
                recon += decoder.decode_batch(part, 64)
            best = min(best, time.perf_counter() - start)
        results[batch] = (len(images) / best, data, recon)
    base = batches[0]
    print(f"CMC with tiny BLIP + tiny Stable Diffusion ({args.size}px, {args.steps} steps), {len(images)} images, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}:")
    for batch, (rate, data, recon) in results.items():
        same_bits = data == results[base][1]
        diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(recon, results[base][2]))
        print(f"  batch {batch:3d}: {rate:8.2f} images/s  {rate / results[base][0]:5.2f}x batch {base}  "
              f"bitstreams {'identical' if same_bits else 'DIFFER'}, pixels max |diff| {diff}/255")


if __name__ == "__main__":
    main()
