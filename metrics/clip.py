"""CLIP similarity and CLIP score (transformers' CLIPModel, by Hub id or local folder).

- `clip_similarity`: cosine similarity of the CLIP image embeddings of the original and the reconstruction
  (semantic fidelity, as PerCo and Text+Sketch report it); the original's embedding is computed once.
- `clip_score`: CLIPScore as torchmetrics defines it, 100 x max(cos(image, text), 0), of the reconstruction
  against each reference caption of the image, averaged over its captions.
- `clip_score_text`: the same against the text a text-transmitting codec sent (NaN for other codecs).

Images go through the model's own CLIPProcessor (resize, centre crop, normalisation), texts through its
tokenizer (truncated to its maximum length). `--clip auto` is openai/clip-vit-large-patch14, torchmetrics'
CLIPScore default; any CLIP checkpoint by id or path works.
"""

from __future__ import annotations

import numpy as np

from metrics.spec import MetricInfo, Stage

DEFAULT_MODEL = "openai/clip-vit-large-patch14"


class CLIP:
    def __init__(self, model: str, device: str = "cpu"):
        import torch
        from transformers import CLIPModel, CLIPProcessor

        self.torch, self.device = torch, device
        self.model = CLIPModel.from_pretrained(model).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(model)

    @staticmethod
    def _unit(x):
        x = getattr(x, "pooler_output", x)  # the projected embedding, whatever wraps it
        return x / x.norm(dim=-1, keepdim=True)

    def image_embeddings(self, images: list[np.ndarray]):
        """Unit-normalised image embeddings of several images: the vision tower in one forward pass, the projection
        image by image. A projection of N rows at once is a matrix product that rounds otherwise than one row's (a
        matrix-vector product), so an image's embedding would depend on the batch it shared, and a resumed run's
        FD-CLIP on where it was stopped; row by row, it is the embedding CLIP similarity computes alone."""
        inputs = self.processor(images=[np.array(im) for im in images], return_tensors="pt").to(self.device)
        with self.torch.inference_mode():
            pooled = self.model.vision_model(pixel_values=inputs["pixel_values"]).pooler_output
            return self._unit(self.torch.cat([self.model.visual_projection(row[None]) for row in pooled]))

    def image_embedding(self, image: np.ndarray):
        return self.image_embeddings([image])[0]

    def text_embeddings(self, texts: list[str]):
        inputs = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True).to(self.device)
        with self.torch.inference_mode():
            return self._unit(self.model.get_text_features(**inputs))


def load(state: dict, device: str = "cpu") -> CLIP:
    return CLIP(state["model"], device)


def _recon(model: CLIP, reconstruction: np.ndarray, cache: dict):
    """The reconstruction's embedding, computed once per row for the three CLIP metrics (`cache["row"]` is
    the scorer's fresh dict for the current reconstruction)."""
    row = cache.setdefault("row", {})
    if "clip" not in row:
        row["clip"] = model.image_embedding(reconstruction)
    return row["clip"]


def similarity(model: CLIP, original: np.ndarray, reconstruction: np.ndarray, cache: dict) -> float:
    if "clip-original" not in cache:
        cache["clip-original"] = model.image_embedding(original)
    return float(cache["clip-original"] @ _recon(model, reconstruction, cache))


def _score(model: CLIP, reconstruction, cache, text_embeddings) -> float:
    scores = 100 * (text_embeddings @ _recon(model, reconstruction, cache))
    return float(scores.clamp(min=0).mean())


def score_captions(model: CLIP, original, reconstruction: np.ndarray, cache: dict):
    """Against the image's reference captions (`cache["captions"]`, given by the scorer), embedded once per
    original for all of its settings."""
    captions = cache.get("captions") or ()
    if not captions:
        return float("nan"), "clip_score unavailable: the image has no reference captions"
    if "clip-captions" not in cache:
        cache["clip-captions"] = model.text_embeddings(list(captions))
    return _score(model, reconstruction, cache, cache["clip-captions"])


def score_text(model: CLIP, original, reconstruction: np.ndarray, cache: dict) -> float:
    """Against the text the codec transmitted (`cache["text"]`); NaN for codecs that send none."""
    text = cache.get("text")
    return float("nan") if not text else _score(model, reconstruction, cache, model.text_embeddings([text]))


def resolve(choice: str, cache_root=None, progress: bool = False) -> dict:
    """--clip auto or MODEL, as config.json records it: the model and, once it is local, its weights' sha256."""
    import importlib.util
    import os
    from importlib import metadata

    model = DEFAULT_MODEL if choice == "auto" else choice
    if importlib.util.find_spec("transformers") is None:
        return {"status": "unavailable", "reason": "CLIP needs transformers: pip install -e '.[models]'"}
    from metrics.hub import check_model_name, local_weights
    from metrics.inception import file_sha256

    try:
        check_model_name("--clip", model, (), "transformers", "config.json", what=f"--clip {model}")
    except ValueError as exc:
        return {"status": "unavailable", "reason": str(exc)}
    state = {"status": "ok", "model": os.path.abspath(os.path.expanduser(model)) if os.path.exists(
        os.path.expanduser(model)) else model, "transformers": metadata.version("transformers")}
    weights = local_weights(model)  # a Hub id not yet downloaded is known by its id alone
    if weights:
        state.update(weights_path=os.path.abspath(weights), weights_sha256=file_sha256(weights))
    return state


SPECS = [
    Stage("clip", "none", "auto|none|MODEL",
          "CLIP similarity (original vs reconstruction) and CLIP score (vs reference captions and transmitted text) "
          "per image: none (default); auto = openai/clip-vit-large-patch14 (torchmetrics' CLIPScore default); or a "
          "CLIP checkpoint by Hub id or local folder", "metrics.clip:resolve", label="CLIP", home="image_metrics"),
    MetricInfo("clip_similarity", "CLIP image similarity (original vs reconstruction)", True, "network", "CLIP-I",
               needs=("pixels", "network:clip"), state="image_metrics.clip", tolerance=5e-3,
               fn="metrics.clip:similarity", load="metrics.clip:load"),
    MetricInfo("clip_score", "CLIP score vs reference captions (x100)", True, "network", "CLIP-S",
               needs=("pixels", "captions", "network:clip"), state="image_metrics.clip", tolerance=0.5,
               fn="metrics.clip:score_captions", load="metrics.clip:load"),
    MetricInfo("clip_score_text", "CLIP score vs the transmitted text (x100)", True, "network", "CLIP-T",
               needs=("pixels", "transmitted text", "network:clip"), state="image_metrics.clip", tolerance=0.5,
               fn="metrics.clip:score_text", load="metrics.clip:load"),
]
