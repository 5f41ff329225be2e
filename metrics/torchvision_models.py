"""A torchvision task network chosen by one option (`--classify`, `--segment`): `auto` (the default architecture
with its DEFAULT weights), a torchvision model name of the task (its DEFAULT weights), a weights file (a
state_dict of the default architecture), or, for a task that takes timm's models, `timm:NAME`
(metrics.timm_models). Weights are torchvision's files in the torch hub cache, downloaded once;
offline without them the choice is unavailable with one sentence; a misspelt name or a file of another
architecture is a ValueError before any work.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
from dataclasses import dataclass

from metrics import timm_models
from metrics.suggest import did_you_mean

PREPROCESSING = "the weights' transforms() on the uint8 tensor"


@dataclass(frozen=True)
class Task:
    flag: str  # "--classify"
    module: str  # "torchvision.models" or "torchvision.models.segmentation"
    default: str  # "resnet50"
    what: str  # "classification agreement"
    build: tuple[tuple[str, object], ...] = ()  # keyword arguments the architecture is built with
    timm: bool = False  # `timm:NAME` chooses a timm model of the task

    def weights(self, arch: str, choice: str):
        """torchvision's DEFAULT weights of `arch`; ValueError naming a close name if it is not a model here."""
        import torchvision

        module = importlib.import_module(self.module)
        known = torchvision.models.list_models(module=module)
        if arch not in known:
            close = did_you_mean(arch, known)
            raise ValueError(f"{self.flag} {choice}: no such file, and not a torchvision model of this task; {close}"
                             f"give auto, one of {', '.join(known[:4])}, ..., or a weights file.")
        return torchvision.models.get_model_weights(arch).DEFAULT

    def network(self, arch: str, path: str):
        """The architecture with the weights file loaded strictly; ValueError in one sentence if they do not fit."""
        import torch
        import torchvision

        accepted = inspect.signature(torchvision.models.get_model_builder(arch)).parameters
        kwargs = {k: v for k, v in self.build if k in accepted}
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if "aux_loss" in accepted:  # segmentation: an auxiliary head is in some files and not in others
                kwargs["aux_loss"] = any(k.startswith("aux_classifier.") for k in state)
            model = torchvision.models.get_model(arch, weights=None, **kwargs)
            model.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - not a state_dict, or one of another architecture
            first = str(exc).strip().splitlines()[0].rstrip(":.")
            raise ValueError(f"{self.flag} {path}: not a state_dict of torchvision's {arch} ({first}).") from None
        return model.eval()

    def resolve(self, choice: str, progress: bool = False) -> dict:
        """What a run records about the network: the model, its weights file and sha256, or why there is none."""
        from metrics.download import file_digest, hub_download

        if self.timm and choice.startswith(timm_models.PREFIX):
            return timm_models.resolve(self.flag, choice, self.what)
        if any(importlib.util.find_spec(m) is None for m in ("torch", "torchvision")):
            return {"status": "unavailable", "reason": f"{self.what} needs torch and torchvision: "
                                                       "pip install -e '.[inception]'"}
        path = os.path.expanduser(choice)
        if os.path.isfile(path):
            self.network(self.default, path)
            arch, weights, model = self.default, self.weights(self.default, choice), f"{self.default} (weights file)"
        else:
            arch = self.default if choice == "auto" else choice
            weights, model = self.weights(arch, choice), arch
            prefix = re.search(r"-([a-f0-9]+)\.", weights.url.rsplit("/", 1)[1])
            try:
                path = hub_download(weights.url, prefix.group(1) if prefix else None, progress)
            except OSError as exc:
                return {"status": "unavailable", "reason": f"no weights for {self.flag} {choice}: {exc}; download it "
                                                           f"on a machine with internet, or pass a {self.default} "
                                                           "state_dict file"}
        return {"status": "ok", "model": model, "arch": arch,
                "transforms": f"{type(weights).__name__}.{weights.name}", "weights_path": os.path.abspath(path),
                "weights_sha256": file_digest(path), "preprocessing": PREPROCESSING}

    def load(self, state: dict, device: str):
        """(network on `device`, a function preparing one H x W x 3 uint8 image, device), the weights file checked
        against the run's record."""
        import numpy as np
        import torch
        import torchvision

        from metrics.defaults import pick_device
        from metrics.download import file_digest

        if file_digest(state["weights_path"]) != state["weights_sha256"]:
            raise RuntimeError(f"The weights {state['weights_path']} of {self.flag} changed since this run started.")
        device = pick_device(device)
        if state.get("library") == "timm":
            model, preprocess = timm_models.load(state)
            return model.to(device), preprocess, device
        transforms = torchvision.models.get_weight(state["transforms"]).transforms()
        return (self.network(state["arch"], state["weights_path"]).to(device),
                lambda image: transforms(torch.from_numpy(np.require(image, np.uint8, ["C", "W"])).permute(2, 0, 1)),
                device)


class Network:
    """A task's network as a feature extractor: built once per process from the run's record, on its device;
    counts every image sent through it. Subclasses set `task` and define `__call__(images)`."""

    task: Task

    def __init__(self, state: dict, device: str, batch_size: int):
        import torch

        self.torch = torch
        self.model, self.preprocess, self.device = self.task.load(state, device)
        self.batch_size = batch_size
        self.passes = 0

