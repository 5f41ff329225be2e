"""GPU throughput and peak memory of the two network stages of a generative-codec run, by batch size.

Random-init full-size networks (nothing is downloaded): diffusers' UNet2DConditionModel at Stable Diffusion
1.x's configuration (the decoder's cost: `--steps` denoising steps of 4 x 64 x 64 latents against 77 x 768
text embeddings) and torch-fidelity's InceptionV3 through cmcbench's extractor (the metric stage: 512 x 512
uint8 images -> pool features and logits). For each batch size: images per second and peak GPU memory,
measured after a warm-up in this one run.

    python scripts/bench_gpu.py [--batches 1,8,16] [--steps 25] [--device cuda] [--fp16]
"""

from __future__ import annotations

import argparse
import atexit
import pathlib
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]


def sync(torch, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_reset(torch, device):
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(torch, device) -> float:
    return torch.cuda.max_memory_allocated() / 2 ** 30 if device.startswith("cuda") else float("nan")


def bench_unet(torch, device, batches, steps, dtype, repeats, small):
    from diffusers import UNet2DConditionModel

    config = dict(sample_size=64, in_channels=4, out_channels=4, cross_attention_dim=768, attention_head_dim=8,
                  block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
    if small:  # a CPU smoke test of the script itself
        config.update(block_out_channels=(32, 64, 64, 64), layers_per_block=1, attention_head_dim=2,
                      cross_attention_dim=32, sample_size=16)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config).to(device).to(dtype).eval()
    side = config["sample_size"]
    out = []
    for batch in batches:
        latents = torch.randn(batch, 4, side, side, device=device, dtype=dtype)
        text = torch.randn(batch, 77, config["cross_attention_dim"], device=device, dtype=dtype)
        with torch.inference_mode():
            unet(latents, 999, encoder_hidden_states=text)  # warm-up (kernels, allocator)
            peak_reset(torch, device)
            best = float("inf")
            for _ in range(repeats):
                sync(torch, device)
                t0 = time.perf_counter()
                for t in range(steps):
                    latents = unet(latents, 999 - t, encoder_hidden_states=text).sample
                sync(torch, device)
                best = min(best, time.perf_counter() - t0)
        out.append((batch, batch / best, peak_gib(torch, device)))
    return out


def bench_inception(torch, device, batches, repeats, small):
    import numpy as np

    from bench_inception import random_weights
    from metrics.inception import InceptionExtractor, file_sha256

    path = pathlib.Path(tempfile.mkdtemp(prefix="bench-gpu-")) / "random-inception.pth"
    atexit.register(shutil.rmtree, path.parent, True)  # ~100 MB of random weights, removed when the script exits
    random_weights(path)
    side = 64 if small else 512
    out = []
    for batch in batches:
        extractor = InceptionExtractor(str(path), file_sha256(path), device, batch)
        images = [np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8) for i in range(batch)]
        extractor(images)  # warm-up
        peak_reset(torch, device)
        best = float("inf")
        for _ in range(repeats):
            sync(torch, device)
            t0 = time.perf_counter()
            extractor(images)
            sync(torch, device)
            best = min(best, time.perf_counter() - t0)
        out.append((batch, batch / best, peak_gib(torch, device)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8,16")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps per image (default 25)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--fp16", action="store_true", help="the UNet in float16, as diffusers pipelines run it")
    parser.add_argument("--small", action="store_true", help="tiny networks on any device: checks the script")
    args = parser.parse_args()

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: no CUDA device here; pass --device cpu --small to check the script, or run it on a GPU.")
    batches = [int(b) for b in args.batches.split(",")]
    dtype = torch.float16 if args.fp16 else torch.float32
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"{name}, torch {torch.__version__}, {'small networks (script check)' if args.small else 'full size'}")
    print(f"Generation: UNet2DConditionModel (SD 1.x config, {str(dtype).split('.')[-1]}), {args.steps} steps/image")
    for batch, rate, peak in bench_unet(torch, args.device, batches, args.steps, dtype, args.repeats, args.small):
        print(f"  batch {batch:3d}: {rate:8.3f} images/s   peak {peak:6.2f} GiB")
    print(f"Metric stage: InceptionV3 (torch-fidelity, float32) on {64 if args.small else 512}px images")
    for batch, rate, peak in bench_inception(torch, args.device, batches, args.repeats, args.small):
        print(f"  batch {batch:3d}: {rate:8.1f} images/s   peak {peak:6.2f} GiB")


if __name__ == "__main__":
    main()
