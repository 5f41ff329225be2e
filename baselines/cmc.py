"""Cross Modal Compression (CMC, ACM MM 2021): image -> caption -> entropy-coded bits -> regenerated image.

Three parts, each chosen by name: a captioner (`reference`: the dataset's own caption, an oracle that
isolates the text rate and the decoder; `sat:FILE`, the CMC authors' own captioner (baselines.cmc2021); or
any transformers image-to-text model by Hub id or local path), a lossless text codec (baselines.text_codecs:
the paper's Huffman, the authors' own, a context-model range coder, general-purpose baselines) and a generator
(`retrieval`: the training image whose caption is nearest to the received text by TF-IDF; `attngan:FILE`, the
authors' AttnGAN with `text_encoder=FILE`; or any diffusers text-to-image pipeline by Hub id or local path,
seeded). The authors' parts read their vocabulary, `vocabulary=FILE`. The rate parameter caps the
caption length in words. The decoder rebuilds the image from the bytes plus declared side information:
the text codec's table and the training split, both fitted on training data only.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np

from baselines import cmc2021
from baselines.text_codecs import TEXT_CODECS, make_text_codec
from benchmark.codecs.codec import Codec, CodecUnavailable

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
    rate_range = (1, 128)
    rate_integer = True
    defaults = {"captioner": "reference", "caption_index": 0, "text_codec": "huffman", "generator": "retrieval",
                "train": "", "device": "auto", "num_beams": 3, "max_new_tokens": 30, "seed": 0, "steps": 25,
                "guidance": 7.5, "size": 512, "text_encoder": "", "vocabulary": ""}
    option_ranges = {"caption_index": (0, 1000), "num_beams": (1, 64), "max_new_tokens": (1, 1024), "steps": (1, 1000),
                     "guidance": (0, 100), "size": (8, 4096)}
    option_choices = {"text_codec": tuple(TEXT_CODECS)}
    path_options = ("text_encoder", "vocabulary")
    prefixed_path_options = {part: (prefix.rstrip(":"),) for part, prefix in cmc2021.PREFIXES.items()}
    exact_size = False
    needs_record = True
    columns = {"caption": "string"}  # the transmitted text, decoded from the bitstream
    stochastic = True  # a diffusers generator draws from `seed` (the retrieval generator ignores it)

    def __init__(self, **options):
        super().__init__(**options)
        # Model-backed parts run in the main process (one copy of the weights) on the run's device, in batches.
        self.parallel = self.options["captioner"] == "reference" and self.options["generator"] == "retrieval"
        self.wants_gpu = not self.parallel
        self.batch_size = 1 if self.parallel else 8  # images per captioner / generator call (--codec-batch)
        self.ready = False
        if self.options["text_codec"] == "huffman2021":  # the authors' count beside the honest one
            self.columns = {**type(self).columns, "bpp_published": "float64"}
        self._captions: dict[bytes, str] = {}  # the encoder's captions by image digest: once for all settings

    @classmethod
    def check_available(cls) -> None:
        try:
            import sklearn  # noqa: F401
        except ImportError as exc:
            raise CodecUnavailable("cmc's retrieval generator needs scikit-learn: pip install -e '.[cmc]'") from exc

    def _needs_training_split(self) -> bool:
        return self.options["generator"] == "retrieval" or \
            self.options["text_codec"] in ("huffman", "huffman2021", "context")

    @classmethod
    def applicable(cls, context: dict, options: dict | None = None) -> str | None:
        codec = cls(**(options or {}))
        kind = str(context.get("dataset", "sample")).partition(":")[0]
        if codec._needs_training_split() and not codec.options["train"] and kind not in TRAIN_SPLIT:
            return (f"cmc needs a captioned training split, which a {kind if kind == 'folder' else 'plain'} dataset "
                    "does not have: pass train=SPEC (e.g. --codec 'cmc train=cub:PATH'), or use a sample, cub or coco "
                    "dataset")
        return None

    def preflight(self, context: dict) -> None:
        from metrics.hub import check_model_name

        reason = self.applicable(context, self.options)
        if reason:
            raise ValueError(reason + ".")
        if cmc2021.authors_parts(self.options):  # their files, loaded now: a mismatch is told before any work
            cmc2021.check_parts(self.options, str(context.get("dataset", "")))
        if not cmc2021.authors_file(self.options, "captioner"):
            check_model_name("captioner", self.options["captioner"], ("reference",), "transformers", "config.json")
        if not cmc2021.authors_file(self.options, "generator"):
            check_model_name("generator", self.options["generator"], ("retrieval",), "diffusers", "model_index.json")

    def setup(self, context: dict | None = None) -> None:
        from benchmark.data.datasets import open_dataset
        from benchmark.data.preprocess import get_preset

        if self.ready:
            return
        context = context or {}
        o = self.options
        captions: list[str] = []
        self.train = None
        if self._needs_training_split():
            spec = o["train"] or context.get("dataset", "sample")
            kind = spec.partition(":")[0]
            if not o["train"] and kind not in TRAIN_SPLIT:
                raise ValueError(self.applicable(context, o) + ".")
            self.train = open_dataset(spec, None if o["train"] else TRAIN_SPLIT[kind])
            if (spec, self.train.split) == (context.get("dataset"), context.get("split")):
                raise ValueError("cmc's training split must differ from the evaluated split.")
            captions = [c for r in self.train.records for c in r.captions]
        self.text_codec = make_text_codec(o["text_codec"], captions)
        self.captioner = None
        device = context.get("device", "auto") if o["device"] == "auto" else o["device"]  # the run's, unless set
        if cmc2021.authors_file(o, "captioner"):
            self.captioner = cmc2021.AuthorsCaptioner(o, device)
        elif o["captioner"] != "reference":
            from baselines.cmc_models import TransformersCaptioner

            self.captioner = TransformersCaptioner(o["captioner"], device, o["num_beams"], o["max_new_tokens"])
        if o["generator"] == "retrieval":
            self.generator = RetrievalGenerator(self.train, get_preset(context.get("preprocess", "none"))[1])
        elif cmc2021.authors_file(o, "generator"):
            self.generator = cmc2021.AuthorsGenerator(o, device)
        else:
            from baselines.cmc_models import DiffusersGenerator

            self.generator = DiffusersGenerator(o["generator"], device, o["seed"], o["steps"], o["guidance"],
                                                o["size"])
        self.ready = True

    def caption(self, image: np.ndarray, record) -> str:
        if self.captioner is not None:
            return self.captioner(image)
        if record is None or not record.captions:
            raise ValueError("the reference captioner needs the image's dataset captions; this image has none.")
        return record.captions[min(self.options["caption_index"], len(record.captions) - 1)]

    def encode(self, image: np.ndarray, setting, record=None) -> bytes:
        return self.encode_batch([image], setting, [record])[0]

    def decode(self, data: bytes) -> np.ndarray:
        return self.decode_batch([data], None)[0]

    def encode_batch(self, images: list[np.ndarray], setting, records=None) -> list[bytes]:
        """The model captioner captions the batch's new images in one call; an image's caption is kept for its
        other settings (the caption does not depend on the setting; its truncation does)."""
        records = records if records is not None else [None] * len(images)
        if self.captioner is None:
            captions = [self.caption(image, record) for image, record in zip(images, records)]
        else:
            keys = [hashlib.sha256(f"{im.shape}".encode() + np.ascontiguousarray(im).tobytes()).digest()
                    for im in images]
            new = {k: im for k, im in zip(keys, images) if k not in self._captions}
            if new:
                if len(self._captions) > 4096:
                    self._captions.clear()
                self._captions.update(zip(new, self.captioner.batch(list(new.values()))))
            captions = [self._captions[k] for k in keys]
        return [self.text_codec.encode(truncate_words(c, int(setting))) for c in captions]

    def decode_batch(self, data: list[bytes], setting) -> list[np.ndarray]:
        """From the bytes alone (the setting is not used): the generator decodes the batch's texts in one call,
        each image seeded from its own bitstream."""
        texts = [self.text_codec.decode(d) for d in data]
        if isinstance(self.generator, RetrievalGenerator):
            return [self.generator(t) for t in texts]
        from baselines.cmc_models import bitstream_seed

        return self.generator.batch(texts, [bitstream_seed(self.options["seed"], d) for d in data])

    def extra_columns(self, data: bytes) -> dict:
        return {"caption": self.text_codec.decode(data)}

    def published_bits(self, data: bytes) -> int | None:
        """huffman2021: the caption's bits as the authors count them (`--mode statistic`: no end symbol)."""
        counted = getattr(self.text_codec, "published_bits", None)
        return None if counted is None else counted(self.text_codec.decode(data))

    def side_information(self) -> dict:
        if not self.ready:
            return {}
        from baselines.cmc_models import model_identity

        info = self.text_codec.side_information()
        if self.train is not None:
            info.update(train_dataset=self.train.name, train_split=self.train.split,
                        train_fingerprint=self.train.fingerprint(), train_images=len(self.train))
        if self.options["generator"] == "retrieval":
            info["generator"] = "retrieval: TF-IDF nearest training caption -> its image"
        elif hasattr(self.generator, "identity"):
            info["generator"] = self.generator.identity()
        else:
            info["generator"] = {"diffusers": model_identity(self.options["generator"]),
                                 "seeding": "each bitstream's own: sha256(seed, bytes)"}
        if hasattr(self.captioner, "identity"):
            info["captioner"] = self.captioner.identity()
        elif self.captioner is not None:
            info["captioner"] = {"transformers": model_identity(self.options["captioner"])}
        return info

    def versions(self) -> dict:
        import sklearn

        out = {"scikit-learn": sklearn.__version__}
        for part in (self.captioner, self.generator):
            if hasattr(part, "versions"):
                out.update(part.versions())
        if self.options["text_codec"] == "context":
            import constriction

            out["constriction"] = getattr(constriction, "__version__", "installed")
        return out


class CMC2021(CMC):
    """`cmc2021 weights=DIR`: CMC with the authors' captioner, text coder and generator, read from a folder of
    their release (baselines.cmc2021.RELEASE_FILES); any part can still be named on its own."""

    name = "cmc2021"
    defaults = {**CMC.defaults, "weights": "", "text_codec": "huffman2021"}
    path_options = (*CMC.path_options, "weights")

    def __init__(self, **options):
        if not options.get("weights"):
            raise ValueError("cmc2021 needs weights=DIR, the folder of the authors' released files (or use cmc with "
                             "captioner=sat:FILE generator=attngan:FILE text_encoder=FILE vocabulary=FILE).")
        for part, path in cmc2021.release_files(options["weights"]).items():
            if options.get(part) in (None, "", self.defaults.get(part)):
                options[part] = cmc2021.PREFIXES.get(part, "") + path
        super().__init__(**options)
