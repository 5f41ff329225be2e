"""A run as one typed object: config.json read once into dataclasses and read by attribute, not by string key.

config.json stays its serialised form: `RunRecord.from_json(d).to_json() == d` for every config.json, of this
version or an earlier one. The keys a record types are attributes; every other key travels untouched in `rest`,
and a key the file did not have stays absent when written back (`present` lists the typed keys it had) unless it
was given a value other than its default since. `JsonRecord` is that rule, for any part of config.json (the run's
Inception and DINOv2 options are records too).
"""

from __future__ import annotations

import json
import pathlib
import shlex
from dataclasses import MISSING, dataclass, field, fields

from benchmark.run.integrity import DamagedFile
from benchmark.run.run_folder import SEAL


@dataclass(frozen=True)
class JsonRecord:
    """A JSON object with typed attributes: see the module's docstring."""
    rest: dict = field(default_factory=dict, repr=False)  # the keys this record does not type, as written
    present: frozenset | None = field(default=None, repr=False)  # the typed keys the JSON had (None: every one)

    @classmethod
    def typed(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name not in ("rest", "present")]

    @classmethod
    def from_json(cls, d: dict):
        typed = set(cls.typed())
        values = {k: _load(cls, k, v) for k, v in d.items() if k in typed}
        return cls(**values, rest={k: v for k, v in d.items() if k not in typed}, present=frozenset(values))

    def has(self, key: str) -> bool:
        """Whether the JSON had this typed key (a record made here has every one)."""
        return key in (self.typed() if self.present is None else self.present)

    def to_json(self) -> dict:
        defaults = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(self)}
        out = {k: _dump(getattr(self, k)) for k in self.typed()
               if self.present is None or k in self.present or getattr(self, k) != defaults[k]}
        out.update(self.rest)
        return out


def _load(cls, key: str, value):
    nested = getattr(cls, "_nested", {}).get(key)
    if nested is None or value is None:
        return value
    return tuple(nested.from_json(v) for v in value) if isinstance(value, list) else nested.from_json(value)


def _dump(value):
    if isinstance(value, JsonRecord):
        return value.to_json()
    if isinstance(value, tuple) and all(isinstance(v, JsonRecord) for v in value):
        return [v.to_json() for v in value]
    return value


@dataclass(frozen=True)
class DatasetRecord(JsonRecord):
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
class CodecRecord(JsonRecord):
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
    # How its tasks are planned and run
    parallel: bool = True  # False: it runs in the main process only
    wants_gpu: bool | None = None  # absent in runs made before it was recorded
    batched: bool = False
    batch_size: int = 1
    model_per_setting: bool = False
    task_images: int | None = None  # images per task, fixed when the run was created (absent in older runs)
    samples: int = 1  # decodes per bitstream (a stochastic decoder's K samples)
    produced_outside: bool = False
    columns: dict = field(default_factory=dict)  # the row columns it adds, with their types

    @property
    def on_gpu(self) -> bool:
        """Whether its tasks go to a GPU (a run from before `wants_gpu`: the codecs that ran in the main process)."""
        return self.wants_gpu if self.wants_gpu is not None else not self.parallel


@dataclass(frozen=True)
class RunRecord(JsonRecord):
    """What was run, on which data, by which code and weights, and which metrics it could compute."""
    _nested = {"dataset": DatasetRecord, "codecs": CodecRecord}

    run_id: str = ""
    created: str = ""
    config_hash: str | None = None
    git_sha: str | None = None
    git_date: str | None = None
    versions: dict = field(default_factory=dict)  # package -> version
    config: dict = field(default_factory=dict)  # the RunConfig as written (RunConfig.from_json parses it)
    dataset: DatasetRecord = field(default_factory=DatasetRecord)
    codecs: tuple[CodecRecord, ...] = ()
    metrics: dict = field(default_factory=dict)  # metric -> {"status": ok | unavailable | disabled, "reason": ...}
    inception: dict = field(default_factory=dict)  # each metric stage's resolution: status, weights, reason
    dinov2: dict = field(default_factory=dict)
    iqa: dict = field(default_factory=dict)
    image_metrics: dict = field(default_factory=dict)
    caption_embedder: dict = field(default_factory=dict)
    feature_caches: dict = field(default_factory=dict)  # feature space -> where its originals' features are cached
    schema: list = field(default_factory=list)  # [[column, type], ...] of the run's rows

    def codec(self, label: str) -> CodecRecord | None:
        return next((c for c in self.codecs if c.label == label), None)

    def metric_state(self, metric: str) -> dict:
        """{"status": ..., "reason": ...} of one metric; {} for a run from before metric states were recorded."""
        return self.metrics.get(metric) or {}

    def stage(self, path: str) -> dict:
        """A metric stage's resolution at its config.json key ('inception', 'image_metrics.clip', or a metric
        file's Stage under its own name); {} when the run did not request it."""
        first, *more = path.split(".")
        node = getattr(self, first) if first in self.typed() else self.rest.get(first)
        for part in more:
            node = node.get(part) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else {}


def read_record(run_dir: str | pathlib.Path) -> RunRecord:
    """A run folder's config.json as a RunRecord; one that is not a JSON object is named as damaged, with the way
    back (the sealed copy cmcbench wrote beside it), rather than as a JSON parser's message about no file."""
    path = pathlib.Path(run_dir) / "config.json"
    try:
        data = json.loads(path.read_bytes())
        why = "" if isinstance(data, dict) else f"not a JSON object but a {type(data).__name__}"
    except ValueError as exc:  # invalid JSON, or not UTF-8
        why = f"not valid JSON: {exc}"
    if why:
        raise DamagedFile(path, f"{why}; {_way_back(pathlib.Path(run_dir))}")
    return RunRecord.from_json(data)


def _way_back(run_dir: pathlib.Path) -> str:
    sealed = run_dir / SEAL
    try:
        usable = isinstance(json.loads(sealed.read_bytes()), dict)
    except (OSError, ValueError):
        usable = False
    return (f"its sealed copy holds what cmcbench wrote: cp {shlex.quote(str(sealed))} "
            f"{shlex.quote(str(run_dir / 'config.json'))}" if usable else "cmcbench cannot rebuild it: restore the run "
            "from a copy")
