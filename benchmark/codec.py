"""The codec protocol, the codec registry and command-line codec specs.

A codec turns an 8-bit RGB image into bytes and bytes back into an image. The decoder gets the bytes
and nothing else: the runner decodes with a second instance that never saw the encoder, so state kept
on `self` cannot smuggle information past the bitstream. Whatever both ends share (tables, weights)
is declared by `side_information()` and recorded with the run.
"""

from __future__ import annotations

import difflib
import importlib
import json
import shlex
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, ClassVar

import numpy as np

ENTRY_POINT_GROUP = "cmcbench.codecs"

# Built-in codecs by name, imported only when used (a missing optional library must not break others).
BUILTIN_CODECS = {
    "jpeg": "baselines.jpeg:JPEG",
    "jpeg2000": "baselines.jpeg2000:JPEG2000",
    "jpeg2000-psnr": "baselines.jpeg2000:JPEG2000PSNR",
    "cmc": "baselines.cmc:CMC",
    "webp": "baselines.webp:WebP",
    "avif": "baselines.avif:AVIF",
    "jpegxl": "baselines.jpegxl:JPEGXL",
    "precomputed": "baselines.precomputed:Precomputed",
    "command": "baselines.command:Command",
}


class CodecUnavailable(RuntimeError):
    """The codec cannot run on this machine (a library is missing); the message says how to fix it."""


class CodecTimeout(Exception):
    """An encode or decode ran past its time limit; the message says which and how long."""


@dataclass
class Produced:
    """What a codec that produces outside cmcbench hands over for one (image, setting): the bitstream if
    there is one (else only its declared bit count), the reconstruction, and row columns to add."""

    data: bytes | None
    bits: int
    reconstruction: np.ndarray
    columns: dict[str, Any] = field(default_factory=dict)


class Codec:
    """Base class: subclasses declare their name, rate parameter, default sweep and options.

    `defaults` maps each option to its default; values given by the user are coerced to the
    default's type and unknown options are refused, so a typo never silently runs the default.
    """

    name: ClassVar[str] = ""
    rate_parameter: ClassVar[str] = "setting"
    default_sweep: ClassVar[tuple] = ()
    defaults: ClassVar[dict[str, Any]] = {}
    # False for generative codecs whose decoder has its own output size; the runner then resizes
    # the output to the input's size for pixel metrics and records that it did.
    exact_size: ClassVar[bool] = True
    # False for codecs that must run in the main process (one copy of large weights); see also wants_gpu.
    parallel: ClassVar[bool] = True
    # True for codecs whose networks run on the run's device (setup's context["device"]): Ray gives their
    # tasks a GPU share. Independent of `parallel`, which only says where the codec may run.
    wants_gpu: ClassVar[bool] = False
    # How many images the runner hands encode_batch/decode_batch at once (images of equal size); 1 for
    # codecs that only implement encode/decode.
    batch_size: ClassVar[int] = 1
    # True for codecs with a model per setting (a learned codec's checkpoint per rate): the runner runs them
    # setting by setting, so each setting's model is loaded once per run and only one is held at a time.
    model_per_setting: ClassVar[bool] = False
    # True for codecs whose decoder draws from a seeded generator, chosen by an integer option `seed`: the
    # same bitstream decodes to another image under another seed (best_of=N picks among N of them).
    stochastic: ClassVar[bool] = False
    # True for encoders that need the dataset record (an oracle captioner reads the reference captions);
    # they are called as encode(image, setting, record=record). Decoders never get it.
    needs_record: ClassVar[bool] = False
    # The rate parameter's valid range (lo, hi), whether it takes only integers, and whether a larger value
    # spends more bits. Codecs that declare a range can be rate-matched to target bpps (benchmark.ratematch).
    rate_range: ClassVar[tuple[float, float] | None] = None
    rate_integer: ClassVar[bool] = False
    rate_increasing: ClassVar[bool] = True
    rate_log: ClassVar[bool] = False  # bisect the parameter on a log scale (compression ratios, distances)
    # Per-image columns the codec adds to its rows (from extra_columns / encode_columns), with their types
    # (string, float64, int64, bool); they become part of the run's declared schema.
    columns: ClassVar[dict[str, str]] = {}
    # True for codecs whose bits and pixels were made outside cmcbench (precomputed reconstructions): the
    # runner calls `produce` instead of encode/decode, and the rows say so (`produced_outside`).
    produced_outside: ClassVar[bool] = False
    # Declared ranges of options, checked with the codec's own message before any work: numeric options as
    # (lo, hi) inclusive, options with a fixed set of values as a tuple of strings in `option_choices`.
    option_ranges: ClassVar[dict[str, tuple[float, float]]] = {}
    option_choices: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise ValueError(f"{self.name} has no option {', '.join(map(repr, unknown))}; its options are: {known}.")
        self.options = {k: _coerce(v, self.defaults[k], f"{self.name} option {k!r}") for k, v in
                        {**self.defaults, **options}.items()}
        for key, (lo, hi) in self.option_ranges.items():
            value = self.options.get(key)
            if value is not None and not lo <= value <= hi:
                raise ValueError(f"{self.name} option {key!r} must be in {lo:g}..{hi:g}, not {value!r}.")
        for key, choices in self.option_choices.items():
            if key in self.options and self.options[key] not in choices:
                raise ValueError(f"{self.name} option {key!r} must be one of {', '.join(map(str, choices))}, "
                                 f"not {self.options[key]!r}.")

    @classmethod
    def check_setting(cls, value: Any) -> None:
        """Refuse, in one sentence, a setting outside the declared rate parameter's type and range."""
        if cls.rate_range is None:
            return
        lo, hi = cls.rate_range
        what = f"{cls.name} {cls.rate_parameter}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ValueError(f"{what} must be a number in {lo:g}..{hi:g}, not {value!r}.")
        if cls.rate_integer and float(value) != int(value):
            raise ValueError(f"{what} takes whole numbers in {lo:g}..{hi:g}, not {value!r}.")
        if not lo <= value <= hi:
            raise ValueError(f"{what} must be in {lo:g}..{hi:g}, not {value!r}.")

    @classmethod
    def applicable(cls, context: dict, options: dict | None = None) -> str | None:
        """Why this codec cannot run on the run's dataset as configured (None when it can). Consulted before any
        work: the default codec set skips such a codec with this reason; asked for by name, it is refused."""
        return None

    def preflight(self, context: dict) -> None:
        """Cheap checks of everything the codec will need (model names, files, extras), before any work: raise
        ValueError or CodecUnavailable with one sentence naming the fix. Heavy loading waits for setup."""

    @classmethod
    def check_available(cls) -> None:
        """Raise CodecUnavailable with an actionable message when the codec cannot run here."""

    @classmethod
    def discover_settings(cls, options: dict[str, Any]) -> tuple:
        """The sweep when the user gives none; by default the declared `default_sweep`."""
        return tuple(cls.default_sweep)

    def setup(self, context: dict | None = None) -> None:
        """Heavy initialisation, once per process. `context` names the run's dataset, split and
        preprocessing, from which a codec may fit declared side information on training data."""

    def encode(self, image: np.ndarray, setting: Any) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> np.ndarray:
        raise NotImplementedError

    def charged_bits(self, data: bytes) -> int:
        """The bits the row is charged for this bitstream: all of it, 8 x bytes. A wrapper whose stream holds a
        byte-aligned field worth fewer bits (best_of's candidate index) charges what a bit-packed stream takes."""
        return 8 * len(data)

    def encode_batch(self, images: list[np.ndarray], setting: Any, records: list | None = None) -> list[bytes]:
        """Encode several images of equal size at one setting (`records` only for `needs_record` codecs).
        Codecs that gain from batching (networks) override this and declare `batch_size`; the default encodes
        one by one."""
        records = records if records is not None else [None] * len(images)
        return [encode_image(self, image, setting, record) for image, record in zip(images, records)]

    def decode_batch(self, data: list[bytes], setting: Any) -> list[np.ndarray]:
        """Decode several bitstreams of one setting. The setting names the model a decoder with one model per
        setting loads (agreed side information, as the rate parameter of a learned codec's checkpoint is);
        the default decodes one by one, from the bytes alone."""
        return [self.decode(d) for d in data]

    @classmethod
    def batched(cls) -> bool:
        """Whether the codec implements the batch protocol itself (else the runner calls encode/decode)."""
        return cls.encode_batch is not Codec.encode_batch or cls.decode_batch is not Codec.decode_batch

    def versions(self) -> dict[str, str]:
        """Library versions that determine the bitstream (recorded in every row)."""
        return {}

    def side_information(self) -> dict[str, Any]:
        """Data shared by encoder and decoder and not charged per image (declared in the results)."""
        return {}

    def extra_columns(self, data: bytes) -> dict[str, Any]:
        """Per-image values worth showing that the bitstream carries (e.g. a transmitted caption)."""
        return {}

    def encode_columns(self) -> dict[str, Any]:
        """Per-image facts about the last encode that the bitstream does not carry (e.g. how many trials rate
        matching took). They are reported in the row, never given to the decoder."""
        return {}

    def notes(self) -> list[str]:
        """Sentences the user should read before the run starts (after setup), e.g. files that were ignored."""
        return []

    def produce(self, image: np.ndarray, setting: Any, record: Any) -> Produced:
        """For `produced_outside` codecs only: the bitstream (or bit count) and reconstruction made elsewhere."""
        raise NotImplementedError


def reseeded(codec: Codec, offset: int, context: dict | None) -> Codec:
    """Another instance of a stochastic codec whose decoder draws from `seed + offset`, set up: best_of's
    candidates and samples=K's further decodes of the same bitstream."""
    other = type(codec)(**{**codec.options, "seed": int(codec.options["seed"]) + offset})
    other.setup(context)
    return other


def encode_image(codec: Codec, image: np.ndarray, setting: Any, record: Any = None) -> bytes:
    """Call `codec.encode`, giving it the dataset record only if it declares `needs_record`."""
    if codec.needs_record:
        return codec.encode(image, setting, record=record)
    return codec.encode(image, setting)


def _coerce(value: Any, default: Any, what: str) -> Any:
    if default is None or value is None or isinstance(value, type(default)):
        return value
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{what} must be true or false, not {value!r}.")
    try:
        return type(default)(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a {type(default).__name__}, not {value!r}.") from None


def load_codec_class(target: str) -> type[Codec]:
    """Resolve a built-in name, an installed entry point, or `package.module:Class`."""
    if ":" not in target:
        if target in BUILTIN_CODECS:
            target = BUILTIN_CODECS[target]
        else:
            eps = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
            if target in eps:
                cls = eps[target].load()
                return _check_codec_class(cls, target)
            known = sorted(set(BUILTIN_CODECS) | set(eps))
            close = difflib.get_close_matches(target, known, n=1)
            hint = f"did you mean {close[0]!r}? Or " if close else ""
            raise ValueError(f"Unknown codec {target!r}: {hint}use one of {', '.join(known)} or "
                             "'package.module:Class'.")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"Cannot import module {module_name!r} for codec {target!r}: {exc} (a plug-in's module "
                         "must be importable here and in the worker processes: install its package, or add its "
                         "folder to PYTHONPATH).") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"Module {module_name!r} has no class {class_name!r}.")
    return _check_codec_class(cls, target)


def _check_codec_class(cls: Any, target: str) -> type[Codec]:
    if not (isinstance(cls, type) and issubclass(cls, Codec)):
        raise ValueError(f"{target!r} is not a subclass of benchmark.codec.Codec.")
    return cls


def available_codecs() -> list[str]:
    names = list(BUILTIN_CODECS)
    names += [ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name not in names]
    return names


@dataclass(frozen=True)
class CodecSpec:
    """What the user asked for: which codec, under which label, with which options and settings."""

    target: str
    label: str
    options: dict[str, Any] = field(default_factory=dict)
    settings: tuple = ()
    # When set, the settings are target bpps and each image is encoded at the rate parameter that reaches
    # its target within this relative tolerance (see benchmark.ratematch).
    rate_tolerance: float | None = None
    # best_of > 1: the encoder picks the best of that many decoder seeds by `select` (benchmark.best_of)
    best_of: int = 1
    select: str = "psnr"
    # samples > 1: every bitstream is decoded that many times, with seeds seed, seed+1, ... (a row per sample)
    samples: int = 1

    def to_json(self) -> dict[str, Any]:
        d = {"target": self.target, "label": self.label, "options": self.options, "settings": list(self.settings)}
        if self.rate_tolerance is not None:
            d["rate_tolerance"] = self.rate_tolerance
        if self.best_of > 1:  # absent otherwise, so earlier runs keep their config hash
            d.update(best_of=self.best_of, select=self.select)
        if self.samples > 1:
            d["samples"] = self.samples
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "CodecSpec":
        return cls(d["target"], d["label"], dict(d["options"]), tuple(d["settings"]), d.get("rate_tolerance"),
                   int(d.get("best_of", 1)), d.get("select", "psnr"), int(d.get("samples", 1)))

    def codec_class(self) -> type[Codec]:
        cls = load_codec_class(self.target)
        if self.best_of > 1:
            from benchmark.best_of import best_of

            return best_of(cls, self.best_of, self.select)
        if self.rate_tolerance is None:
            return cls
        from benchmark.ratematch import rate_matched

        return rate_matched(cls)

    def build(self) -> Codec:
        cls = self.codec_class()
        if self.best_of > 1:
            return cls(best_of=self.best_of, select=self.select, **self.options)
        if self.rate_tolerance is None:
            return cls(**self.options)
        return cls(tolerance=self.rate_tolerance, **self.options)


def parse_codec_spec(text: str) -> CodecSpec:
    """Parse 'TARGET [key=value ...]', e.g. 'jpeg quality=10,50,90 subsampling=4:4:4 label=jpeg444'.
    Values holding spaces are quoted as in a shell: encode='cjxl {input} {output} -d {setting}'.

    The key named after the codec's rate parameter sets its sweep; `label` names the codec in results.
    `bpp=0.1,0.25` rate-matches instead: each image gets the setting that reaches each target bpp, within
    `tolerance=` (relative, default 0.01).
    """
    try:
        parts = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"Codec spec {text!r}: {exc} (quote values that hold spaces: key='a b').") from None
    if not parts:
        raise ValueError("Empty codec spec.")
    target, pairs = parts[0], parts[1:]
    cls = load_codec_class(target)
    options: dict[str, Any] = {}
    label = cls.name or target
    settings: tuple = ()
    targets: tuple = ()
    tolerance = None
    best, select, samples = 1, "psnr", 1
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise ValueError(f"Codec spec {text!r}: expected key=value, got {pair!r}.")
        if key == "label":
            label = value
        elif key in (cls.rate_parameter, "settings", "sweep", "bpp") and not any(value.split(",")):
            raise ValueError(f"Codec spec {text!r}: {key}= has no values; give them (e.g. {key}=1,2,3) or leave "
                             f"{key}= out for the codec's default sweep.")
        elif key in (cls.rate_parameter, "settings", "sweep"):
            settings = tuple(_parse_scalar(v) for v in value.split(",") if v)
        elif key == "bpp":
            targets = tuple(_number(v, f"Codec spec {text!r}: bpp") for v in value.split(",") if v)
        elif key == "tolerance":
            tolerance = _number(value, f"Codec spec {text!r}: tolerance")
        elif key == "best_of":
            n = _number(value, f"Codec spec {text!r}: best_of")
            if n != int(n) or n < 1:
                raise ValueError(f"Codec spec {text!r}: best_of takes a whole number of candidates >= 1, not {value}.")
            best = int(n)
        elif key == "select":
            select = value
        elif key == "samples":
            k = _number(value, f"Codec spec {text!r}: samples")
            if k != int(k) or not 1 <= k <= 64:
                raise ValueError(f"Codec spec {text!r}: samples takes a whole number of decodes in 1..64, not {value}.")
            samples = int(k)
        else:
            options[key] = _parse_scalar(value)
    cls(**options)  # validate options now, with the codec's own message
    for value in settings:
        cls.check_setting(value)
    settings = settings or tuple(cls.discover_settings(options))
    if (targets or tolerance is not None) and (best > 1 or samples > 1):
        raise ValueError(f"Codec spec {text!r}: best_of and samples do not combine with rate matching (bpp=).")
    if samples > 1 and (best > 1 or not cls.stochastic or "seed" not in cls.defaults):
        raise ValueError(f"Codec spec {text!r}: samples=K needs a stochastic codec (one whose decoder draws from its "
                         f"`seed` option) and no best_of; {cls.name} is " +
                         ("deterministic." if not cls.stochastic else "asked for best_of too."))
    if targets or tolerance is not None:
        if cls.rate_range is None:
            raise ValueError(f"Codec {target!r} cannot be rate-matched: it declares no rate_range for its "
                             f"{cls.rate_parameter!r}.")
        if cls.model_per_setting:
            raise ValueError(f"Codec {target!r} cannot be rate-matched: it loads a model per setting and its decoder "
                             "is chosen by the setting, which rate matching would vary image by image; sweep "
                             f"{cls.rate_parameter}= instead.")
        if not targets:
            raise ValueError(f"Codec spec {text!r}: tolerance= needs target rates, e.g. bpp=0.25.")
        if any(t <= 0 for t in targets) or (tolerance is not None and not 0 < tolerance < 1):
            raise ValueError(f"Codec spec {text!r}: target bpps must be positive and tolerance in (0, 1).")
        if label == (cls.name or target):
            label = f"{label}@bpp"
        return CodecSpec(target, label, options, targets, 0.01 if tolerance is None else tolerance)
    if not settings:
        raise ValueError(f"Codec {label!r} has no settings to sweep: give {cls.rate_parameter}=v1,v2,...")
    if best > 1:
        from benchmark.best_of import best_of

        best_of(cls, best, select)  # checked now, in one sentence
        if label == (cls.name or target):
            label = f"{label}-best{best}"
    elif select != "psnr":
        raise ValueError(f"Codec spec {text!r}: select= goes with best_of=N (N >= 2).")
    if samples > 1 and label == (cls.name or target):
        label = f"{label}-x{samples}"
    return CodecSpec(target, label, options, settings, best_of=best, select=select, samples=samples)


def _number(value: str, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{what} must be a number, not {value!r}.") from None


def _parse_scalar(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value
