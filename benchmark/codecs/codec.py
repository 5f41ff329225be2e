"""The codec protocol (the codec registry and command-line specs are benchmark.codecs.codec_spec).

A codec turns an 8-bit RGB image into bytes and bytes back into an image. The decoder gets the bytes
and nothing else: the runner decodes with a second instance that never saw the encoder, so state kept
on `self` cannot smuggle information past the bitstream. Whatever both ends share (tables, weights)
is declared by `side_information()` and recorded with the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from metrics.suggest import did_you_mean


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
    # spends more bits. Codecs that declare a range can be rate-matched to target bpps (benchmark.codecs.ratematch).
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
    # Options that name a file or folder: the spec stores them absolute (with ~ expanded), so worker processes
    # and a later --resume started in another folder read the same files.
    path_options: ClassVar[tuple[str, ...]] = ()
    # Options whose value may be a file behind a prefix (CMC's `captioner=sat:FILE`): that file made absolute.
    prefixed_path_options: ClassVar[dict[str, tuple[str, ...]]] = {}
    # Declared ranges of options, checked with the codec's own message before any work: numeric options as
    # (lo, hi) inclusive, options with a fixed set of values as a tuple of strings in `option_choices`.
    option_ranges: ClassVar[dict[str, tuple[float, float]]] = {}
    option_choices: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            names = [*self.defaults, *([self.rate_parameter] if self.rate_parameter else [])]
            close = did_you_mean(unknown[0], names)
            rate = f"its rate parameter is {self.rate_parameter}; " if self.rate_parameter else ""
            raise ValueError(f"{self.name} has no option {', '.join(map(repr, unknown))}: {close}{rate}its options are: "
                             f"{known}.")
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

    def published_bits(self, data: bytes) -> int | None:
        """The bits a paper's own count charges for this bitstream where it differs from what the stream holds
        (CMC's authors count a caption's characters without its end symbol). The row then has `bpp_published`
        beside its honest `bpp`; the codec declares that column. None: no such count."""
        return None

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


def check_output(recon: Any, reference: np.ndarray, exact_size: bool) -> tuple[np.ndarray, str]:
    """A decoder's output as the protocol wants it: H x W x 3 uint8 of the input's size; a codec that declares
    `exact_size = False` (a generator) is resized to it (bicubic) for pixel metrics, with a note saying so."""
    if not isinstance(recon, np.ndarray):
        raise ValueError(f"decoder returned {type(recon).__name__}, not a numpy array")
    if recon.dtype != np.uint8:
        raise ValueError(f"decoder returned dtype {recon.dtype}, expected uint8")
    if recon.ndim != 3 or recon.shape[2] != 3:
        raise ValueError(f"decoder returned shape {recon.shape}, expected H x W x 3")
    if recon.shape == reference.shape:
        return recon, ""
    h, w = reference.shape[:2]
    if exact_size:
        raise ValueError(f"decoded image is {recon.shape[1]}x{recon.shape[0]}, expected {w}x{h}")
    note = f"output {recon.shape[1]}x{recon.shape[0]} resized to {w}x{h} (bicubic) for pixel metrics"
    return np.asarray(Image.fromarray(recon).resize((w, h), Image.BICUBIC)), note


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
        kind = {int: "a whole number", float: "a number"}.get(type(default), f"a {type(default).__name__}")
        raise ValueError(f"{what} must be {kind}, not {value!r}.") from None
