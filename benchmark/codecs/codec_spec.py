"""The codec registry and command-line codec specs: which codec a name means (a built-in, an installed
plug-in's entry point, or `package.module:Class`) and what `--codec "NAME key=value ..."` asks of it."""

from __future__ import annotations

import difflib
import importlib
import json
import os
import shlex
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from benchmark.codecs.best_of import best_of
from benchmark.codecs.codec import Codec
from benchmark.codecs.ratematch import rate_matched

ENTRY_POINT_GROUP = "cmcbench.codecs"

# Built-in codecs by name, imported only when used (a missing optional library must not break others).
BUILTIN_CODECS = {
    "jpeg": "baselines.jpeg:JPEG",
    "jpeg2000": "baselines.jpeg2000:JPEG2000",
    "jpeg2000-psnr": "baselines.jpeg2000:JPEG2000PSNR",
    "cmc": "baselines.cmc:CMC",
    "cmc2021": "baselines.cmc:CMC2021",
    "webp": "baselines.webp:WebP",
    "avif": "baselines.avif:AVIF",
    "jpegxl": "baselines.jpegxl:JPEGXL",
    "precomputed": "baselines.precomputed:Precomputed",
    "command": "baselines.command:Command",
}


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
    # its target within this relative tolerance (see benchmark.codecs.ratematch).
    rate_tolerance: float | None = None
    # best_of > 1: the encoder picks the best of that many decoder seeds by `select` (benchmark.codecs.best_of)
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
            return best_of(cls, self.best_of, self.select)
        if self.rate_tolerance is None:
            return cls
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
    seen: dict[str, str] = {}  # each key once (the sweep under any of its names), or the last would win silently
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise ValueError(f"Codec spec {text!r}: expected key=value, got {pair!r}.")
        same = "sweep" if key in (cls.rate_parameter, "settings", "sweep") else key
        if same in seen:
            fix = f" (one {key}= with every value: {key}={seen[same]},{value})" if same == "sweep" else ""
            raise ValueError(f"Codec spec {text!r}: {key}= is given twice{fix}; give it once.")
        seen[same] = value
        if key == "label":
            if not value.strip():
                raise ValueError(f"Codec spec {text!r}: label= needs a name, e.g. label=mine (or leave it out).")
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
        elif key in cls.path_options:  # absolute: workers and a later --resume may start in another folder
            options[key] = os.path.abspath(os.path.expanduser(value)) if value else value
        elif key in cls.prefixed_path_options and value.partition(":")[0] in cls.prefixed_path_options[key]:
            prefix, _, path = value.partition(":")
            options[key] = f"{prefix}:{os.path.abspath(os.path.expanduser(path))}"
        else:
            options[key] = _parse_scalar(value)
    cls(**options)  # validate options now, with the codec's own message
    for value in settings:
        cls.check_setting(value)
    for given, what in ((settings, cls.rate_parameter), (targets, "bpp")):
        repeated = sorted({v for v in given if given.count(v) > 1}, key=str)
        if repeated:  # two settings of one value would be one curve point twice, under one label
            raise ValueError(f"Codec spec {text!r}: {what}={', '.join(map(str, repeated))} is given more than once.")
    settings = settings or tuple(cls.discover_settings(options))
    if targets and "sweep" in seen:  # rate matching picks the setting per image: a sweep beside it would be ignored
        raise ValueError(f"Codec spec {text!r}: bpp= rate-matches each image by choosing its {cls.rate_parameter} "
                         f"itself, so {cls.rate_parameter}= beside it would be ignored; give one of them.")
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
