"""What a run is asked to do: the dataset, codecs and metrics (hashed into the config hash), and how to
execute it (not hashed: it does not change the rows' values)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from benchmark.codecs.codec_spec import CodecSpec
from benchmark.data.imageio import DEFAULT_MAX_PIXELS
from benchmark.run import dinov2_stage, perceptual
from benchmark.run.fullref import DEFAULTS as DEFAULT_IMAGE_METRICS
from metrics import defaults, registry


@dataclass
class RunConfig:
    dataset: str = "sample"
    split: str | None = None
    preprocess: str = "none"
    limit: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    codecs: list[CodecSpec] = field(default_factory=list)
    inception: perceptual.InceptionOptions = field(default_factory=perceptual.InceptionOptions)
    caption_embedder: str = "auto"  # sentence-transformers model for caption_cosine; auto, none, id or path
    image_metrics: dict = field(default_factory=lambda: dict(DEFAULT_IMAGE_METRICS))  # MS-SSIM and LPIPS
    add_metrics: list[str] = field(default_factory=list)  # registry metrics that are off by default
    dinov2: dinov2_stage.DINOv2Options = field(default_factory=dinov2_stage.DINOv2Options)  # FD-DINOv2 and PRDC
    stages: dict = field(default_factory=dict)  # a metric file's Stage -> the choice given (only when not its default)
    iqa: list[str] = field(default_factory=list)  # pyiqa metrics by name (metrics.iqa)
    iqa_weights: dict = field(default_factory=dict)  # pyiqa metric -> local weights file
    image_list: str | None = None  # a file of image ids selecting a subset (its sha256 is in the provenance)
    protocol: str | None = None  # a paper's evaluation protocol (benchmark.run.protocols), recorded with the run
    data_root: str | None = None  # where named datasets live (not hashed: the data is checked by its checksums)
    allow_modified_dataset: bool = False  # run on a named dataset whose files changed (the changes are recorded)
    # Execution only: these do not change the rows' values.
    timeout: float = defaults.TIMEOUT_S
    chunk_size: int | None = None
    codec_batch: int | None = None  # images per encode_batch/decode_batch call, for every codec (None: its own)
    save_reconstructions: bool = False
    save_bitstreams: bool = False

    def __post_init__(self):
        # options given as config.json writes them (from_json, or a caller's dict) become their dataclasses
        if isinstance(self.inception, dict):
            self.inception = perceptual.InceptionOptions.from_json(self.inception)
        if isinstance(self.dinov2, dict):
            self.dinov2 = dinov2_stage.DINOv2Options.from_json(self.dinov2)

    def hashed_part(self) -> dict:
        # the options as given: one a run's configuration left out is hashed as absent (None), as it always was
        inception, dinov2 = self.inception.to_json(), self.dinov2.to_json()
        out = {"dataset": self.dataset, "split": self.split, "preprocess": self.preprocess, "limit": self.limit,
               "max_pixels": self.max_pixels, "codecs": [c.to_json() for c in self.codecs],
               "inception": {**{k: inception.get(k) for k in perceptual.HASHED},
                             # a protocol's FID options, absent at their defaults so earlier runs keep their hash
                             **{k: inception[k] for k in ("whole_image_fid", "patch_fid_min")
                                if inception.get(k, perceptual.DEFAULTS[k]) != perceptual.DEFAULTS[k]}},
               "caption_embedder": self.caption_embedder,
               "image_metrics": {
                   s.name: form for s in registry.STAGES.values() if s.home == "image_metrics" for form in
                   [s.hashed_form(self.image_metrics.get(s.name, s.default))] if form is not None}}
        if (dinov2.get("model") or "none") != "none":  # absent when off, so earlier runs keep their hash
            out["dinov2"] = {"model": dinov2["model"], "k": dinov2.get("k", dinov2_stage.DEFAULTS["k"])}
        if self.stages:  # absent when every stage is at its default (their weights' sha256 enter under 'weights')
            out["stages"] = dict(sorted(self.stages.items()))
        if self.iqa:  # absent when empty (the weights' sha256 enter the hash where the run is created)
            out["iqa"] = sorted(self.iqa)
        if self.add_metrics:  # absent when empty, so runs of earlier versions keep their hash
            out["add_metrics"] = sorted(self.add_metrics)
        if self.protocol:
            out["protocol"] = self.protocol
        if self.image_list:  # the list's content, not where it lies: the same list hashes the same anywhere
            import os

            from metrics.download import file_digest

            path = os.path.expanduser(self.image_list)
            out["image_list"] = file_digest(path) if os.path.isfile(path) else self.image_list
        return out

    def open_dataset(self):
        """The evaluated images: the dataset, its image list, its limit."""
        from benchmark.data.datasets import open_dataset

        return open_dataset(self.dataset, self.split, self.data_root, self.image_list,
                            self.allow_modified_dataset).limit(self.limit)

    def dataset_spec(self) -> str:
        """The dataset as a path spec codecs can open (a named dataset's unpacked folder)."""
        from benchmark.data import named_datasets

        if self.dataset in named_datasets.CATALOG:
            return named_datasets.get(self.dataset).dataset_spec(named_datasets.data_root(self.data_root))[0]
        return self.dataset

    def to_json(self) -> dict:
        d = asdict(self)
        d["codecs"] = [c.to_json() for c in self.codecs]
        d["inception"], d["dinov2"] = self.inception.to_json(), self.dinov2.to_json()
        for key in ("allow_modified_dataset", "stages"):  # absent when off, so config.json reads as it did before
            if not d[key]:
                del d[key]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "RunConfig":
        d = dict(d)
        d["codecs"] = [CodecSpec.from_json(c) for c in d["codecs"]]
        return cls(**d)


def codec_context(config: RunConfig, split: str, dataset: dict | None = None) -> dict:
    """What a codec's setup may know of the run: the dataset, its split and preprocessing, and the device its
    networks run on (--device, as every network of the run). `dataset`, config.json's description of the run's
    dataset, gives its folder as resolved when the run was created: a worker or a --resume started in another
    folder, or under another home, then opens the same one (`~/data/kodak` and `../kodak` would not)."""
    spec = config.dataset_spec()
    name = str((dataset or {}).get("name", ""))
    if name.partition(":")[0] in ("folder", "cub", "coco") and name.partition(":")[2]:  # 'folder:/abs/path'
        spec = name
    return {"dataset": spec, "split": split, "preprocess": config.preprocess,
            "device": config.inception.device or defaults.DEVICE}
