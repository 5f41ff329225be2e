"""No-reference and learned full-reference image quality through pyiqa, and CMC-Bench's overall score.

Each metric is pyiqa's own model (`pyiqa.create_metric`), called on the reconstruction (and, for
full-reference ones, the original) as pyiqa's API takes them: float RGB in [0, 1], N x 3 x H x W.
Weights: `--iqa-weights NAME=PATH` (CMC-Bench's fine-tuned TOPIQ files, say), else pyiqa's default file
in pyiqa's cache (`$TORCH_HOME/hub/pyiqa`), downloaded once where there is internet. The file is passed to
pyiqa explicitly, so the run records which weights it used (path and sha256).

`cmc_bench_overall` is CMC-Bench's score, 2/3 TOPIQ-FR + 1/3 TOPIQ-NR (their script-evaluate.py), per
image; its mean over images is their formula on the means. CMC-Bench's script calls TOPIQ-FR as
metric(ground truth, output), which pyiqa reads as (target, reference); cmcbench calls it as pyiqa
documents, metric(reconstruction, original).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
from dataclasses import dataclass

import numpy as np

from metrics.spec import MetricInfo, Option

HF = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"


@dataclass(frozen=True)
class IQAMetric:
    name: str  # pyiqa's name, and cmcbench's column
    label: str
    higher_is_better: bool
    full_reference: bool
    urls: tuple[tuple[str, str], ...]  # (pyiqa cache folder, URL) of the files pyiqa's default loads
    weights_option: str = "pretrained_model_path"  # the create_metric argument that takes a local file
    tolerance: float = 0.01


METRICS = {m.name: m for m in [
    IQAMetric("topiq_fr", "TOPIQ-FR (pyiqa, KADID)", True, True, (("pyiqa", HF + "cfanet_fr_kadid_res50-2c4cc61d.pth"),)),
    IQAMetric("topiq_nr", "TOPIQ-NR (pyiqa, KonIQ)", True, False, (("pyiqa", HF + "cfanet_nr_koniq_res50-9a73138b.pth"),)),
    IQAMetric("musiq", "MUSIQ (pyiqa, KonIQ)", True, False, (("pyiqa", HF + "musiq_koniq_ckpt-e95806b9.pth"),),
              tolerance=0.5),
    IQAMetric("niqe", "NIQE (pyiqa)", False, False, (("pyiqa", HF + "niqe_modelparameters.mat"),), tolerance=0.05),
    IQAMetric("clipiqa", "CLIP-IQA (pyiqa, CLIP RN50)", True, False, (
        ("clip", "https://openaipublic.azureedge.net/clip/models/"
                 "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt"),),
              weights_option="backbone"),
]}
OVERALL = "cmc_bench_overall"
OVERALL_PARTS = ("topiq_fr", "topiq_nr")


class IQAUnavailable(RuntimeError):
    """A pyiqa metric cannot be computed here; the message says how to fix that."""


def get(name: str) -> IQAMetric:
    if name not in METRICS:
        raise ValueError(f"--iqa {name}: not a metric cmcbench runs through pyiqa; choose from "
                         f"{', '.join(METRICS)}.")
    return METRICS[name]


def parse_names(text: str, configuration: dict) -> list[str]:
    """--iqa's comma-separated names, each one of METRICS."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    for name in names:
        get(name)
    return names


def parse_weights(pairs: list[str], configuration: dict) -> dict[str, str]:
    """--iqa-weights' NAME=PATH pairs, each naming a metric the run scores with (`configuration["iqa"]`) and a file."""
    names, weights = configuration["iqa"], {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not path:
            raise ValueError(f"--iqa-weights {pair!r}: expected NAME=PATH, e.g. topiq_fr=Weight/topiq-fr.pth.")
        if name not in names:
            raise ValueError(f"--iqa-weights {name}=...: {name} is not among --iqa {','.join(names) or '(none)'}.")
        if not os.path.isfile(os.path.expanduser(path)):
            raise ValueError(f"--iqa-weights {name}={path}: no such file.")
        weights[name] = path
    return weights


def _hash_prefix(url: str) -> str | None:
    """The sha256 a file's URL promises: pyiqa's '-1234abcd.pth' suffix, or OpenAI's full digest folder."""
    found = re.search(r"-([0-9a-f]{8})\.\w+$", url) or re.search(r"/([0-9a-f]{64})/[^/]+$", url)
    return found.group(1) if found else None


def weights(name: str, path: str | None = None, progress: bool = False) -> str:
    """The local file a metric's weights come from: `path`, else pyiqa's default in its cache, downloaded
    once where there is internet; IQAUnavailable with one sentence when none can be had."""
    metric = get(name)
    if path:
        if not os.path.isfile(os.path.expanduser(path)):
            raise IQAUnavailable(f"--iqa-weights {name}={path}: no such file.")
        return os.path.abspath(os.path.expanduser(path))
    from metrics import download

    (folder, url), = metric.urls
    try:
        return download.hub_download(url, _hash_prefix(url), progress, folder)
    except OSError as exc:
        raise IQAUnavailable(f"no weights for {name}: {exc}. Download the file on a machine with internet into "
                             f"that folder, or pass --iqa-weights {name}=PATH.") from None


def resolve(names: list[str], paths: dict[str, str], progress: bool = False) -> dict:
    """What a run records about each pyiqa metric (weights path and sha256, or why not), and the overall score."""
    from metrics.download import file_digest

    out: dict = {}
    installed = importlib.util.find_spec("pyiqa") is not None
    for name in METRICS:
        if name not in names:
            out[name] = {"status": "disabled", "reason": f"not requested (--iqa {name})"}
        elif not installed:
            out[name] = {"status": "unavailable", "reason": f"{name} needs pyiqa: pip install -e '.[iqa]'"}
        else:
            try:
                path = weights(name, paths.get(name), progress)
            except IQAUnavailable as exc:
                out[name] = {"status": "unavailable", "reason": str(exc)}
                continue
            from importlib import metadata

            out[name] = {"status": "ok", "name": name, "weights_path": path, "weights_sha256": file_digest(path),
                         "pyiqa": metadata.version("pyiqa")}
            if name.startswith("topiq"):  # checked once per run, not in every process that loads the metric
                # pyiqa's own files load strictly, so they hold the backbone; a given file is looked into
                out[name]["backbone_in_file"] = not paths.get(name) or _covers_backbone(path)
    parts = [out[p] for p in OVERALL_PARTS]
    if not all(p in names for p in OVERALL_PARTS):
        out[OVERALL] = {"status": "disabled", "reason": "needs --iqa topiq_fr,topiq_nr"}
    elif all(p["status"] == "ok" for p in parts):
        out[OVERALL] = {"status": "ok", "formula": "2/3 topiq_fr + 1/3 topiq_nr (CMC-Bench)"}
    else:
        out[OVERALL] = {"status": "unavailable", "reason": "; ".join(p["reason"] for p in parts if p.get("reason"))}
    return out


class PyIQA:
    """One pyiqa metric on the run's device, its weights from the file the run recorded."""

    def __init__(self, name: str, state: dict, device: str = "cpu"):
        import pyiqa
        import torch

        self.torch, self.metric = torch, get(name)
        kwargs = {self.metric.weights_option: state["weights_path"]}
        if state.get("backbone_in_file"):
            kwargs["backbone_pretrain"] = False  # the file holds the backbone too: ImageNet's would be overwritten
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # pyiqa prints each load
            self.model = pyiqa.create_metric(name, device=device, **kwargs)
        self.device = device

    def tensor(self, image: np.ndarray):
        x = self.torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float().div(255)
        return x.to(self.device)

    def __call__(self, reconstruction: np.ndarray, original: np.ndarray | None = None) -> float:
        with self.torch.inference_mode():
            if self.metric.full_reference:
                value = self.model(self.tensor(reconstruction), self.tensor(original))
            else:
                value = self.model(self.tensor(reconstruction))
        return float(value.reshape(-1)[0])


def _covers_backbone(path: str) -> bool:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False)
    state = state.get("params", state) if isinstance(state, dict) else state
    return any("semantic_model." in k for k in state)


def load(state: dict, device: str = "cpu"):
    return PyIQA(state["name"], state, device)


def score(model: PyIQA, original: np.ndarray, reconstruction: np.ndarray, cache: dict) -> float:
    value = model(reconstruction, original)
    cache.setdefault("row", {})[model.metric.name] = value
    return value


def no_model(state: dict, device: str = "cpu") -> None:
    return None


def overall(model, original, reconstruction, cache: dict):
    """CMC-Bench's overall score from this row's TOPIQ-FR and TOPIQ-NR (computed just before it)."""
    row = cache.get("row", {})
    if any(not np.isfinite(row.get(p, np.nan)) for p in OVERALL_PARTS):
        return float("nan"), f"{OVERALL} unavailable: topiq_fr or topiq_nr failed on this image"
    return 2 / 3 * row["topiq_fr"] + 1 / 3 * row["topiq_nr"]


SPECS = [
    *[MetricInfo(m.name, m.label, m.higher_is_better, "network", m.name.upper().replace("_", "-"),
                 needs=("pixels", f"network:{m.name}"), state=f"iqa.{m.name}", tolerance=m.tolerance,
                 fn="metrics.iqa:score", load="metrics.iqa:load") for m in METRICS.values()],
    MetricInfo(OVERALL, "CMC-Bench overall (2/3 TOPIQ-FR + 1/3 TOPIQ-NR)", True, "network", "CMC-Bench",
               needs=("pixels", "network:topiq_fr", "network:topiq_nr"), state=f"iqa.{OVERALL}", tolerance=0.01,
               fn="metrics.iqa:overall", load="metrics.iqa:no_model"),
    Option("--iqa", "iqa", "", metavar="NAMES", parse="metrics.iqa:parse_names",
           help="image quality through pyiqa (pip install -e '.[iqa]'), comma-separated: topiq_fr, "
                "topiq_nr, musiq, niqe, clipiqa; topiq_fr,topiq_nr also gives cmc_bench_overall "
                "(CMC-Bench: 2/3 FR + 1/3 NR). Weights from pyiqa's cache, downloaded once, or --iqa-weights"),
    Option("--iqa-weights", "iqa_weights", [], metavar="NAME=PATH", append=True, parse="metrics.iqa:parse_weights",
           help="a local weights file for a pyiqa metric (repeatable), e.g. CMC-Bench's topiq_fr=Weight/topiq-fr.pth"),
]
