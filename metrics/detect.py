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

On MS-COCO with its instance annotations (annotations/instances_<split>.json), the run records each image's
annotated objects in the preprocessed image's pixels (`truth.parquet`; the boxes scaled as the preprocessing
resizes), and per setting also:
- `detect_map_gt`, `detect_map50_gt`: the same COCO mAP against those annotations (torchvision's COCO detectors
  label by COCO's category ids, as the annotations do), and `detect_map_gt_original`, the originals' own mAP
  against them: the ceiling a codec can keep.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from metrics.spec import TRUTH_FIELDS, FeatureSpace, MetricInfo, Stage
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


DETECTION_WIDTH = MAX_DETECTIONS * 6  # an original's stored detections; annotated objects, when recorded, follow


def split_reference(reference_features: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(the originals' detections, the images' annotated objects or None when the run recorded none)."""
    ref = np.asarray(reference_features)
    return ref[:, :DETECTION_WIDTH], (ref[:, DETECTION_WIDTH:] if ref.shape[1] > DETECTION_WIDTH else None)


def objects(row: np.ndarray) -> np.ndarray:
    """One image's ground-truth objects, K x (x1, y1, x2, y2, category, iscrowd, area), without the padding."""
    rows = np.asarray(row, np.float64).reshape(-1, len(TRUTH_FIELDS))
    return rows[~np.isnan(rows[:, 0])]


def pseudo_truth(original_features: np.ndarray, threshold: float = SCORE_THRESHOLD) -> np.ndarray:
    """The originals' detections scored at least `threshold` as ground-truth objects (one row per image)."""
    out = np.full((len(original_features), MAX_DETECTIONS * len(TRUTH_FIELDS)), np.nan)
    for k, row in enumerate(original_features):
        found = detections(row)
        found = found[found[:, 4] >= threshold]
        x1, y1, x2, y2, label = found[:, 0], found[:, 1], found[:, 2], found[:, 3], found[:, 5]
        rows = np.column_stack([x1, y1, x2, y2, label, np.zeros(len(found)), (x2 - x1) * (y2 - y1)])
        out[k, :rows.size] = rows.ravel()
    return out


_EVALUATED: dict = {}  # COCOeval's results by the arrays' digest: a resample's mAP and mAP@.5 share one evaluation


def coco_ap(features: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(mAP@[.5:.95], mAP@.5) of the reconstructions' detections against each image's ground-truth objects, by
    pycocotools' COCOeval; the images are numbered by position, so an image drawn twice by a bootstrap resample
    counts twice. NaN, NaN when no image has an object."""
    import hashlib

    key = hashlib.sha256(np.ascontiguousarray(features).tobytes() + np.ascontiguousarray(truth).tobytes()
                         + repr(truth.shape).encode()).hexdigest()
    if key not in _EVALUATED:
        if len(_EVALUATED) >= 4096:
            _EVALUATED.clear()
        _EVALUATED[key] = _coco_ap(features, truth)
    return _EVALUATED[key]


def _coco_ap(features: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations, found = [], []
    for image, (mine, theirs) in enumerate(zip(features, truth)):
        for x1, y1, x2, y2, category, iscrowd, area in objects(theirs):
            annotations.append({"id": len(annotations) + 1, "image_id": image, "category_id": int(category),
                                "iscrowd": int(iscrowd), "bbox": [x1, y1, x2 - x1, y2 - y1], "area": area})
        found += [{"image_id": image, "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                   "score": score} for x1, y1, x2, y2, score, label in detections(mine)]
    if not annotations:
        return float("nan"), float("nan")
    categories = sorted({a["category_id"] for a in annotations + found})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {"images": [{"id": k} for k in range(len(features))], "annotations": annotations,
                      "categories": [{"id": c} for c in categories]}
        gt.createIndex()
        if not found:
            return 0.0, 0.0
        evaluation = COCOeval(gt, gt.loadRes(found), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0]), float(evaluation.stats[1])


def agreement(features: np.ndarray, reference, state: dict) -> tuple[dict, str]:
    """A setting's mAP against the originals' detections and, where the run recorded the dataset's annotated
    objects, against those (beside the originals' own mAP against them, the ceiling)."""
    threshold = float(state.get("score_threshold", SCORE_THRESHOLD))
    originals, truth = split_reference(reference.features)
    out, notes = {}, []
    ap, ap50 = coco_ap(features, pseudo_truth(originals, threshold))
    if np.isnan(ap):
        notes.append(f"no original has a detection scored at least {threshold}: no pseudo ground truth")
    else:
        out.update({"detect_map": ap, "detect_map50": ap50})
    if truth is not None:
        ap, ap50 = coco_ap(features, truth)
        if np.isnan(ap):
            notes.append("no image of this setting has an annotated object")
        else:
            out.update({"detect_map_gt": ap, "detect_map50_gt": ap50,
                        "detect_map_gt_original": coco_ap(originals, truth)[0]})
    return out, "; ".join(notes)


SPECS = [
    Stage("detect", "none", "auto|none|MODEL|FILE",
          "detection agreement with the original's detections (COCO mAP by pycocotools) per setting: none (default); "
          "auto = torchvision fasterrcnn_resnet50_fpn_v2 with its DEFAULT weights; a torchvision detection model by "
          "name; or a fasterrcnn_resnet50_fpn_v2 state_dict file; originals' detections cached like Inception's",
          "metrics.detect:resolve"),
    FeatureSpace("detect", "Detector", "detect", "metrics.detect:extractor", truth=True),
    MetricInfo("detect_map", "mAP@[.5:.95] against the original's detections", True, "set", "mAP",
               columns=(("n_detect", "float64"),), needs=("features",), state="detect", tolerance=0.02,
               space="detect", fn="metrics.detect:agreement", resample=True, bounds=(0, 1),
               requires=("pycocotools",), install="pycocotools: pip install -e '.[tasks]'"),
    MetricInfo("detect_map50", "mAP@.5 against the original's detections", True, "set", "mAP50",
               needs=("features",), state="detect", tolerance=0.02, space="detect", fn="metrics.detect:agreement",
               resample=True, bounds=(0, 1), requires=("pycocotools",),
               install="pycocotools: pip install -e '.[tasks]'"),
    MetricInfo("detect_map_gt", "mAP@[.5:.95] against the dataset's annotated objects", True, "set", "mAP GT",
               columns=(("detect_map_gt_original", "float64"),), needs=("features", "objects"), state="detect",
               tolerance=0.02, space="detect", fn="metrics.detect:agreement",
               resample=True, bounds=(0, 1), requires=("pycocotools",),
               install="pycocotools: pip install -e '.[tasks]'"),
    MetricInfo("detect_map50_gt", "mAP@.5 against the dataset's annotated objects", True, "set", "mAP50 GT",
               needs=("features", "objects"), state="detect", tolerance=0.02, space="detect",
               fn="metrics.detect:agreement", resample=True, bounds=(0, 1),
               requires=("pycocotools",), install="pycocotools: pip install -e '.[tasks]'"),
]
