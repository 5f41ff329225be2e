"""Every weight file a run uses, listed once from what config.json records about its metrics: the config
hash takes their sha256, and --resume checks that each file is still the one the run started with.

A stage records a file as `<part>_path` beside `<part>_sha256` (Inception's weights, LPIPS's backbone and
linear layers, DISTS's backbone and alpha/beta, CLIP's and pyiqa's weights); DINOv2 records its model folder,
whose weights file is found as the stage found it.
"""

from __future__ import annotations

import os

from benchmark.run.record import RunRecord
from metrics import registry
from metrics.download import file_digest
from metrics.hub import folder_weights


def stages(record: RunRecord) -> dict[str, dict]:
    """The run's metric stages that can hold weights, by a name a sentence can use."""
    out = {"Inception": record.inception, "DINOv2": record.dinov2}
    out.update({name: state for name, state in record.image_metrics.items() if isinstance(state, dict)})
    out.update({name: state for name, state in record.iqa.items() if isinstance(state, dict)})
    out.update({name: record.stage(name) for name in registry.STAGES if record.stage(name)})
    return out


def recorded(record: RunRecord) -> dict[str, tuple[str, str]]:
    """'lpips_vgg backbone' -> (path, sha256) for every weight file an available stage of the run uses."""
    out = {}
    for stage, state in stages(record).items():
        if state.get("status") != "ok":
            continue
        for key, sha in state.items():
            if key.endswith("_sha256") and isinstance(sha, str):
                part = key[:-len("_sha256")]
                path = state.get(f"{part}_path")
                if path is None and stage == "DINOv2" and state.get("model_path"):
                    path = folder_weights(state["model_path"]) or state["model_path"]  # gone: still listed
                if path:  # 'DINOv2' for a stage's one weights file, 'lpips backbone' for one of several
                    out[stage if part == "weights" else f"{stage} {part}"] = (str(path), sha)
    return out


def codec_models(record: RunRecord) -> dict[str, tuple[str, str]]:
    """'cmc captioner' -> (folder, fingerprint of all its files) for every local model folder a codec declares in
    its side information (a `{"model": ..., "fingerprint": ...}` entry at any depth); resume checks them through
    the codec's own side information."""
    out = {}

    def walk(label: str, node, where: list[str]) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("fingerprint"), str) and isinstance(node.get("model"), str):
                out[" ".join([label, *where[:1]])] = (node["model"], node["fingerprint"])
            for key, value in node.items():
                walk(label, value, [*where, key])

    for c in record.codecs:
        walk(c.label, c.side_information, [])
    return out


def changed(record: RunRecord) -> list[str]:
    """A sentence for each recorded weight file that is missing or no longer has its recorded sha256."""
    out = []
    for what, (path, sha) in recorded(record).items():
        try:
            now = file_digest(path) if os.path.isfile(path) else "missing"
        except OSError:
            now = "missing"
        if now != sha:
            out.append(f"the {what} weights at {path} {'are missing' if now == 'missing' else 'changed'}")
    return out
