"""Compressed-domain fidelity: the transmitted caption scored against the image's reference captions."""

from __future__ import annotations


def caption_scores(caption: str, references) -> dict:
    """Sentence BLEU-4 (sacrebleu, 0..1) of the caption against all references; None when sacrebleu is absent."""
    try:
        from sacrebleu.metrics import BLEU
    except ImportError:
        return {"caption_bleu4": None}
    bleu = BLEU(effective_order=True)
    return {"caption_bleu4": bleu.sentence_score(caption, list(references)).score / 100.0}
