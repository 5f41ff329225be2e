"""Text-to-image retrieval from the transmitted text: analysis in the compressed domain, without decoding. Does the
text a codec sent (CMC's caption) pick out its own original among all the setting's originals by CLIP similarity?

- `text_retrieval_r1`: the share of transmitted texts whose own original is the most similar image;
- `text_retrieval_r5`: the share whose own original is among the 5 most similar.

An original ranks behind only the images strictly more similar to the text than it is, so a gallery holding an
image twice (a bootstrap resample) does not count the copy against it. The model is the CLIP the run loads for
CLIP similarity (`--clip auto` or any CLIP); texts through its tokenizer, images through its processor, both
unit-normalised projected embeddings. Originals are embedded once and cached, in the cache FD-CLIP's CLIP space
uses (with both on, once for both); each transmitted text once per setting; rows of codecs that send no text have
none (NaN with the note "the codec transmitted no text"). Off by default: `--clip auto --add-metric
text_retrieval` (both).
"""

from __future__ import annotations

import numpy as np

from metrics.fd_clip import CLIPImageFeatures
from metrics.spec import FeatureSpace, MetricInfo

SPECS = [
    FeatureSpace("clip_text", "CLIP text", "image_metrics.clip", "metrics.text_retrieval:extractor", input="text",
                 originals="clip"),
    *[MetricInfo(f"text_retrieval_r{k}", f"Text-to-image retrieval recall@{k} from the transmitted text", True, "set",
                 f"R@{k} (text)", columns=(("n_clip_text", "float64"),) if k == 1 else (), needs=("features",),
                 state="image_metrics.clip", tolerance=0.02, default=False, space="clip_text",
                 fn="metrics.text_retrieval:recall", resample=True,
                 bounds=(0, 1), group="text_retrieval")
      for k in (1, 5)],
]


class CLIPTextAndImageFeatures(CLIPImageFeatures):
    """CLIP image embeddings (the originals) and text embeddings (what codecs transmitted), both counted."""

    def texts(self, texts: list[str]) -> np.ndarray:
        out = [self.clip.text_embeddings(texts[start:start + self.batch_size]).float().cpu().numpy()
               for start in range(0, len(texts), self.batch_size)]
        self.passes += len(texts)
        return np.concatenate(out)


def extractor(state: dict, device: str, batch_size: int) -> CLIPTextAndImageFeatures:
    return CLIPTextAndImageFeatures(state, device, batch_size)


def ranks(texts: np.ndarray, originals: np.ndarray) -> np.ndarray:
    """Per text, how many originals are strictly more similar to it than its own (0: retrieved first)."""
    similarity = texts.astype(np.float64) @ originals.astype(np.float64).T
    return (similarity > np.diag(similarity)[:, None]).sum(1)


def recall(features: np.ndarray, reference, state: dict) -> tuple[dict, str]:
    """Both recalls of a setting, against the originals of the images it transmitted text for."""
    r = ranks(features, reference.features)
    note = f"retrieval among {len(r)} originals"
    return {"text_retrieval_r1": float(np.mean(r < 1)), "text_retrieval_r5": float(np.mean(r < 5))}, note
