"""Cross Modal Compression (CMC, ACM MM 2021): image -> caption -> entropy-coded bits -> regenerated image.

Three parts, each chosen by name: a captioner (`reference`: the dataset's own caption, an oracle that
isolates the text rate and the decoder), a lossless text codec (baselines.text_codecs: the paper's
Huffman, a context-model range coder, general-purpose baselines) and a generator (`retrieval`: the
training image whose caption is nearest to the received text by TF-IDF). The rate parameter caps the
caption length in words. The decoder rebuilds the image from the bytes plus declared side information:
the text codec's table and the training split, both fitted on training data only.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from baselines.text_codecs import make_text_codec
from benchmark.codec import Codec, CodecUnavailable

TRAIN_SPLIT = {"sample": "train", "cub": "train", "coco": "train2014"}


def truncate_words(text: str, max_words: int) -> str:
    return " ".join(text.split()[:max_words]) if max_words > 0 else text


class RetrievalGenerator:
    """Returns the training image whose caption is nearest (TF-IDF cosine) to the text; never an image of the
    evaluated split, since it only ever indexes the training split."""

    def __init__(self, dataset, preprocess):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.dataset, self.preprocess = dataset, preprocess
        self.owner = [r.index for r in dataset.records for _ in r.captions]
        captions = [c for r in dataset.records for c in r.captions]
        if not captions:
            raise ValueError(f"The retrieval generator needs captioned training images; {dataset.name} "
                             f"({dataset.split}) has none.")
        self.vectorizer = TfidfVectorizer(lowercase=True, token_pattern=r"(?u)\b\w+\b")
        self.matrix = self.vectorizer.fit_transform(captions)
        self.image = lru_cache(maxsize=64)(self._image)

    def nearest(self, text: str) -> int:
        scores = (self.matrix @ self.vectorizer.transform([text]).T).toarray().ravel()
        return self.owner[int(np.argmax(scores))]  # ties: the first caption in dataset order

    def _image(self, index: int) -> np.ndarray:
        record = self.dataset.records[index]
        return np.ascontiguousarray(self.preprocess(self.dataset.read(record).pixels, record))

    def __call__(self, text: str) -> np.ndarray:
        return self.image(self.nearest(text))


class CMC(Codec):
    name = "cmc"
    rate_parameter = "max_words"
    default_sweep = (4, 8, 16, 64)
    defaults = {"captioner": "reference", "caption_index": 0, "text_codec": "huffman", "generator": "retrieval",
                "train": ""}
    exact_size = False
    needs_record = True

    def __init__(self, **options):
        super().__init__(**options)
        if self.options["captioner"] != "reference":
            raise CodecUnavailable(f"cmc captioner {self.options['captioner']!r} is not available in this version: "
                                   "use captioner=reference.")
        if self.options["generator"] != "retrieval":
            raise CodecUnavailable(f"cmc generator {self.options['generator']!r} is not available in this version: "
                                   "use generator=retrieval.")
        self.ready = False

    @classmethod
    def check_available(cls) -> None:
        try:
            import sklearn  # noqa: F401
        except ImportError as exc:
            raise CodecUnavailable("cmc's retrieval generator needs scikit-learn: pip install -e '.[cmc]'") from exc

    def setup(self, context: dict | None = None) -> None:
        from benchmark.datasets import open_dataset
        from benchmark.preprocess import get_preset

        if self.ready:
            return
        context = context or {}
        spec = self.options["train"] or context.get("dataset", "sample")
        kind = spec.partition(":")[0]
        if not self.options["train"] and kind not in TRAIN_SPLIT:
            raise ValueError("cmc needs a captioned training split: pass train=SPEC (e.g. train=folder:PATH).")
        self.train = open_dataset(spec, None if self.options["train"] else TRAIN_SPLIT[kind])
        evaluated = (context.get("dataset"), context.get("split"))
        if (spec, self.train.split) == evaluated:
            raise ValueError("cmc's training split must differ from the evaluated split.")
        captions = [c for r in self.train.records for c in r.captions]
        self.text_codec = make_text_codec(self.options["text_codec"], captions)
        self.generator = RetrievalGenerator(self.train, get_preset(context.get("preprocess", "none"))[1])
        self.ready = True

    def caption(self, image: np.ndarray, record) -> str:
        if record is None or not record.captions:
            raise ValueError("the reference captioner needs the image's dataset captions; this image has none.")
        return record.captions[min(self.options["caption_index"], len(record.captions) - 1)]

    def encode(self, image: np.ndarray, setting, record=None) -> bytes:
        return self.text_codec.encode(truncate_words(self.caption(image, record), int(setting)))

    def decode(self, data: bytes) -> np.ndarray:
        return self.generator(self.text_codec.decode(data))

    def extra_columns(self, data: bytes) -> dict:
        return {"caption": self.text_codec.decode(data)}

    def side_information(self) -> dict:
        if not self.ready:
            return {}
        info = self.text_codec.side_information()
        info.update(train_dataset=self.train.name, train_split=self.train.split,
                    train_fingerprint=self.train.fingerprint(), train_images=len(self.train),
                    generator="retrieval: TF-IDF nearest training caption -> its image")
        return info

    def versions(self) -> dict:
        import sklearn

        out = {"scikit-learn": sklearn.__version__}
        if self.options["text_codec"] == "context":
            import constriction

            out["constriction"] = getattr(constriction, "__version__", "installed")
        return out

