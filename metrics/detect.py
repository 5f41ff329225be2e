"""Detection agreement: does an object detector still find in the reconstruction what it found in the original?
The original's detections above a score threshold are the ground truth (pseudo ground truth, the label-free
protocol of codecs for machines); the reconstruction's detections are scored against them by pycocotools'
COCOeval, the COCO evaluator itself.

`--detect auto` is torchvision's fasterrcnn_resnet50_fpn_v2 with its DEFAULT weights (COCO); `--detect NAME` any
torchvision detection model with its DEFAULT weights; `--detect FILE` a state_dict for fasterrcnn_resnet50_fpn_v2.
Images go to the network as float tensors (the weights' transforms); the network resizes them itself and returns
boxes in the image's pixels. Each image's first 100 detections (the network's own order, by score) are stored as
x1, y1, x2, y2, score, label (padded with NaN): originals once per (pixels, weights), cached across runs;
reconstructions once per setting. Per setting:
- `detect_map`: COCO mAP@[.5:.95] against the originals' detections scored at least `SCORE_THRESHOLD`;
- `detect_map50`: COCO mAP@.5 against the same.
A setting whose originals have no detection above the threshold has no value, with that reason.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from metrics.spec import FeatureSpace, MetricInfo, Stage
from metrics.torchvision_models import Network, Task

TASK = Task("--detect", "torchvision.models.detection", "fasterrcnn_resnet50_fpn_v2", "detection agreement",
            build=(("weights_backbone", None),))
MAX_DETECTIONS = 100  # COCO's maxDets for mAP
SCORE_THRESHOLD = 0.5  # an original's detection at least this confident is pseudo ground truth


def resolve(choice: str, cache_root, progress: bool = False) -> dict:
    state = TASK.resolve(choice, progress)
    return {**state, "score_threshold": SCORE_THRESHOLD} if state["status"] == "ok" else state


class Detector(Network):
    """Each image's detections as one row of MAX_DETECTIONS x (x1, y1, x2, y2, score, label), NaN-padded."""

    task = TASK

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        """Detections of each image, in input order. Only images of one size share a batch: the network pads a
        batch to its largest image, and the padding would change an image's detections with its batch-mates."""
        out = np.full((len(images), MAX_DETECTIONS * 6), np.nan, np.float32)
        by_size: dict = {}
        for k, im in enumerate(images):
            by_size.setdefault(im.shape, []).append(k)
        with self.torch.inference_mode():
            for positions in by_size.values():
                for start in range(0, len(positions), self.batch_size):
                    part = positions[start:start + self.batch_size]
                    batch = [self.preprocess(images[k]).to(self.device) for k in part]
                    for k, found in zip(part, self.model(batch)):
                        rows = self.torch.cat([found["boxes"], found["scores"][:, None],
                                               found["labels"][:, None].float()], 1)[:MAX_DETECTIONS]
                        out[k, :rows.numel()] = rows.float().cpu().numpy().ravel()
                    self.passes += len(part)
        return out


def extractor(state: dict, device: str, batch_size: int) -> Detector:
    return Detector(state, device, batch_size)


def detections(row: np.ndarray) -> np.ndarray:
    """One image's stored detections, K x (x1, y1, x2, y2, score, label), without the padding."""
    rows = np.asarray(row, np.float64).reshape(MAX_DETECTIONS, 6)
    return rows[~np.isnan(rows[:, 4])]


_EVALUATED: dict = {}  # COCOeval's results by the arrays' digest: a resample's mAP and mAP@.5 share one evaluation


def coco_ap(features: np.ndarray, original_features: np.ndarray,
            threshold: float = SCORE_THRESHOLD) -> tuple[float, float]:
    """(mAP@[.5:.95], mAP@.5) by pycocotools' COCOeval; the images are numbered by position, so an image drawn
    twice by a bootstrap resample counts twice. NaN, NaN when no original has a detection above `threshold`."""
    import hashlib

    key = hashlib.sha256(np.ascontiguousarray(features).tobytes() + np.ascontiguousarray(original_features).tobytes()
                         + repr(threshold).encode()).hexdigest()
    if key not in _EVALUATED:
        if len(_EVALUATED) >= 4096:
            _EVALUATED.clear()
        _EVALUATED[key] = _coco_ap(features, original_features, threshold)
    return _EVALUATED[key]


def _coco_ap(features: np.ndarray, original_features: np.ndarray, threshold: float) -> tuple[float, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth, found = [], []
    for image, (mine, theirs) in enumerate(zip(features, original_features)):
        for x1, y1, x2, y2, score, label in detections(theirs):
            if score >= threshold:
                truth.append({"id": len(truth) + 1, "image_id": image, "category_id": int(label), "iscrowd": 0,
                              "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
        found += [{"image_id": image, "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                   "score": score} for x1, y1, x2, y2, score, label in detections(mine)]
    if not truth:
        return float("nan"), float("nan")
    categories = sorted({a["category_id"] for a in truth + found})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {"images": [{"id": k} for k in range(len(features))], "annotations": truth,
                      "categories": [{"id": c} for c in categories]}
        gt.createIndex()
        if not found:
            return 0.0, 0.0
        evaluation = COCOeval(gt, gt.loadRes(found), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0]), float(evaluation.stats[1])


def map_95(features: np.ndarray, original_features: np.ndarray) -> float:
    return coco_ap(features, original_features)[0]


def map_50(features: np.ndarray, original_features: np.ndarray) -> float:
    return coco_ap(features, original_features)[1]


def agreement(features: np.ndarray, reference, state: dict) -> tuple[dict, str]:
    threshold = float(state.get("score_threshold", SCORE_THRESHOLD))
    ap, ap50 = coco_ap(features, reference.features, threshold)
    if np.isnan(ap):
        return {}, f"no original has a detection scored at least {threshold}: no pseudo ground truth"
    return {"detect_map": ap, "detect_map50": ap50}, ""


SPECS = [
    Stage("detect", "none", "auto|none|MODEL|FILE",
          "detection agreement with the original's detections (COCO mAP by pycocotools) per setting: none (default); "
          "auto = torchvision fasterrcnn_resnet50_fpn_v2 with its DEFAULT weights; a torchvision detection model by "
          "name; or a fasterrcnn_resnet50_fpn_v2 state_dict file; originals' detections cached like Inception's",
          "metrics.detect:resolve"),
    FeatureSpace("detect", "Detector", "detect", "metrics.detect:extractor"),
    MetricInfo("detect_map", "mAP@[.5:.95] against the original's detections", True, "set", "mAP",
               columns=(("n_detect", "float64"),), needs=("features",), state="detect", tolerance=0.02,
               space="detect", fn="metrics.detect:agreement", resample="metrics.detect:map_95", bounds=(0, 1),
               requires=("pycocotools",), install="pycocotools: pip install -e '.[tasks]'"),
    MetricInfo("detect_map50", "mAP@.5 against the original's detections", True, "set", "mAP50",
               needs=("features",), state="detect", tolerance=0.02, space="detect", fn="metrics.detect:agreement",
               resample="metrics.detect:map_50", bounds=(0, 1), requires=("pycocotools",),
               install="pycocotools: pip install -e '.[tasks]'"),
]
