#!/usr/bin/env python3
"""Set metrics per setting (FID, KID, IS) against the network time of the same setting.

For each N, synthetic Inception-like features (non-negative, correlated, 2048-d, with 1008 logits) stand
for a run's originals and one setting's reconstructions. The script times, interleaved and best of
--repeat, what a run computes per setting:

- FID as cmcbench computes it now (`FIDReference`: the originals' mean and Cholesky factor once per run,
  then one product, one rank-k update and one eigenvalue problem per setting), and as it did before
  (dc285c1, torch-fidelity's route: both covariances and the eigenvalues of the non-symmetric S1 S2),
  with torch-fidelity's own `fid_statistics_to_metric` as the value to agree with;
- KID (100 subsets of 1000, from the whole sets' kernel matrices) against the per-subset products;
- the Inception Score (10 splits).

The network time is that of N forward passes of InceptionV3 (torch-fidelity's, random-init: speed does not
depend on the weights) on this machine at batch 32, measured on --network-images images and scaled to N.

    python scripts/bench_set_metrics.py [--sizes 2933 5000] [--repeat 3] [--network-images 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import metrics.kid as kid_module  # noqa: E402
from metrics.fid import FIDReference, statistics  # noqa: E402
from metrics.inception_score import inception_score  # noqa: E402


def fid_before(a: np.ndarray, b: np.ndarray) -> float:
    """FID as cmcbench computed it per setting at dc285c1 (torch-fidelity's eigenvalue route)."""
    (mu1, s1), (mu2, s2) = statistics(a), statistics(b)
    eig = np.linalg.eigvals(s1 @ s2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eig.astype(np.complex128)).real.sum())


def features(n: int, dim: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(0).normal(size=(256, dim)) / 16
    pool = np.maximum(rng.normal(size=(n, 256)) @ mixing + 0.3 + shift, 0) + rng.random((n, dim)) * 0.05
    logits = rng.normal(size=(n, 1008)) * 3
    return pool.astype(np.float32), logits.astype(np.float32)


def network_seconds_per_image(images: int, batch: int, device: str) -> float:
    import torch
    from bench_inception import random_weights

    from metrics.inception import InceptionExtractor, file_sha256

    with tempfile.TemporaryDirectory() as tmp:
        weights = pathlib.Path(tmp) / "random.pth"
        random_weights(weights)
        extractor = InceptionExtractor(str(weights), file_sha256(weights), device, batch)
        x = torch.randint(0, 256, (batch, 3, 299, 299), dtype=torch.uint8)
        extractor.forward(x)  # warm-up
        start = time.perf_counter()
        for _ in range(max(1, images // batch)):
            extractor.forward(x)
        if extractor.device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / (max(1, images // batch) * batch)


def best(fn, repeat: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2933, 5000])
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--network-images", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    per_image = network_seconds_per_image(args.network_images, 32, args.device)
    print(f"InceptionV3 forward on {args.device}: {per_image * 1000:.1f} ms per image (batch 32)")
    try:
        import torch
        from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    except ImportError:
        torch = None
    for n in args.sizes:
        originals, _ = features(n, args.dim, 1)
        recon, logits = features(n, args.dim, 2, shift=0.05)
        network = per_image * n
        reference = FIDReference(originals)
        start = time.perf_counter()
        reference.distance(recon)  # the once-per-run part: the originals' statistics and Cholesky factor
        once = time.perf_counter() - start

        def kid_per_subset():
            saved, kid_module.GRAM_MAX_ENTRIES = kid_module.GRAM_MAX_ENTRIES, 0
            try:
                return kid_module.kid(recon, originals)
            finally:
                kid_module.GRAM_MAX_ENTRIES = saved

        rows = {"FID now": lambda: reference.distance(recon), "FID before": lambda: fid_before(recon, originals),
                "KID now": lambda: kid_module.kid(recon, originals), "KID per subset": kid_per_subset,
                "IS": lambda: inception_score(logits)}
        times = {name: float("inf") for name in rows}
        values = {}
        for _ in range(args.repeat):  # interleaved
            for name, fn in rows.items():
                t, values[name] = best(fn, 1)
                times[name] = min(times[name], t)
        print(f"\nN = {n}, {args.dim}-d features; network time for the setting: {network:.1f} s "
              f"({per_image * 1000:.1f} ms x {n})")
        print(f"{'metric':16s} {'seconds':>9s} {'% of network':>13s}")
        for name, t in times.items():
            print(f"{name:16s} {t:9.3f} {100 * t / network:12.2f}%")
        print(f"(once per run: the originals' statistics and Cholesky factor, {once:.2f} s)")
        now_set = times["FID now"] + times["KID now"] + times["IS"]
        print(f"FID: {times['FID before'] / times['FID now']:.1f}x faster than before; "
              f"KID: {times['KID per subset'] / times['KID now']:.1f}x; "
              f"FID + KID + IS per setting: {now_set:.2f} s = {100 * now_set / network:.2f}% of the network time")
        rel = abs(values["FID now"] - values["FID before"]) / abs(values["FID before"])
        line = f"FID now {values['FID now']:.6f}, before {values['FID before']:.6f} (relative difference {rel:.1e})"
        if torch is not None:
            tf = fid_statistics_to_metric(fid_features_to_statistics(torch.from_numpy(recon.astype(np.float64))),
                                          fid_features_to_statistics(torch.from_numpy(originals.astype(np.float64))),
                                          verbose=False)["frechet_inception_distance"]
            line += f"; torch-fidelity {tf:.6f} (relative difference {abs(values['FID now'] - tf) / abs(tf):.1e})"
        print(line)
        kid_rel = abs(values["KID now"][0] - values["KID per subset"][0]) / abs(values["KID per subset"][0])
        print(f"KID now {values['KID now'][0]:.6g}, per subset {values['KID per subset'][0]:.6g} "
              f"(relative difference {kid_rel:.1e})")


if __name__ == "__main__":
    main()
