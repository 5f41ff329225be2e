#!/usr/bin/env python3
"""Metric-stage throughput against the bare extractor forward pass at the same batch size.

The bare loop feeds ready-made uint8 tensors straight to torch-fidelity's InceptionV3. The stage does
what a run does per finished task: takes decoded H x W x 3 images, extracts pool3 and logits, computes
IPD against cached reference features and writes the feature shard. Without real weights (offline) a
seeded random network of the same architecture is used: speed does not depend on the weights' values.

    python scripts/bench_inception.py --images 64 --batch-size 32 [--weights PATH] [--device cuda]
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


def random_weights(path: pathlib.Path) -> None:
    import torch
    from unittest import mock

    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    torch.manual_seed(0)
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, strict=True: None), \
            mock.patch("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", return_value={}):
        model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
    torch.save(model.state_dict(), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--weights")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import torch

    from benchmark.run.perceptual import PerceptualStage
    from benchmark.run.record import RunRecord
    from benchmark.run.runner import Task, TaskResult
    from benchmark.data.sample import render
    from metrics.inception import InceptionExtractor, file_sha256

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        weights = args.weights
        if weights is None:
            weights = str(tmp / "random.pth")
            random_weights(pathlib.Path(weights))
        sha = file_sha256(weights)
        images = [np.asarray(render(i)) for i in range(args.images)]
        extractor = InceptionExtractor(weights, sha, args.device, args.batch_size)
        # Reference features in the cache, as after a first run.
        info = {"inception": {"weights_path": weights, "weights_sha256": sha, "reference_dir": str(tmp / "ref")},
                "config": {"inception": {"device": args.device, "batch_size": args.batch_size}}}
        stage = PerceptualStage(RunRecord.from_json(info), tmp)
        stage.extractor = extractor
        rows = [{"image_index": i, "image_sha256": f"{i:064x}", "setting_index": 0} for i in range(args.images)]
        stage.on_result(TaskResult(Task(0, "warm", 0, args.images), [dict(r) for r in rows],
                                   dict(enumerate(images)), []))
        tensors = [torch.from_numpy(np.stack(images[i:i + args.batch_size])).permute(0, 3, 1, 2).contiguous()
                   for i in range(0, args.images, args.batch_size)]
        extractor.forward(tensors[0])  # warm-up
        bare, staged = [], []
        for r in range(args.repeat):
            t0 = time.perf_counter()
            for t in tensors:
                extractor.forward(t)
            if extractor.device.startswith("cuda"):
                torch.cuda.synchronize()
            bare.append(args.images / (time.perf_counter() - t0))
            task_rows = [dict(row) for row in rows]
            result = TaskResult(Task(r + 1, "bench", 0, args.images), task_rows, {}, list(enumerate(images)))
            t0 = time.perf_counter()
            stage.on_result(result)
            staged.append(args.images / (time.perf_counter() - t0))
            assert all(row["ipd"] is not None for row in task_rows)
    b, s = max(bare), max(staged)
    print(f"device {extractor.device}, {args.images} images of 256x256, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"bare forward  : {b:7.2f} images/s (best of {args.repeat}: {', '.join(f'{v:.2f}' for v in bare)})")
    print(f"metric stage  : {s:7.2f} images/s (best of {args.repeat}: {', '.join(f'{v:.2f}' for v in staged)})")
    print(f"stage / bare  : {100 * s / b:.1f}%")


if __name__ == "__main__":
    main()
