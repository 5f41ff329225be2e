"""A run as one typed object: config.json read once into dataclasses and read by attribute, not by string key.

config.json stays its serialised form: `RunRecord.from_json(d).to_json() == d` for every config.json, of this
version or an earlier one. The keys a record types are attributes; every other key travels untouched in `rest`,
and a key the file did not have stays absent when written back (`present` lists the typed keys it had).
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class _Record:
    rest: dict = field(default_factory=dict, repr=False)  # the keys this record does not type, as written
    present: frozenset = field(default=frozenset(), repr=False)  # the typed keys the JSON object had

    @classmethod
    def from_json(cls, d: dict):
        typed = {f.name for f in fields(cls)} - {"rest", "present"}
        values = {k: _load(cls, k, v) for k, v in d.items() if k in typed}
        return cls(**values, rest={k: v for k, v in d.items() if k not in typed}, present=frozenset(values))

    def to_json(self) -> dict:
        out = {k: _dump(getattr(self, k)) for k in self.present}
        out.update(self.rest)
        return out


def _load(cls, key: str, value):
    nested = getattr(cls, "_nested", {}).get(key)
    if nested is None or value is None:
        return value
    return tuple(nested.from_json(v) for v in value) if isinstance(value, list) else nested.from_json(value)


def _dump(value):
    if isinstance(value, _Record):
        return value.to_json()
    if isinstance(value, tuple) and all(isinstance(v, _Record) for v in value):
        return [v.to_json() for v in value]
    return value


@dataclass(frozen=True)
class DatasetRecord(_Record):
    """The evaluated images as the run recorded them (after its image list, limit and preprocessing)."""
    name: str = ""
    split: str = ""
    n_images: int = 0
    fingerprint: str = ""
    kind: str = ""
    preprocess: str | None = None  # absent in runs made before preprocessing was recorded

    @property
    def label(self) -> str:
        """'name/split (N images)', how tables and plots name the data a number rests on."""
        return f"{self.name}/{self.split} ({self.n_images} images)"


@dataclass(frozen=True)
class CodecRecord(_Record):
    """One codec of the run: its spec as resolved, its rate parameter and what its decoder may share."""
    label: str = ""
    target: str = ""
    options: dict = field(default_factory=dict)
    settings: list = field(default_factory=list)
    rate_parameter: str | None = None
    exact_size: bool = True  # False: a generative codec, whose reconstructions are samples, not its input's pixels
    versions: dict | list = field(default_factory=dict)
    side_information: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)  # what the user should know of how it ran (printed when created)


@dataclass(frozen=True)
class RunRecord(_Record):
    """What was run, on which data, by which code and weights, and which metrics it could compute."""
    _nested = {"dataset": DatasetRecord, "codecs": CodecRecord}

    run_id: str = ""
    created: str = ""
    config_hash: str | None = None
    git_sha: str | None = None
    git_date: str | None = None
    versions: dict = field(default_factory=dict)  # package -> version
    config: dict = field(default_factory=dict)  # the RunConfig as written (run_config() parses it)
    dataset: DatasetRecord = field(default_factory=DatasetRecord)
    codecs: tuple[CodecRecord, ...] = ()
    metrics: dict = field(default_factory=dict)  # metric -> {"status": ok | unavailable | disabled, "reason": ...}
    inception: dict = field(default_factory=dict)  # each metric stage's resolution: status, weights, reason
    dinov2: dict = field(default_factory=dict)
    iqa: dict = field(default_factory=dict)
    image_metrics: dict = field(default_factory=dict)
    caption_embedder: dict = field(default_factory=dict)

    def codec(self, label: str) -> CodecRecord | None:
        return next((c for c in self.codecs if c.label == label), None)

    def metric_state(self, metric: str) -> dict:
        """{"status": ..., "reason": ...} of one metric; {} for a run from before metric states were recorded."""
        return self.metrics.get(metric) or {}

    def stage(self, path: str) -> dict:
        """A metric stage's resolution at its config.json key ('inception', 'image_metrics.clip', or a metric
        file's Stage under its own name); {} when the run did not request it."""
        first, *more = path.split(".")
        node = getattr(self, first) if first in self.present else self.rest.get(first)
        for part in more:
            node = node.get(part) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else {}

    def run_config(self):
        """The configuration as a RunConfig (for a run this version can resume)."""
        from benchmark.run.config import RunConfig

        return RunConfig.from_json(self.config)


def read_record(run_dir: str | pathlib.Path) -> RunRecord:
    """A run folder's config.json as a RunRecord."""
    with open(pathlib.Path(run_dir) / "config.json") as f:
        return RunRecord.from_json(json.load(f))
