"""Zero-shot classification with the run's CLIP: does the reconstruction, and does the transmitted text alone,
still name the image's class? On a labelled dataset (`Dataset.classes`: CUB-200-2011's 200 species, the sample
set's background colours), each class is a prompt ("a photo of a Black footed Albatross, a type of bird.", as
CLIP's paper prompts CUB) embedded once by CLIP's text tower; an image is classified as the prompt its embedding
is most similar to.

Per image (so each setting's value is a share of images, with BCa intervals):
- `zeroshot_reconstruction`: 1 when the reconstruction is classified as the image's label;
- `zeroshot_original`: the same for the original (the ceiling beside it; the same in every setting);
- `zeroshot_agreement`: 1 when the reconstruction gets the original's class, label or not;
- `zeroshot_text`: 1 when the text the codec transmitted, through CLIP's text tower, is most similar to the
  label's prompt: analysis in the compressed domain, without decoding (NaN for codecs that send no text).

Off by default: `--clip auto --add-metric zeroshot` (all four). On a dataset without labels they are NaN with
that reason. The reconstruction's embedding is the one CLIP similarity computes; the original's once per image.
"""

from __future__ import annotations

import numpy as np

from metrics.spec import MetricInfo

NO_LABELS = "zero-shot classification needs a dataset with class labels (cub:PATH: CUB-200-2011's species; sample)"


def _class_embeddings(model, cache: dict):
    """The class prompts' text embeddings, computed once per process and class list (kept on the model)."""
    key = (cache.get("classes"), cache.get("class_prompt"))
    store = model.__dict__.setdefault("_zeroshot_classes", {})
    if key not in store:
        store[key] = model.text_embeddings([key[1].format(name) for name in key[0]])
    return store[key]


def _predict(model, cache: dict, embedding) -> int:
    return int((_class_embeddings(model, cache) @ embedding).argmax())


def _original(model, original: np.ndarray, cache: dict) -> int:
    """The original's class, from the embedding CLIP similarity keeps for this original (computed here if not)."""
    if "zeroshot-original" not in cache:
        if "clip-original" not in cache:
            cache["clip-original"] = model.image_embedding(original)
        cache["zeroshot-original"] = _predict(model, cache, cache["clip-original"])
    return cache["zeroshot-original"]


def _reconstruction(model, reconstruction: np.ndarray, cache: dict) -> int:
    from metrics.clip import _recon

    return _predict(model, cache, _recon(model, reconstruction, cache))


def _labelled(cache: dict) -> bool:
    return cache.get("label") is not None and bool(cache.get("classes"))


def reconstruction_correct(model, original, reconstruction, cache: dict):
    if not _labelled(cache):
        return float("nan"), NO_LABELS
    return float(_reconstruction(model, reconstruction, cache) == cache["label"])


def original_correct(model, original, reconstruction, cache: dict):
    if not _labelled(cache):
        return float("nan"), NO_LABELS
    return float(_original(model, original, cache) == cache["label"])


def agreement(model, original, reconstruction, cache: dict):
    if not cache.get("classes"):
        return float("nan"), NO_LABELS
    return float(_reconstruction(model, reconstruction, cache) == _original(model, original, cache))


def text_correct(model, original, reconstruction, cache: dict):
    """From the transmitted text alone, against the class prompts; NaN for codecs that send no text."""
    if not _labelled(cache):
        return float("nan"), NO_LABELS
    if not cache.get("text"):
        return float("nan")
    return float(_predict(model, cache, model.text_embeddings([cache["text"]])[0]) == cache["label"])


SPECS = [
    MetricInfo(f"zeroshot_{name}", label, True, "network", short, needs=("pixels", "labels", *needs, "network:clip"),
               state="image_metrics.clip", tolerance=0.02, fn=f"metrics.zeroshot:{fn}", load="metrics.clip:load",
               default=False, bounds=(0, 1), group="zeroshot")
    for name, label, short, needs, fn in (
        ("reconstruction", "Zero-shot CLIP accuracy on the reconstruction", "ZS rec.", (), "reconstruction_correct"),
        ("original", "Zero-shot CLIP accuracy on the original", "ZS orig.", (), "original_correct"),
        ("agreement", "Zero-shot CLIP class agreement (reconstruction vs original)", "ZS agr.", (), "agreement"),
        ("text", "Zero-shot CLIP accuracy from the transmitted text", "ZS text", ("transmitted text",),
         "text_correct"))
]
