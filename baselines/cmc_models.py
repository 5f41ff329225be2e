"""Model-backed CMC parts: any transformers image-to-text model as captioner, any diffusers text-to-image
pipeline as generator, each loaded by Hub id or local path exactly as its library loads it.

Models are loaded once per process and shared by the encoder and decoder instances that use them; the
decoder only ever loads the generator. Identity (id or path, and a fingerprint of a local folder) is
declared as side information.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from functools import lru_cache

import numpy as np

from metrics import defaults


def pick_device(device: str) -> str:
    return defaults.pick_device(device)


def model_identity(name: str) -> dict:
    """What the results declare about a model: its id or path and, for a local folder, a fingerprint of all of
    its files (names and contents): the config hash takes it, and --resume refuses a folder whose weights were
    replaced, even by a file of the same size."""
    from metrics.download import file_digest

    path = pathlib.Path(name).expanduser()
    if not path.is_dir():
        return {"model": name}
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}|{file_digest(f)}\n".encode())
    return {"model": str(path.resolve()), "fingerprint": h.hexdigest()[:16]}


@lru_cache(maxsize=4)
def _captioner(name: str, device: str):
    try:
        from transformers import AutoModelForImageTextToText, AutoProcessor
    except ImportError as exc:
        raise RuntimeError("a transformers captioner needs transformers: pip install -e '.[models]'") from exc
    name = os.path.expanduser(name)
    processor = AutoProcessor.from_pretrained(name)
    model = AutoModelForImageTextToText.from_pretrained(name).to(device).eval()
    return processor, model


class TransformersCaptioner:
    def __init__(self, name: str, device: str = "auto", num_beams: int = 3, max_new_tokens: int = 30):
        self.name, self.device = name, pick_device(device)
        self.num_beams, self.max_new_tokens = num_beams, max_new_tokens

    def __call__(self, image: np.ndarray) -> str:
        return self.batch([image])[0]

    def batch(self, images: list[np.ndarray]) -> list[str]:
        """Captions of several images in one generate call (deterministic beam search: the same captions as
        one by one)."""
        import torch

        processor, model = _captioner(self.name, self.device)
        inputs = processor(images=[np.array(im) for im in images], return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = model.generate(**inputs, num_beams=self.num_beams, max_new_tokens=self.max_new_tokens,
                                 do_sample=False)
        return [c.strip() for c in processor.batch_decode(out, skip_special_tokens=True)]

    def versions(self) -> dict:
        import transformers

        return {"transformers": transformers.__version__}


@lru_cache(maxsize=2)
def _pipeline(name: str, device: str):
    try:
        from diffusers import AutoPipelineForText2Image
    except ImportError as exc:
        raise RuntimeError("a diffusers generator needs diffusers: pip install -e '.[models]'") from exc
    pipe = AutoPipelineForText2Image.from_pretrained(os.path.expanduser(name))
    if hasattr(pipe, "safety_checker") and os.environ.get("CMCBENCH_KEEP_SAFETY_CHECKER") is None:
        pipe.safety_checker = None  # it blacks out images, which would corrupt the metrics silently
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def bitstream_seed(seed: int, data: bytes) -> int:
    """The generator seed of one bitstream: a function of the codec's seed and the bytes the decoder received,
    so every image gets its own noise, the same bitstream always decodes to the same image, and neither
    depends on which batch it was decoded in."""
    digest = hashlib.sha256(f"{int(seed)}|".encode() + bytes(data)).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


class DiffusersGenerator:
    """Seeded text-to-image generation: each bitstream's own seed (`bitstream_seed`), images in batches."""

    def __init__(self, name: str, device: str = "auto", seed: int = 0, steps: int = 25, guidance: float = 7.5,
                 size: int = 512):
        self.name, self.device = name, pick_device(device)
        self.seed, self.steps, self.guidance, self.size = seed, steps, guidance, size

    def __call__(self, text: str, seed: int | None = None) -> np.ndarray:
        return self.batch([text], [self.seed if seed is None else seed])[0]

    def batch(self, texts: list[str], seeds: list[int]) -> list[np.ndarray]:
        """One pipeline call for several texts, each image from its own CPU generator (so its initial noise is
        the same in any batch)."""
        import torch

        pipe = _pipeline(self.name, self.device)
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        out = pipe(list(texts), height=self.size, width=self.size, num_inference_steps=self.steps,
                   guidance_scale=self.guidance, generator=generators, output_type="np").images
        return [np.clip(np.rint(np.asarray(im, dtype=np.float64) * 255), 0, 255).astype(np.uint8) for im in out]

    def versions(self) -> dict:
        import diffusers

        return {"diffusers": diffusers.__version__}
