"""Papers' evaluation protocols, one flag each (`--protocol NAME`), recorded with the run.

A protocol fixes what silently differs between papers: the preprocessing (crop, resize, interpolation) and
the FID protocol (whole images, or 256-px patches with a half-shifted grid, and the least number of samples
below which no FID is reported). Its effect is written in config.json (`protocol`, the preprocessing, the
Inception options it sets) and shows in the rows (image sizes) and the summary (`n_patches`, notes).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from metrics.fid import MIN_SAMPLES


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    papers: str
    preprocess: str  # a preprocessing preset; "auto": cmc2021 for CUB and MS-COCO, none for others
    whole_image_fid: bool = True  # IS, FID and KID over whole images
    patch_fid: bool = False  # FID over 256-px patches plus a grid shifted by 128 (FID/256)
    patch_fid_min: int = 0  # below this many patches, no patch FID (NaN with the reason)
    iqa: tuple[str, ...] = ()  # pyiqa metrics the protocol scores with (metrics.iqa)
    clip: str = ""  # the CLIP model it turns on when --clip is not given
    stages: tuple[tuple[str, str], ...] = ()  # metric files' options it turns on when not given: ("classify", "auto")
    add_metrics: tuple[str, ...] = ()  # metrics (or groups) that are off by default and it adds
    stages_by_kind: tuple[tuple[str, str, str], ...] = ()  # (dataset kind, option, choice): ("coco", "detect", "auto")
    unavailable: str = ""  # why the protocol cannot run in this version

    def inception_options(self) -> dict:
        return {"whole_image_fid": self.whole_image_fid, "patch_fid": self.patch_fid,
                "patch_fid_min": self.patch_fid_min}

    def as_record(self) -> dict:
        return {"name": self.name, "description": self.description, "papers": self.papers,
                "preprocess": self.preprocess, **self.inception_options(),
                **({"iqa": list(self.iqa)} if self.iqa else {}),
                **({"clip": self.clip} if self.clip else {}), **({"stages": dict(self.stages)} if self.stages else {}),
                **({"add_metrics": list(self.add_metrics)} if self.add_metrics else {}),
                **({"stages_by_kind": [list(x) for x in self.stages_by_kind]} if self.stages_by_kind else {})}

    def given(self, values: dict) -> dict:
        """Metric files' options as the user gave them ({dest: value}), with the protocol's pyiqa metrics joined to
        --iqa's."""
        return {**values, "iqa": ",".join([values["iqa"], *self.iqa])} if self.iqa else values

    def options(self, args, kind: str) -> tuple[str, dict, list[str]]:
        """The run's CLIP model, metric-file options and added metrics on a dataset of `kind`: the user's where
        given, else the protocol's."""
        clip = args.clip if args.clip not in (None, "", "none") or not self.clip else self.clip
        stages = {**dict(self.stages), **{name: choice for k, name, choice in self.stages_by_kind if k == kind}}
        return clip, stages, list(self.add_metrics)


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in [
    Protocol("cmc2021", "CMC (ACM MM 2021): CUB cropped around the bird's box as AttnGAN does and every image of CUB "
             "and MS-COCO resized to 256x256 bicubic (others as read); IS, FID, KID on whole images",
             "CMC (Li et al., ACM MM 2021), AttnGAN-style text-to-image evaluation", "auto"),
    Protocol("hific", "HiFiC / MS-ILLM: full resolution; FID and KID only as FID/256 (256-px patches plus the grid "
             f"shifted by 128), never on whole images, and no FID from fewer than {MIN_SAMPLES} patches",
             "HiFiC (Mentzer et al. 2020), MS-ILLM (Muckley et al. 2023)", "none", whole_image_fid=False,
             patch_fid=True, patch_fid_min=MIN_SAMPLES),
    Protocol("perco", "PerCo: every image resized to 512x512 bicubic (non-square images are squashed, as PerCo "
             "does), IS, FID, KID on whole images", "PerCo (Careil et al. 2024)", "resize-512"),
    Protocol("cmc-bench", "CMC-Bench: images as stored; TOPIQ-FR and TOPIQ-NR through pyiqa (CMC-Bench's fine-tuned "
             "files with --iqa-weights topiq_fr=PATH --iqa-weights topiq_nr=PATH, else pyiqa's), overall = 2/3 FR + "
             "1/3 NR per image (cmc_bench_overall)", "CMC-Bench (Li et al. 2024)", "none",
             iqa=("topiq_fr", "topiq_nr")),
    Protocol("semantic", "Semantic fidelity as machines read it: classification agreement with the original's "
             "prediction (torchvision ResNet-50 unless --classify says otherwise), zero-shot CLIP classification on "
             "labelled datasets (CUB's species) from the reconstruction and from the transmitted text, on MS-COCO "
             "detection agreement (torchvision Faster R-CNN v2 unless --detect says otherwise), and "
             "text-to-image retrieval from the transmitted text (CLIP openai/clip-vit-large-patch14 unless --clip "
             "says otherwise); images as the dataset's usual preprocessing gives them",
             "label-free task agreement (arXiv 2205.06519), CMC's semantic supervision", "auto",
             clip="auto", stages=(("classify", "auto"),), add_metrics=("zeroshot", "text_retrieval"),
             stages_by_kind=(("coco", "detect", "auto"),)),
]}


def get(name: str) -> Protocol:
    if name not in PROTOCOLS:
        close = "".join(f"did you mean {p!r}? Or " for p in difflib.get_close_matches(name, list(PROTOCOLS), 1))
        raise ValueError(f"Unknown protocol {name!r}: {close}use {', '.join(PROTOCOLS)}.")
    protocol = PROTOCOLS[name]
    if protocol.unavailable:
        raise ValueError(f"--protocol {name} is not available: {protocol.unavailable}.")
    return protocol
