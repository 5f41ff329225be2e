#!/usr/bin/env python3
"""Task networks' cost per image in a run's feature stage against a bare loop of the same network on the same
images (issue 26's goal: within 10%).

`bare + transforms` runs the network as the stage's extractor does (the weights' transforms on each decoded uint8
image, batches of one size, the forward pass, the output moved to the host), with nothing around it. The stage
does what a run does per finished task on top: for `segment`, compares each label map with its original's cached
one; it writes the task's feature file and its checksum. For `classify` a `bare forward` over tensors preprocessed
beforehand is timed too. Without a weights file a seeded random network of the task's default architecture is used
(a random detector finds few boxes, so `detect`'s time after the network is less than with real weights).

    python scripts/bench_tasks.py [--task classify|segment|detect] [--dataset ../shared/datasets/kodak]
                                  [--images 24] [--batch-size 32] [--weights FILE] [--device cuda] [--repeat 3]
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
    ap.add_argument("--task", default="classify", choices=["classify", "segment", "detect"])
    ap.add_argument("--weights", help="a state_dict of the task's default architecture (default: seeded random)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import importlib

    import torch
    import torchvision
    from PIL import Image

    from benchmark.run.feature_stage import FeatureStage
    from benchmark.run.worker import Task, TaskResult
    from metrics import registry

    task = importlib.import_module(f"metrics.{args.task}")
    _, files = image_folder(args.dataset)
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files[:args.images]]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        weights = args.weights
        if weights is None:
            weights = str(tmp / "random.pth")
            torch.manual_seed(0)
            build = {k: v for k, v in task.TASK.build if k != "aux_loss"}
            torch.save(torchvision.models.get_model(task.TASK.default, weights=None, **build).state_dict(), weights)
        state = {**task.resolve(weights, tmp), "reference_dir": str(tmp / "ref")}
        space = registry.SPACES[args.task]
        network = task.extractor(state, args.device, args.batch_size)
        info = {args.task: state, "config": {"inception": {"device": args.device, "batch_size": args.batch_size}}}
        stage = FeatureStage(space, info, tmp, extractor=network)
        rows = [{"image_index": i, "image_sha256": f"{i:064x}", "setting_index": 0} for i in range(len(images))]
        stage.on_result(TaskResult(Task(0, "warm", 0, len(images)), [dict(r) for r in rows],
                                   dict(enumerate(images)), []))  # originals cached, network warm
        sync = torch.cuda.synchronize if str(network.device).startswith("cuda") else (lambda: None)
        ready = None
        if args.task == "classify":
            batches = [range(i, min(i + args.batch_size, len(images))) for i in range(0, len(images), args.batch_size)]
            ready = [torch.stack([network.preprocess(images[i]) for i in b]).to(network.device) for b in batches]
        timed = {"bare forward": [], "bare + transforms": [], "feature stage": []}
        for r in range(args.repeat):
            if ready is not None:
                with torch.inference_mode():
                    t0 = time.perf_counter()
                    for x in ready:
                        network.model(x).float().cpu()
                    sync()
                    timed["bare forward"].append(len(images) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            network(images)
            sync()
            timed["bare + transforms"].append(len(images) / (time.perf_counter() - t0))
            result = TaskResult(Task(r + 1, "bench", 0, len(images)), [dict(row) for row in rows], {},
                                list(enumerate(images)))
            t0 = time.perf_counter()
            stage.on_result(result)
            timed["feature stage"].append(len(images) / (time.perf_counter() - t0))
    sizes = sorted({im.shape[:2] for im in images})
    print(f"device {network.device}, {len(images)} images ({', '.join(f'{h}x{w}' for h, w in sizes)}), "
          f"batch {args.batch_size}, torch threads {torch.get_num_threads()}, {args.task}: {state['model']} "
          f"({state['transforms']})")
    for name, values in timed.items():
        if values:
            print(f"{name:18}: {max(values):7.2f} images/s (best of {args.repeat}: "
                  f"{', '.join(f'{v:.2f}' for v in values)})")
    best = {name: max(values) for name, values in timed.items() if values}
    print(f"stage / bare + transforms: {100 * best['feature stage'] / best['bare + transforms']:.1f}%"
          + (f"   stage / bare forward: {100 * best['feature stage'] / best['bare forward']:.1f}%"
             if "bare forward" in best else ""))


if __name__ == "__main__":
    main()
