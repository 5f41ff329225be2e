#!/usr/bin/env python3
"""Task networks' cost per image in a run's feature stage against a bare loop of the same network on the same
images (issue 26's goal: within 10%).

Two bare loops, both at the stage's batch size: `bare forward` feeds tensors preprocessed beforehand; `bare +
transforms` also runs the weights' transforms on each decoded uint8 image, as a run must. The stage does what a run
does per finished task: preprocesses the decoded H x W x 3 images, runs the network, writes the task's feature
file and its checksum. Without a weights file a seeded random network of the same architecture is used: speed
does not depend on the weights' values.

    python scripts/bench_tasks.py [--dataset ../shared/datasets/kodak] [--images 24] [--batch-size 32]
                                  [--weights resnet50.pth] [--device cuda] [--repeat 3]
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


def main() -> None:
    from bench_common import DEFAULT_DATASET, image_folder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(DEFAULT_DATASET))
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--weights", help="a resnet50 state_dict (default: seeded random weights)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import torch
    import torchvision
    from PIL import Image

    from benchmark.run.feature_stage import FeatureStage
    from benchmark.run.worker import Task, TaskResult
    from metrics import registry
    from metrics.classify import extractor, resolve

    _, files = image_folder(args.dataset)
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files[:args.images]]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        weights = args.weights
        if weights is None:
            weights = str(tmp / "resnet50.pth")
            torch.manual_seed(0)
            torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
        state = {**resolve(weights, tmp), "reference_dir": str(tmp / "ref")}
        space = registry.SPACES["classify"]
        network = extractor(state, args.device, args.batch_size)
        info = {"classify": state, "config": {"inception": {"device": args.device, "batch_size": args.batch_size}}}
        stage = FeatureStage(space, info, tmp, extractor=network)
        rows = [{"image_index": i, "image_sha256": f"{i:064x}", "setting_index": 0} for i in range(len(images))]
        stage.on_result(TaskResult(Task(0, "warm", 0, len(images)), [dict(r) for r in rows],
                                   dict(enumerate(images)), []))  # originals cached, network warm
        batches = [range(i, min(i + args.batch_size, len(images))) for i in range(0, len(images), args.batch_size)]
        ready = [torch.stack([network.preprocess(images[i]) for i in b]).to(network.device) for b in batches]
        sync = torch.cuda.synchronize if network.device.startswith("cuda") else (lambda: None)
        bare, transformed, staged = [], [], []
        for r in range(args.repeat):
            with torch.inference_mode():
                t0 = time.perf_counter()
                for x in ready:
                    network.model(x).float().cpu()
                sync()
                bare.append(len(images) / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                for b in batches:
                    network.model(torch.stack([network.preprocess(images[i]) for i in b]).to(network.device)).float().cpu()
                sync()
                transformed.append(len(images) / (time.perf_counter() - t0))
            result = TaskResult(Task(r + 1, "bench", 0, len(images)), [dict(row) for row in rows], {},
                                list(enumerate(images)))
            t0 = time.perf_counter()
            stage.on_result(result)
            staged.append(len(images) / (time.perf_counter() - t0))
    sizes = sorted({im.shape[:2] for im in images})
    print(f"device {network.device}, {len(images)} images ({', '.join(f'{h}x{w}' for h, w in sizes)}), "
          f"batch {args.batch_size}, torch threads {torch.get_num_threads()}, resnet50 ({state['transforms']})")
    for name, values in (("bare forward", bare), ("bare + transforms", transformed), ("feature stage", staged)):
        print(f"{name:18}: {max(values):7.2f} images/s (best of {args.repeat}: {', '.join(f'{v:.2f}' for v in values)})")
    print(f"stage / bare + transforms: {100 * max(staged) / max(transformed):.1f}%   "
          f"stage / bare forward: {100 * max(staged) / max(bare):.1f}%")


if __name__ == "__main__":
    main()
