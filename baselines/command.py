"""Command-line codecs: any encoder/decoder pair that runs as programs (BPG, VTM, cjxl, avifenc,
opj_compress, Kakadu, or a script run by another virtual environment's interpreter).

    --codec "command encode='ENC {input} {output} {setting}' decode='DEC {input} {output}' sweep=a,b,c
             suffix=.bpg version='ENC --version' label=NAME"

Encode gets a PNG (or PPM, `input_suffix=.ppm`) of the preprocessed image as `{input}` and writes the bitstream to `{output}` (named with
`suffix`); decode gets only that bitstream file as `{input}` and writes a PNG (or PPM, `output_suffix`)
to `{output}`. bpp comes from the bitstream file's size. Each call runs in its own temporary directory,
without a shell (arguments are split like a shell would; paths may hold spaces), with a timeout; a
non-zero exit, a missing or unreadable output or a timeout fails that row with the tail of the command's
stderr. The version command's output is recorded as the codec's version, with the sha256 of every file the
commands name by path (a script, a model, a program not on PATH), so an edit between a kill and --resume
is refused.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import subprocess
import tempfile

import numpy as np
from PIL import Image

from benchmark.codecs.codec import Codec, CodecTimeout, CodecUnavailable

STDERR_TAIL = 400


class Command(Codec):
    name = "command"
    rate_parameter = "setting"
    defaults = {"encode": "", "decode": "", "suffix": ".bin", "input_suffix": ".png", "output_suffix": ".png",
                "version": "", "timeout": 300.0}

    def __init__(self, **options):
        super().__init__(**options)
        for key, needed in (("encode", ("{input}", "{output}")), ("decode", ("{input}", "{output}"))):
            template = self.options[key]
            if not template:
                raise ValueError(f"command needs {key}='PROGRAM ... {{input}} {{output}}'.")
            missing = [p for p in needed if p not in template]
            if missing:
                raise ValueError(f"command {key}= must contain {' and '.join(missing)}: {template!r}.")
            try:
                shlex.split(template)
            except ValueError as exc:
                raise ValueError(f"command {key}= cannot be split into arguments ({exc}): {template!r}.") from None
        if self.options["timeout"] <= 0:
            raise ValueError("command timeout= must be positive (seconds).")
        if self.options["input_suffix"] not in (".png", ".ppm"):
            raise ValueError("command input_suffix= must be .png or .ppm (the image format the encoder reads).")

    def setup(self, context: dict | None = None) -> None:
        for key in ("encode", "decode"):
            tokens = shlex.split(self.options[key])
            if shutil.which(tokens[0]) is None and not os.path.isfile(tokens[0]):
                raise CodecUnavailable(f"command {key}: program {tokens[0]!r} was not found on PATH.")
            relative = next((t for t in tokens if "{" not in t and not os.path.isabs(t) and os.path.isfile(t)
                             and (os.sep in t or "." in t)), None)
            if relative is not None:  # the call's own temporary folder has no such file: every row would fail
                raise CodecUnavailable(f"command {key}: {relative!r} is a path relative to this folder, but each call "
                                       "runs in a temporary folder of its own; name it as "
                                       f"{os.path.abspath(relative)}.")

    def _run(self, what: str, template: str, workdir: str, **values: str) -> None:
        args = [_fill(token, values) for token in shlex.split(template)]
        timeout = self.options["timeout"]
        try:
            done = subprocess.run(args, cwd=workdir, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CodecTimeout(f"{what} command timed out after {timeout:g} s (killed)") from None
        except OSError as exc:
            raise RuntimeError(f"{what} command could not start: {exc}") from None
        if done.returncode != 0:
            # The call's temporary folder named as such, so one cause reads as one reason over all rows
            tail = _tail(done.stderr).replace(workdir, "<its temporary folder>")
            raise RuntimeError(f"{what} command exited {done.returncode}: {tail}")

    def encode(self, image: np.ndarray, setting) -> bytes:
        with tempfile.TemporaryDirectory(prefix="cmcbench-enc-") as tmp:
            source = os.path.join(tmp, "input" + self.options["input_suffix"])
            target = os.path.join(tmp, "bitstream" + self.options["suffix"])
            Image.fromarray(image).save(source, **({"compress_level": 1} if source.endswith(".png") else {}))
            self._run("encode", self.options["encode"], tmp, input=source, output=target, setting=str(setting))
            if not os.path.isfile(target):
                raise RuntimeError(f"encode command wrote no bitstream at {{output}} ({os.path.basename(target)})")
            with open(target, "rb") as f:
                return f.read()

    def decode(self, data: bytes) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="cmcbench-dec-") as tmp:
            source = os.path.join(tmp, "bitstream" + self.options["suffix"])
            target = os.path.join(tmp, "decoded" + self.options["output_suffix"])
            with open(source, "wb") as f:
                f.write(data)
            self._run("decode", self.options["decode"], tmp, input=source, output=target)
            if not os.path.isfile(target):
                raise RuntimeError(f"decode command wrote no image at {{output}} ({os.path.basename(target)})")
            try:
                with Image.open(io.BytesIO(open(target, "rb").read())) as im:
                    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
            except Exception as exc:  # noqa: BLE001 - an unreadable output fails the row with this sentence
                raise RuntimeError(f"decode command's output is not a readable image: {exc}") from None

    def versions(self) -> dict[str, str]:
        out = {"encode": self.options["encode"], "decode": self.options["decode"]}
        if self.options["version"]:
            try:
                done = subprocess.run(shlex.split(self.options["version"]), stdin=subprocess.DEVNULL,
                                      capture_output=True, timeout=60)
                text = (done.stdout or done.stderr).decode(errors="replace").strip()
                out["version"] = text.splitlines()[0][:200] if text else f"(no output, exit {done.returncode})"
            except (OSError, subprocess.TimeoutExpired) as exc:
                out["version"] = f"unknown: {exc}"
        else:
            out["version"] = "not given (version='PROGRAM --version' records it)"
        files = self._files()
        if files:  # the scripts and models the commands name: an edit to one is a change of the codec
            out["files_sha256"] = files
        return out

    def _files(self) -> dict[str, str]:
        """sha256 of each file the commands name by path (a program on PATH is named by `version`)."""
        from metrics.download import file_digest

        tokens = [t for key in ("encode", "decode") for t in shlex.split(self.options[key])]
        return {t: file_digest(t) for t in dict.fromkeys(tokens) if "{" not in t and os.sep in t and os.path.isfile(t)}


def _fill(token: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        token = token.replace("{" + key + "}", value)
    return token


def _tail(stderr: bytes) -> str:
    text = stderr.decode(errors="replace").strip()
    if not text:
        return "(no stderr)"
    text = " ".join(text.splitlines()[-5:])
    return text if len(text) <= STDERR_TAIL else "..." + text[-STDERR_TAIL:]
