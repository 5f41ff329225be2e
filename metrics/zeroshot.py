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

On MS-COCO with its instance annotations the label is the set of the k categories annotated in the image
(multi-label presence, 80 prompts "a photo of a dog."), and each value is the share of them among the k prompts
CLIP ranks highest (R-precision): of the reconstruction's, the original's and the text's top k; agreement is the
share of the original's top k among the reconstruction's. An image with no annotated object has no value.

Off by default: `--clip auto --add-metric zeroshot` (all four). On a dataset without labels they are NaN with
that reason. The reconstruction's embedding is the one CLIP similarity computes; the original's once per image.
"""

from __future__ import annotations

import numpy as np

from metrics.spec import MetricInfo

NO_LABELS = ("zero-shot classification needs a dataset with class labels (cub:PATH: CUB-200-2011's species; coco:PATH "
             "with its instances_*.json; sample)")


def _class_embeddings(model, cache: dict):
    """The class prompts' text embeddings, computed once per process and class list (kept on the model)."""
    key = (cache.get("classes"), cache.get("class_prompt"))
    store = model.__dict__.setdefault("_zeroshot_classes", {})
    if key not in store:
        store[key] = model.text_embeddings([key[1].format(name) for name in key[0]])
    return store[key]


def _predict(model, cache: dict, embedding):
    """The predicted class; on a multi-label dataset the set of the k best classes, k the number annotated."""
    scores = _class_embeddings(model, cache) @ embedding
    if _multi(cache):
        return frozenset(scores.topk(len(cache["label"])).indices.tolist())
    return int(scores.argmax())


def _multi(cache: dict) -> bool:
    return isinstance(cache.get("label"), tuple)


def _correct(predicted, cache: dict) -> float:
    """1 or 0; on a multi-label dataset the share of the annotated classes among the k predicted."""
    if _multi(cache):
        return len(predicted & set(cache["label"])) / len(cache["label"])
    return float(predicted == cache["label"])


def _original(model, original: np.ndarray, cache: dict):
    """The original's class, from the embedding CLIP similarity keeps for this original (computed here if not)."""
    if "zeroshot-original" not in cache:
        if "clip-original" not in cache:
            cache["clip-original"] = model.image_embedding(original)
        cache["zeroshot-original"] = _predict(model, cache, cache["clip-original"])
    return cache["zeroshot-original"]


def _reconstruction(model, reconstruction: np.ndarray, cache: dict):
    from metrics.clip import _recon

    return _predict(model, cache, _recon(model, reconstruction, cache))


def _labelled(cache: dict) -> bool:
    return cache.get("label") not in (None, ()) and bool(cache.get("classes"))


def _why_not(cache: dict) -> str:
    return "no object of a category is annotated in this image" if cache.get("label") == () else NO_LABELS


def reconstruction_correct(model, original, reconstruction, cache: dict):
    if not _labelled(cache):
        return float("nan"), _why_not(cache)
    return _correct(_reconstruction(model, reconstruction, cache), cache)


def original_correct(model, original, reconstruction, cache: dict):
    if not _labelled(cache):
        return float("nan"), _why_not(cache)
    return _correct(_original(model, original, cache), cache)


def agreement(model, original, reconstruction, cache: dict):
    if not cache.get("classes") or cache.get("label") == ():
        return float("nan"), _why_not(cache)
    mine, theirs = _reconstruction(model, reconstruction, cache), _original(model, original, cache)
    return len(mine & theirs) / len(theirs) if _multi(cache) else float(mine == theirs)


def text_correct(model, original, reconstruction, cache: dict):
    """From the transmitted text alone, against the class prompts; NaN for codecs that send no text."""
    if not _labelled(cache):
        return float("nan"), _why_not(cache)
    if not cache.get("text"):
        return float("nan")
    return _correct(_predict(model, cache, model.text_embeddings([cache["text"]])[0]), cache)


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
