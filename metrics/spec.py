"""What a metric and a feature space declare about themselves: the dataclasses a metric's own file fills in.

A module of this package that holds a module-level `SPECS` list of MetricInfo and FeatureSpace entries is a
metric file: the registry (`metrics.registry`) finds it and collects its entries, so adding a metric is one
new file. The run, the schema, the summary, plots, leaderboard, bootstrap, compare and report read the entries.

Kinds:
- `rate`: bpp, written by the producer from the bitstream.
- `pixels`: per image, a pure function of (original, reconstruction): `fn(original, reconstruction)`
  returns a float, or (float, note) where the note says why the value is NaN.
- `network`: per image, from a network's features: `fn(model, original, reconstruction, cache)`, with the
  model built once per process by `load(state, device)` (shared by metrics with the same loader and state);
  `cache` keeps an original's features across its settings and holds the row's `captions`, `text` and a
  fresh `row` dict for what several metrics share about one reconstruction.
- `text`: per image, for codecs that transmit text: `fn(text, reference_captions, state)`.
- `features`: per image, from the Inception stage's stored features (IPD).
- `set`: per setting, from stored per-image features. Inception's (IS, FID, KID, patch FID) are computed by
  the Inception stage; a set metric that names a feature `space` is computed by the one feature stage for any
  space: `fn(features, reference, state)`, with `reference` a `metrics.fid.FIDReference` of the originals'
  features, returns a float, a dict of columns, or either with a note.

`state` names the key of the run's config.json that records availability (`status` ok, disabled or
unavailable, with a `reason`); a metric whose state is not ok is written as NaN with that reason, never 0.

A metric file whose metrics need a network of their own declares it as a `Stage` beside them: its command-line
option (flag, default, help), and the function that resolves the user's choice into what config.json records
(the model, its weights file and sha256, or why it is unavailable). The command line, the run's configuration,
its config hash, resume's weights check, the console summary and the report read the stages from the registry.
A further option of its metrics (DINOv2's PRDC neighbourhood size, KID's subsets, the pyiqa metrics to score with
and their weights files, the caption embedder) is an `Option`: the command line declares it, checks it with the
function the Option names, and fills the part of the run's configuration it names.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable

TRUTH_FIELDS = ("x1", "y1", "x2", "y2", "category", "iscrowd", "area")  # an annotated object, as a truth row
KINDS = ("rate", "pixels", "network", "text", "features", "set")
PER_IMAGE_KINDS = ("rate", "pixels", "network", "text", "features")


def resolve(target: str) -> Callable[..., Any]:
    """The function a spec names as 'module:function'."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class MetricInfo:
    column: str
    label: str
    higher_is_better: bool
    kind: str = "pixels"
    short: str = ""  # a short header for tables
    columns: tuple[tuple[str, str], ...] = ()  # further columns it writes, (name, arrow type name)
    # "pixels", "captions", "labels", "objects" (instance annotations), "transmitted text", "network:<name>", "features"
    needs: tuple[str, ...] = ()
    state: str = ""  # where config.json records its availability ("" = always available)
    tolerance: float | str = 0.0  # default allowed worsening in `compare` (absolute, or "x%" relative)
    fn: str = ""  # "module:function", the pure function (per-image kinds; set metrics of a feature space)
    load: str = ""  # "module:function" building the network once per process (kind network)
    default: bool = True  # computed unless asked not to; False: only with --add-metric NAME
    dtype: str = "float64"
    # Averages (summary, bootstrap, tables) clip per-image values at this cap, which marks a lossless image
    # (PSNR of identical images is inf): one lossless image must not turn a mean into inf. The per-image
    # value itself is kept exact; the summary counts the images at the cap (`n_lossless`).
    cap: float | None = None
    requires: tuple[str, ...] = ()  # Python modules it imports; missing: unavailable, saying to install ...
    install: str = ""  # ... this ('the psnr-hvsm package: pip install psnr-hvsm')
    space: str = ""  # a set metric's feature space (a FeatureSpace's name)
    resample: bool = False  # recomputed on each bootstrap resample's features, by `fn` (as the summary computes it)
    bounds: tuple[float, float] | None = None  # the values it can take (a share: 0..1); intervals are clipped to them
    group: str = ""  # metrics asked for together: `--add-metric GROUP` adds each of them

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Metric {self.column!r}: kind must be one of {', '.join(KINDS)}, not {self.kind!r}.")

    @property
    def per_image(self) -> bool:
        return self.kind in PER_IMAGE_KINDS

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    def all_columns(self) -> list[tuple[str, str]]:
        return [(self.column, self.dtype), *self.columns]

    def function(self) -> Callable[..., Any]:
        return resolve(self.fn)

    def loader(self) -> Callable[..., Any]:
        return resolve(self.load)

    def missing(self) -> str:
        """Why this metric cannot be computed in this environment ('' when it can)."""
        import importlib.util

        absent = [m for m in self.requires if importlib.util.find_spec(m) is None]
        return f"{self.short or self.column} needs {self.install or ', '.join(absent)}" if absent else ""


@dataclass(frozen=True)
class FeatureSpace:
    """A network's per-image features that set metrics compare (a Frechet distance, k-NN precision and recall):
    each original goes through it once per (pixels, weights), into a cache shared by the runs under one output
    root; each reconstruction once, as its task completes, stored beside the task's shard.

    `name` names its files and summary columns (features-NAME/, NAME_passes.log, n_NAME, NAME_note); `state` is
    the config.json key of the stage whose network it uses (its status says whether the space is available);
    `extractor(state, device, batch_size)` builds a callable that maps a list of H x W x 3 uint8 images to an
    N x D float32 array and counts them in `.passes`.

    `input` is what a reconstruction contributes: its pixels, or (`text`) the text its codec transmitted (the
    row's `caption`), embedded by the extractor's `texts(list of str)` and compared with the originals' image
    features without decoding; rows of codecs that send no text contribute nothing.

    `pair` ("module:function"(original's features, reconstruction's features) -> 1-D array) makes a paired space:
    what the network gives an original (a label map of any size) is cached as it is, and each reconstruction
    stores only its comparison with its original's (per-class intersections and unions), so set metrics need no
    reference array (they get one with no columns)."""

    name: str
    label: str
    state: str
    extractor: str
    input: str = "pixels"
    pair: str = ""
    originals: str = ""  # another space whose originals' features these are: one cache, each original once
    # Its set metrics also read the dataset's instance annotations (MS-COCO's boxes, in the preprocessed image's
    # pixels): appended to each original's features as `TRUTH_FIELDS` x the run's most objects per image, NaN-padded
    truth: bool = False

    def build(self, state: dict, device: str, batch_size: int):
        return resolve(self.extractor)(state, device, batch_size)


@dataclass(frozen=True)
class Option:
    """A command-line option of a metric file that sets one key of the run's configuration (`config`: 'dinov2.k'
    is the `k` of RunConfig.dinov2, 'iqa' is RunConfig.iqa), rather than choosing a Stage's network: its flag, its
    default (the configuration's default too), its help, and how what the user gave is checked and read."""

    flag: str
    config: str
    default: Any
    help: str
    metavar: str | None = None
    integer: bool = False
    minimum: int | None = None
    what: str = ""  # how the error for a value below `minimum` names it ('the neighbourhood size')
    positive: bool = False  # a whole number of at least 1, refused by the command line's parser as it reads it
    switch: bool = False  # given alone (--patch-fid), it sets True
    file: bool = False  # the path of a file that must exist (`~` expanded), checked before any work
    path: bool = False  # a path (or a name): `~` expanded as it is read
    append: bool = False  # repeatable: its value is the list of those given
    # "module:function"(value, configuration filled so far) -> the configuration's value, or ValueError (one
    # sentence, before any work) for a value that can never work; options declared earlier are in the configuration
    parse: str = ""
    # On by default except with --metrics none ("bpp and PSNR only"), where it is `off`, unless given: the command
    # line's default is then None, filled in after --resume has compared the flags with the defaults
    off_with_metrics_none: bool = False
    off: Any = "none"

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    @property
    def cli_default(self):
        return None if self.off_with_metrics_none else self.default

    def check(self, value) -> None:
        """One sentence, before any work, for a value below the least it may take or a file that is not there."""
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{self.flag} {value}: {self.what or 'it'} must be at least {self.minimum}.")
        if self.file and value and not os.path.isfile(os.path.expanduser(value)):
            raise ValueError(f"{self.flag} {value}: no such file.")

    def configured(self, value, configuration: dict):
        """What the run's configuration holds for `value` as the user gave it, checked."""
        self.check(value)
        return resolve(self.parse)(value, configuration) if self.parse else value


@dataclass(frozen=True)
class Stage:
    """A network chosen by one command-line option, `--NAME CHOICE`, and resolved once per run into config.json's
    `NAME` entry by `resolve(choice, cache_root, progress)` -> {"status": "ok", "model": ..., "weights_path": ...,
    "weights_sha256": ..., ...} or {"status": "unavailable" | "disabled", "reason": one sentence}; a choice that
    can never work (a misspelt name, a file of another architecture) raises ValueError before any work.

    The run records the choice under `stages` only when it is not `default`, and the resolved entry only when the
    stage is requested: runs that do not use a stage read as they did before it existed."""

    name: str
    default: str | bool
    metavar: str
    help: str
    resolve: str  # "module:function"
    off: str = "none"  # the choice that turns the stage off
    label: str = ""  # its name in the report's weights list (default: `name`)
    # "image_metrics": the stages of the first metric files (LPIPS, DISTS, LPIPS-VGG, CLIP) keep the choice in that
    # entry of the run's configuration and the resolved state in config.json's, always, off or on; their hashed form
    # (`hashed`) is the choice when on ("choice"), or only `true` ("on"), and absent when off, or whether it is on,
    # always ("flag", LPIPS's): their runs keep their files and hash.
    home: str = ""
    hashed: str = "choice"
    file_choice: bool = False  # a choice other than auto and off is a local file: `~` expanded, checked before work
    # On by default (default "auto") except with --metrics none ("bpp and PSNR only"), unless its own flag is given:
    # the command line's default is then None, filled in after --resume has compared the flags with the defaults.
    off_with_metrics_none: bool = False
    # A metric with no network to choose, only on or off (MS-SSIM): `--NAME` / `--no-NAME`, choices True and False
    toggle: bool = False

    def __post_init__(self):
        if self.hashed not in ("choice", "on", "flag"):
            raise ValueError(f"Stage {self.name!r}: hashed must be choice, on or flag, not {self.hashed!r}.")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def off_flag(self) -> str:
        """The command line that turns the stage off."""
        return f"--no-{self.flag[2:]}" if self.toggle else f"{self.flag} {self.off}"

    @property
    def cli_default(self) -> str | None:
        return None if self.off_with_metrics_none else self.default

    def hashed_form(self, choice):
        """What the config hash holds of a home stage's choice (None: absent)."""
        if self.hashed == "flag":
            return choice != self.off
        if (choice or self.off) == self.off:
            return None
        return True if self.hashed == "on" else choice

    @property
    def record(self) -> str:
        """The dotted config.json key of its resolved state (what its metrics name as their `state`)."""
        return f"{self.home}.{self.name}" if self.home else self.name

    def resolved(self, choice: str, cache_root, progress: bool = False) -> dict:
        if choice == self.off and self.default != self.off:  # on by default: it was turned off
            return {"status": "disabled", "reason": f"not requested ({self.off_flag})"}
        if choice == self.off:
            asked = self.metavar.replace(self.off + "|", "").split("|")
            return {"status": "disabled", "reason": f"not requested ({' or '.join(f'{self.flag} {a}' for a in asked)})"}
        return resolve(self.resolve)(choice, cache_root, progress)
