"""Accuracy against the dataset's labels, with a classifier trained for them: does a bird-species classifier still
name the right species from the reconstruction, and from the original beside it? (Classification agreement,
metrics/classify.py, needs no labels; this needs labels and a classifier of the dataset's classes.)

`--classifier FILE` is a state_dict of torchvision's resnet50 whose last layer has one output per class, with its
class list beside it: FILE with the suffix `.txt`, one class name per line in the order of the outputs (CUB's
folder names, '001.Black_footed_Albatross', or the names themselves). Outputs are matched to the dataset's
classes by name (case, underscores and a leading number aside); images go through ImageNet's preprocessing (the
transforms of torchvision's IMAGENET1K_V2 weights: resize 232, centre crop 224, normalisation).

Per image, on a labelled dataset (CUB-200-2011's species, the sample set's background colours):
- `classifier_reconstruction`: 1 when the classifier names the image's label from the reconstruction;
- `classifier_original`: the same for the original (the ceiling; each original once per run, kept across its
  settings).
An image whose class is not in the classifier's list is NaN with that reason, never counted as wrong.
"""

from __future__ import annotations

import os
import pathlib
import re

import numpy as np

from metrics.spec import MetricInfo, Stage

ARCH = "resnet50"
TRANSFORMS = "ResNet50_Weights.IMAGENET1K_V2"
NO_LABELS = "accuracy against labels needs a dataset with class labels (cub:PATH: CUB-200-2011's species; sample)"


def class_list(weights: str | os.PathLike) -> pathlib.Path:
    """Where a classifier's class list lies: beside its weights, with the suffix .txt."""
    return pathlib.Path(weights).with_suffix(".txt")


def class_key(name: str) -> str:
    """A class name as outputs and dataset classes are matched: '001.Black_footed_Albatross' ->
    'black footed albatross'."""
    return " ".join(re.sub(r"^\d+\.", "", name.strip()).replace("_", " ").lower().split())


def _names(path: pathlib.Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def network(weights: str, n_classes: int):
    """resnet50 with `n_classes` outputs and the file's weights, strictly; ValueError in one sentence if not."""
    import torch
    import torchvision

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        outputs = state["fc.weight"].shape[0] if "fc.weight" in state else None
        if outputs is not None and outputs != n_classes:
            raise ValueError(f"its last layer has {outputs} outputs but {class_list(weights).name} names "
                             f"{n_classes} classes")
        model = torchvision.models.get_model(ARCH, weights=None, num_classes=n_classes)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - not a state_dict, or one of another architecture
        first = str(exc).strip().splitlines()[0].rstrip(":.")
        raise ValueError(f"--classifier {weights}: not a state_dict of torchvision's {ARCH} for its class list "
                         f"({first}).") from None
    return model.eval()


def resolve(choice: str, cache_root, progress: bool = False) -> dict:
    """What a run records about its classifier (the weights and the class list, each with its sha256), or why
    it has none; a file that can never work is a ValueError before any work."""
    import importlib.util

    from metrics.download import file_digest

    if any(importlib.util.find_spec(m) is None for m in ("torch", "torchvision")):
        return {"status": "unavailable", "reason": "--classifier needs torch and torchvision: "
                                                   "pip install -e '.[inception]'"}
    path = os.path.abspath(os.path.expanduser(choice))
    if not os.path.isfile(path):
        raise ValueError(f"--classifier {choice}: no such file; give a {ARCH} state_dict trained for the dataset's "
                         "classes, with its class list beside it (the same name with .txt).")
    names = class_list(path)
    if not names.is_file() or not _names(names):
        raise ValueError(f"--classifier {choice}: its class list {names} is missing or empty; write the class "
                         "names there, one per line, in the order of the classifier's outputs.")
    n_classes = len(_names(names))
    network(path, n_classes)
    return {"status": "ok", "model": f"{ARCH} ({n_classes} classes, weights file)", "arch": ARCH,
            "n_classes": n_classes, "transforms": TRANSFORMS, "weights_path": path,
            "weights_sha256": file_digest(path), "classes_path": str(names), "classes_sha256": file_digest(names),
            "preprocessing": "ImageNet's: the transforms of torchvision's IMAGENET1K_V2 weights"}


class LabelClassifier:
    """The classifier on the run's device, with its outputs matched to a dataset's classes."""

    def __init__(self, state: dict, device: str):
        import torch
        import torchvision

        from metrics.defaults import pick_device
        from metrics.download import file_digest

        for part in ("weights", "classes"):
            if file_digest(state[f"{part}_path"]) != state[f"{part}_sha256"]:
                raise RuntimeError(f"The {part} file {state[f'{part}_path']} of --classifier changed since this run "
                                   "started.")
        self.torch, self.device = torch, pick_device(device)
        self.names = _names(pathlib.Path(state["classes_path"]))
        self.model = network(state["weights_path"], len(self.names)).to(self.device)
        self.transforms = torchvision.models.get_weight(state["transforms"]).transforms()
        self.passes = 0
        self._matched: dict[tuple[str, ...], np.ndarray] = {}

    def dataset_labels(self, classes: tuple[str, ...]) -> np.ndarray:
        """For each output, the dataset label of the same name (-1 where the dataset has no such class); matched
        once per class list, not once per image."""
        if classes not in self._matched:
            index = {class_key(name): k for k, name in enumerate(classes)}
            self._matched[classes] = np.array([index.get(class_key(name), -1) for name in self.names])
        return self._matched[classes]

    def known(self, classes: tuple[str, ...]) -> set[int]:
        return set(self.dataset_labels(classes).tolist()) - {-1}

    def predict(self, image: np.ndarray, classes: tuple[str, ...]) -> int:
        """The dataset label the classifier gives `image` (-1 for an output the dataset does not have)."""
        tensor = self.torch.from_numpy(np.require(image, np.uint8, ["C", "W"])).permute(2, 0, 1)
        with self.torch.inference_mode():
            logits = self.model(self.transforms(tensor)[None].to(self.device))
        self.passes += 1
        return int(self.dataset_labels(classes)[int(logits.argmax())])


def load(state: dict, device: str = "cpu") -> LabelClassifier:
    return LabelClassifier(state, device)


def _why_not(model: LabelClassifier, cache: dict) -> str:
    """Why this image has no accuracy ('' when it has one)."""
    if cache.get("label") is None or not cache.get("classes"):
        return NO_LABELS
    if isinstance(cache["label"], tuple):
        return "accuracy against one label needs a single-label dataset (an MS-COCO image has several categories)"
    if cache["label"] not in model.known(cache["classes"]):
        return f"its class {cache['classes'][cache['label']]!r} is not one of the classifier's classes"
    return ""


def reconstruction_correct(model: LabelClassifier, original, reconstruction, cache: dict):
    if why := _why_not(model, cache):
        return float("nan"), why
    return float(model.predict(reconstruction, cache["classes"]) == cache["label"])


def original_correct(model: LabelClassifier, original, reconstruction, cache: dict):
    if why := _why_not(model, cache):
        return float("nan"), why
    if "classifier-original" not in cache:
        cache["classifier-original"] = model.predict(original, cache["classes"])
    return float(cache["classifier-original"] == cache["label"])


SPECS = [
    Stage("classifier", "none", "none|FILE",
          f"accuracy against the dataset's labels (CUB's species) with a {ARCH} state_dict trained for them, its "
          "class list beside it (FILE with .txt, one name per line in output order): none (default) or FILE",
          "metrics.classifier:resolve"),
    *(MetricInfo(f"classifier_{name}", label, True, "network", short,
                 needs=("pixels", "labels", "network:classifier"), state="classifier", tolerance=0.02,
                 fn=f"metrics.classifier:{fn}", load="metrics.classifier:load", bounds=(0, 1))
      for name, label, short, fn in (
          ("reconstruction", "Classifier accuracy on the reconstruction (dataset labels)", "Acc. rec.",
           "reconstruction_correct"),
          ("original", "Classifier accuracy on the original (dataset labels)", "Acc. orig.", "original_correct"))),
]
