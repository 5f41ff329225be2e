"""Producing: one image at one setting becomes a bitstream (or a declared bit count) and a reconstruction.

For an ordinary codec that is encode -> bytes -> decode, with a separate decoder instance that gets the
bytes and nothing else; bpp is 8 x bytes / pixels of the input. A codec whose outputs were made outside
cmcbench (`produced_outside`) hands them over through `Codec.produce`. Either way the reconstruction is
checked (8-bit RGB, the input's size unless the codec declares otherwise) before anything scores it.
Nothing here computes a quality metric: that is `benchmark.run.scoring`'s job.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmark.codecs.codec import Codec, CodecTimeout, check_output


@dataclass
class Production:
    columns: dict[str, Any] = field(default_factory=dict)  # rate, timings, codec columns, status and error
    reconstruction: np.ndarray | None = None  # checked, at the input's size; None when it failed
    data: bytes | None = None  # the bitstream, when there is one


@contextmanager
def time_limit(seconds: float, what: str):
    """Raise CodecTimeout in the calling thread after `seconds` (main thread of a process only)."""
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise CodecTimeout(f"{what} timed out after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def error_text(stage: str, exc: BaseException) -> str:
    if isinstance(exc, CodecTimeout):
        return str(exc)
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{stage} failed: {type(exc).__name__}" + (f": {msg}" if msg else "")


def produce(encoder: Codec, decoder: Codec, pixels: np.ndarray, setting: Any, record: Any,
            timeout: float, on_stage=lambda stage: None) -> Production:
    """Encode, decode and check one image at one setting; a failure becomes the row's reason. `on_stage`
    is told when the encode and the decode start (the executor's deadline watch). The image goes through
    the batch protocol as a batch of one, whose defaults are the codec's own encode and decode."""
    on_stage("encode")
    if encoder.produced_outside:
        return _produce_outside(encoder, pixels, setting, record)
    out = Production()
    try:
        t0 = time.perf_counter()
        with time_limit(timeout, "encode"):
            data = encoder.encode_batch([pixels], setting, [record] if encoder.needs_record else None)[0]
        t1 = time.perf_counter()
        out.data = data = _bitstream(data)
        out.columns.update(_rate_columns(encoder, data, pixels), encode_s=t1 - t0)
        out.columns.update(encoder.encode_columns())
    except Exception as exc:  # noqa: BLE001 - the row fails with its reason, the run goes on
        out.columns.update(status="failed", error=error_text("encode", exc))
        return out
    on_stage("decode")
    return decode_checked(decoder, data, pixels, setting, timeout, out)


def decode_checked(decoder: Codec, data: bytes, pixels: np.ndarray, setting: Any, timeout: float,
                   out: Production | None = None) -> Production:
    """Decode one bitstream (a batch of one) and check the image against the input, into `out` (a new
    Production by default: a stochastic decoder's further sample of the same bits)."""
    out = out if out is not None else Production(data=data)
    try:
        t0 = time.perf_counter()
        with time_limit(timeout, "decode"):
            recon = decoder.decode_batch([data], setting)[0]
        out.columns["decode_s"] = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - the row fails with its reason, the run goes on
        out.reconstruction = None
        out.columns.update(status="failed", error=error_text("decode", exc))
        return out
    return _checked(out, decoder, recon, data, pixels)


def _bitstream(data: Any) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"encoder returned {type(data).__name__}, not bytes")
    return bytes(data)


def _rate_columns(encoder: Codec, data: bytes, pixels: np.ndarray) -> dict:
    """The row's size: bytes, the bits it is charged (the codec's `charged_bits`) and bpp over the input, and
    beside it the bpp a paper's own count gives, for a codec that has one (`published_bits`)."""
    h, w = pixels.shape[:2]
    bits = encoder.charged_bits(data)
    published = encoder.published_bits(data)
    return {"bytes": len(data), "bits": bits, "bpp": bits / (w * h),
            **({} if published is None else {"bpp_published": published / (w * h)})}


def _checked(out: Production, decoder: Codec, recon: Any, data: bytes, pixels: np.ndarray) -> Production:
    """A decoded image checked against the input, with the decoder's columns; a bad output fails the row."""
    try:
        out.reconstruction, note = check_output(recon, pixels, decoder.exact_size)
        out.columns.update(decoder.extra_columns(data))
        out.columns.update(output_notes=note, status="ok", error="")
    except Exception as exc:  # noqa: BLE001 - the row fails with its reason, the run goes on
        out.reconstruction = None
        out.columns.update(status="failed", error=error_text("output check", exc))
    return out


def _produce_outside(codec: Codec, pixels: np.ndarray, setting: Any, record: Any) -> Production:
    out = Production(columns={"produced_outside": True})
    h, w = pixels.shape[:2]
    stage = "reading precomputed output"
    try:
        made = codec.produce(pixels, setting, record)
        out.data = made.data
        n_bytes = len(made.data) if made.data is not None else None
        out.columns.update(bytes=n_bytes, bits=int(made.bits), bpp=made.bits / (w * h), **made.columns)
        stage = "output check"
        out.reconstruction, note = check_output(made.reconstruction, pixels, codec.exact_size)
        out.columns.update(output_notes="; ".join(filter(None, [made.columns.get("output_notes", ""), note])),
                           status="ok", error="")
    except Exception as exc:  # noqa: BLE001 - the row fails with its reason, the run goes on
        out.reconstruction = None
        out.columns.update(status="failed", error=error_text(stage, exc) if stage == "output check" else
                           (str(exc) if isinstance(exc, (FileNotFoundError, ValueError)) else error_text(stage, exc)))
    return out


def produce_batch(encoder: Codec, decoder: Codec, images: list[np.ndarray], setting: Any, records: list,
                  timeout: float, on_stage=lambda stage: None) -> list[Production]:
    """Encode and decode a batch of equal-size images at one setting through the batch protocol. Timings are
    the batch's, shared equally among its images. If the batch call fails, each image is redone alone, so
    one bad image fails its own row with its own reason and the others go on."""
    if not encoder.batched() or encoder.produced_outside:
        return [produce(encoder, decoder, px, setting, rec, timeout, on_stage) for px, rec in zip(images, records)]
    n = len(images)
    if n == 1:
        return [produce(encoder, decoder, images[0], setting, records[0], timeout, on_stage)]
    outs = [Production() for _ in images]
    try:
        on_stage("encode")
        t0 = time.perf_counter()
        with time_limit(timeout * n, f"encode of a batch of {n}"):
            data = encoder.encode_batch(images, setting, records if encoder.needs_record else None)
        t1 = time.perf_counter()
        if len(data) != n:
            raise ValueError(f"encode_batch returned {len(data)} bitstreams for {n} images")
        data = [_bitstream(d) for d in data]
        on_stage("decode")
        t2 = time.perf_counter()
        with time_limit(timeout * n, f"decode of a batch of {n}"):
            recons = decoder.decode_batch(data, setting)
        t3 = time.perf_counter()
        if len(recons) != n:
            raise ValueError(f"decode_batch returned {len(recons)} images for {n} bitstreams")
    except Exception:  # noqa: BLE001 - redo one by one: each image's own success or reason
        return [produce(encoder, decoder, px, setting, rec, timeout, on_stage) for px, rec in zip(images, records)]
    for out, d, recon, pixels in zip(outs, data, recons, images):
        out.data = d
        out.columns.update(_rate_columns(encoder, d, pixels), encode_s=(t1 - t0) / n, decode_s=(t3 - t2) / n)
        _checked(out, decoder, recon, d, pixels)
    return outs
