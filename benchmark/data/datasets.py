"""Datasets: stable image ids, captions, and images read one at a time (never the whole set).

A dataset lists light `Record`s (id, path, captions, bounding box); pixels are read only when a
worker asks for one image. Supported: the generated sample set, any folder of images (captions from
sidecar .txt files), CUB-200-2011 in AttnGAN's layout with the Reed et al. captions, MS-COCO 2014 and 2017,
and the named test sets of benchmark.data.named_datasets (fetched and checked there, opened as one of these).
An image list selects a subset of any of them.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import pathlib
import pickle
import re
from dataclasses import dataclass, field

from benchmark import command
from benchmark.data import sample
from benchmark.data.imageio import DEFAULT_MAX_PIXELS, LoadedImage, load_rgb8

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm",
                    ".jp2", ".j2k", ".tga"}


@dataclass(frozen=True)
class Record:
    image_id: str
    index: int  # position in the dataset's (sorted, stable) order
    path: str | None = None
    captions: tuple[str, ...] = ()
    bbox: tuple[float, float, float, float] | None = None  # x, y, w, h
    # its class, an index into the dataset's `classes` (CUB's species); on a multi-label dataset (MS-COCO with its
    # instance annotations) the tuple of the classes present, () for an image with none annotated
    label: int | tuple[int, ...] | None = None
    # MS-COCO's instance annotations: (x, y, w, h, category id, iscrowd, area) in the file's stored pixels
    objects: tuple[tuple[float, ...], ...] = ()


@dataclass
class Dataset:
    kind: str
    root: str
    split: str
    records: list[Record]
    notes: list[str] = field(default_factory=list)
    origin: dict = field(default_factory=dict)  # a named dataset's sources and checksums, an image list's sha256
    named: str = ""  # the catalog name it was opened by (benchmark.data.named_datasets)
    classes: tuple[str, ...] = ()  # class names of a labelled dataset, in label order (all of them, any split)
    class_prompt: str = "a photo of a {}."  # how a zero-shot classifier names a class

    def class_record(self) -> dict:
        """What config.json records about the classes (nothing for an unlabelled dataset)."""
        return {"classes": list(self.classes), "class_prompt": self.class_prompt} if self.classes else {}

    def __len__(self) -> int:
        return len(self.records)

    def read(self, record: Record, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
        if self.kind == "sample":
            return load_rgb8(sample.render(int(record.image_id.rsplit("-", 1)[1])))
        return load_rgb8(record.path, max_pixels)

    def limit(self, n: int | None) -> "Dataset":
        if n is None or n >= len(self.records):
            return self
        return dataclasses.replace(self, records=self.records[:n])

    @property
    def name(self) -> str:
        if self.named:
            return self.named
        return f"{self.kind}:{self.root}" if self.root else self.kind

    def fingerprint(self) -> str:
        """Hash of the ids, file sizes and captions: changes when the listed data changes."""
        h = hashlib.sha256(f"{self.kind}|{self.split}|v{sample.SAMPLE_VERSION}".encode())
        for r in self.records:
            size = os.path.getsize(r.path) if r.path and os.path.exists(r.path) else -1
            h.update(f"{r.image_id}|{size}|{r.bbox}|{'|'.join(r.captions)}\n".encode())
        return h.hexdigest()[:16]


DATASET_KINDS = ("sample", "folder", "cub", "coco")


def open_dataset(spec: str, split: str | None = None, data_root: str | None = None,
                 image_list: str | None = None, allow_modified: bool = False) -> Dataset:
    """'sample', 'sample:N', 'folder:PATH' (or just PATH), 'cub:PATH', 'coco:PATH', or a named dataset
    (benchmark.data.named_datasets: kodak, clic2020-professional-valid, ...) under `data_root`; `~` is expanded.
    `image_list`: a file of image ids (or paths relative to the dataset), one per line, that selects a subset.
    `allow_modified`: open a named dataset whose unpacked files differ from its manifest (recorded in its origin)."""
    dataset = _open(spec, split, data_root, allow_modified)
    return select(dataset, image_list) if image_list else dataset


def select(dataset: Dataset, image_list: str) -> Dataset:
    """The images an image list names, in the dataset's order; every listed id missing is named."""
    path = pathlib.Path(os.path.expanduser(image_list))
    if not path.is_file():
        raise ValueError(f"--image-list {image_list!r}: no such file.")
    data = path.read_bytes()
    wanted = [line.strip() for line in data.decode("utf-8", errors="replace").splitlines()
              if line.strip() and not line.lstrip().startswith("#")]
    if not wanted:
        raise ValueError(f"--image-list {str(path)!r} lists no images.")

    def aliases(name: str) -> list[str]:  # an id, its file name, and both without the extension
        base = name.rsplit("/", 1)[-1]
        return [name, name.rsplit(".", 1)[0], base, base.rsplit(".", 1)[0]]

    index: dict[str, Record] = {}
    for rank in range(4):  # exact ids first, looser names only where they are not taken
        for r in dataset.records:
            for name in (r.image_id, *([pathlib.Path(r.path).name] if r.path else [])):
                index.setdefault(aliases(name)[rank], r)
    chosen, missing, repeated = {}, [], 0
    for item in wanted:
        record = next((index[a] for a in aliases(item) if a in index), None)
        if record is None:
            missing.append(item)
        else:
            repeated += record.index in chosen
            chosen[record.index] = record
    if missing:
        raise ValueError(f"--image-list {str(path)!r}: {len(missing)} of {len(wanted)} listed images are not in "
                         f"{dataset.name} ({dataset.split}): {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more." if len(missing) > 5 else "."))
    records = [Record(r.image_id, k, r.path, r.captions, r.bbox)
               for k, r in enumerate(chosen[i] for i in sorted(chosen))]
    origin = {**dataset.origin, "image_list": {"path": str(path.resolve()), "listed": len(wanted),
                                                "sha256": hashlib.sha256(data).hexdigest(), "images": len(records)}}
    # a list of captions' images (MS-COCO 30k) names an image once per caption: each image is evaluated once
    n = len(records)
    notes = [f"--image-list {path.name}: {len(wanted)} lines name {n} image{'' if n == 1 else 's'} ({repeated} "
             f"line{' repeats' if repeated == 1 else 's repeat'} an image listed before): each image is evaluated "
             "once"] if repeated else []
    return dataclasses.replace(dataset, records=records, origin=origin, notes=[*dataset.notes, *notes])


def draw_image_list(dataset: Dataset, n: int, seed: int = 0) -> list[str]:
    """n distinct captioned images drawn uniformly with `seed`, in the dataset's order: the text-to-image
    convention for MS-COCO 30k (30,000 val2014 images, one of whose captions serves as the prompt)."""
    import numpy as np

    captioned = [r.image_id for r in dataset.records if r.captions] or [r.image_id for r in dataset.records]
    if n > len(captioned):
        raise ValueError(f"Cannot draw {n} images from {dataset.name} ({dataset.split}): it has {len(captioned)}.")
    pick = np.random.default_rng(seed).choice(len(captioned), size=n, replace=False)
    return [captioned[i] for i in sorted(pick.tolist())]


def _open(spec: str, split: str | None, data_root: str | None, allow_modified: bool = False) -> Dataset:
    from benchmark.data import named_datasets

    if spec in named_datasets.CATALOG and not os.path.isdir(os.path.expanduser(spec)):
        resolved, default_split, origin = named_datasets.resolve(spec, named_datasets.data_root(data_root),
                                                                 allow_modified)
        dataset = _open(resolved, split or default_split, None)
        dataset.origin, dataset.named = origin, spec
        return dataset
    kind, sep, arg = spec.partition(":")
    arg = os.path.expanduser(arg)
    if kind == "sample":
        if arg and not (arg.isdigit() and int(arg) > 0):
            raise ValueError(f"sample:N takes a positive whole number of images, not {arg!r}.")
        return sample_dataset(int(arg) if arg else 48, split or "test")
    if kind in ("cub", "coco", "folder") and not arg:
        raise ValueError(f"--dataset {kind}: needs a path, e.g. {kind}:~/data/{kind}.")
    if kind == "cub":
        return cub_dataset(arg, split or "test")
    if kind == "coco":
        return coco_dataset(arg, split or "val2014")
    if kind == "folder":
        return folder_dataset(arg, split or "all")
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        return folder_dataset(path, split or "all")
    if os.path.exists(path):
        raise ValueError(f"Dataset {spec!r} is a file; give the folder that holds the images.")
    if sep and kind in named_datasets.CATALOG:  # kodak:DIR, as cub:DIR: a named dataset takes its folder apart
        raise ValueError(f"{kind} is a named dataset, opened by its name: --dataset {kind} --data-root DIR reads "
                         f"DIR/{kind} ({command()} datasets fetch {kind} puts it there); for a folder of images "
                         f"as it is, --dataset folder:{arg}.")
    if sep and len(kind) > 1 and kind not in DATASET_KINDS or os.sep in spec or spec.startswith(("~", ".")):
        raise ValueError(f"Dataset folder {path!r} does not exist." if not sep or len(kind) <= 1 else
                         f"Unknown dataset kind {kind!r}: use sample, sample:N, folder:PATH, cub:PATH, coco:PATH, "
                         "or the path of a folder of images.")
    close = difflib.get_close_matches(spec, [*named_datasets.CATALOG, "sample"], 1)
    raise ValueError(f"Unknown dataset {spec!r}: {f'did you mean {close[0]!r}? Or ' if close else ''}"
                     f"use a named dataset ({command()} datasets list), sample, "
                     "sample:N, folder:PATH, cub:PATH, coco:PATH, or the path of a folder of images (no folder of "
                     "that name exists here).")


SHORT_NAMES = {"cub": "CUB-200-2011", "coco": "MS-COCO", "sample": "sample"}


def short_name(name: str) -> str:
    """A dataset's name for titles: 'kodak' for folder:/data/kodak, 'CUB-200-2011' for cub:PATH, 'sample'."""
    kind, sep, arg = str(name).partition(":")
    if not sep:
        return pathlib.Path(kind).name or kind
    if kind == "folder":
        return pathlib.Path(arg).name or arg
    return SHORT_NAMES.get(kind, kind)


def sample_dataset(n: int = 48, split: str = "test") -> Dataset:
    if split not in ("test", "train", "all"):
        raise ValueError(f"The sample set has splits test, train and all, not {split!r}.")
    keep = [i for i in range(n) if split == "all" or sample.is_test(i) == (split == "test")]
    colours = list(sample.COLOURS)
    records = [Record(f"sample-{i:05d}", k, None, tuple(sample.captions(i)),
                      label=colours.index(sample.scene(i)["background"])) for k, i in enumerate(keep)]
    # Its one unambiguous class per image: the background's colour (the shapes on it are one to three).
    return Dataset("sample", str(n), split, records, classes=tuple(colours),
                   class_prompt="shapes on a {} background.")


def _read_captions(path: pathlib.Path) -> tuple[str, ...]:
    if not path.exists():
        return ()
    text = path.read_text(encoding="utf-8", errors="replace")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def folder_dataset(root: str, split: str = "all") -> Dataset:
    base = pathlib.Path(root).expanduser()
    if not base.is_dir():
        raise ValueError(f"Dataset folder {str(base)!r} does not exist or is not a folder.")
    if split != "all":  # a label only, which compare would then hold against a run of the same images
        raise ValueError(f"--split {split}: a folder of images is one set (split all); drop --split, or give the "
                         "folder that holds that split's images.")
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"No image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {root!r}.")
    records = [Record(p.relative_to(base).as_posix(), k, str(p), _read_captions(p.with_suffix(".txt")))
               for k, p in enumerate(files)]
    return Dataset("folder", str(base.resolve()), split, records)


def _cub_text_dir(root: pathlib.Path) -> pathlib.Path | None:
    for name in ("text", "text_c10"):
        if (root / name).is_dir():
            return root / name
    return None


def cub_dataset(root: str, split: str = "test") -> Dataset:
    """CUB-200-2011 as AttnGAN lays it out: ROOT/CUB_200_2011, ROOT/text (or text_c10), ROOT/{train,test}.

    'test' and 'train' are AttnGAN's class-disjoint split (filenames.pickle: 2,933 test images);
    'official-test' and 'official-train' use CUB's own train_test_split.txt.
    """
    base = pathlib.Path(root).expanduser()
    if not base.is_dir():
        raise ValueError(f"CUB: the folder {str(base)!r} does not exist.")
    cub = base / "CUB_200_2011" if (base / "CUB_200_2011").is_dir() else base
    for needed in ("images.txt", "bounding_boxes.txt", "images"):
        if not (cub / needed).exists():
            shown = cub / needed if cub != base else base / "CUB_200_2011" / needed
            raise ValueError(f"CUB: {shown} is missing; PATH must hold CUB_200_2011/ as distributed (with "
                             "images.txt, bounding_boxes.txt and images/).")
    ids = {}
    with open(cub / "images.txt") as f:
        for line in f:
            if line.strip():
                num, rel = line.split()
                ids[num] = rel[:-4] if rel.endswith(".jpg") else rel
    boxes = {}
    with open(cub / "bounding_boxes.txt") as f:
        for line in f:
            if line.strip():
                num, *xywh = line.split()
                boxes[ids[num]] = tuple(float(v) for v in xywh)
    if split in ("test", "train"):
        pick = base / split / "filenames.pickle"
        if not pick.exists():
            raise ValueError(f"CUB: {pick} is missing (AttnGAN's split); use --split official-{split} for CUB's own.")
        with open(pick, "rb") as f:
            names = list(pickle.load(f, encoding="latin1"))
    elif split in ("official-test", "official-train"):
        want = "0" if split == "official-test" else "1"
        with open(cub / "train_test_split.txt") as f:
            names = [ids[num] for num, flag in (line.split() for line in f if line.strip()) if flag == want]
    else:
        raise ValueError(f"CUB splits are test, train, official-test and official-train, not {split!r}.")
    text = _cub_text_dir(base) or _cub_text_dir(base.parent)
    folders = _cub_classes(cub, ids.values())
    label = {folder: k for k, folder in enumerate(folders)}
    records = []
    for k, name in enumerate(sorted(names)):
        caps = _read_captions(text / f"{name}.txt") if text else ()
        records.append(Record(name, k, str(cub / "images" / f"{name}.jpg"), caps, boxes.get(name),
                              label.get(name.split("/", 1)[0])))
    notes = [] if text else ["no text/ or text_c10/ folder: images have no captions"]
    return Dataset("cub", str(base.resolve()), split, records, notes,
                   classes=tuple(re.sub(r"^\d+\.", "", f).replace("_", " ") for f in folders),
                   class_prompt="a photo of a {}, a type of bird.")


def _cub_classes(cub: pathlib.Path, image_ids) -> list[str]:
    """CUB's class folders in label order: classes.txt ('1 001.Black_footed_Albatross'), else the folders the
    images lie in, sorted (the same order: the folders are numbered)."""
    if (cub / "classes.txt").exists():
        with open(cub / "classes.txt") as f:
            return [line.split()[1] for line in f if line.strip()]
    return sorted({i.split("/", 1)[0] for i in image_ids if "/" in i})


def coco_dataset(root: str, split: str = "val2014") -> Dataset:
    """MS-COCO 2014 or 2017: ROOT/{train,val}{2014,2017}/*.jpg and ROOT/annotations/captions_{split}.json; with
    ROOT/annotations/instances_{split}.json beside it, the 80 categories as classes and each image's label the
    tuple of the categories annotated in it (multi-label presence), and its objects' boxes (`Record.objects`)."""
    split = {"test": "val2014", "val": "val2014", "train": "train2014"}.get(split, split)
    if split not in ("train2014", "val2014", "train2017", "val2017"):
        raise ValueError(f"COCO splits are train2014, val2014, train2017 and val2017, not {split!r}.")
    base = pathlib.Path(root).expanduser()
    if not base.is_dir():
        raise ValueError(f"COCO: the folder {str(base)!r} does not exist.")
    ann = base / "annotations" / f"captions_{split}.json"
    if not ann.exists():
        raise ValueError(f"COCO: {ann} is missing.")
    with open(ann) as f:
        data = json.load(f)
    caps: dict[int, list[str]] = {}
    for a in data.get("annotations", []):
        caps.setdefault(a["image_id"], []).append(a["caption"].strip())
    images = sorted(data["images"], key=lambda im: im["file_name"])
    classes, present, objects = _coco_instances(base / "annotations" / f"instances_{split}.json")
    records = [Record(im["file_name"].rsplit(".", 1)[0], k, str(base / split / im["file_name"]),
                      tuple(caps.get(im["id"], ())), label=present.get(im["id"], ()) if classes else None,
                      objects=objects.get(im["id"], ()))
               for k, im in enumerate(images)]
    return Dataset("coco", str(base.resolve()), split, records, classes=classes)


def _coco_instances(path: pathlib.Path) -> tuple[tuple[str, ...], dict[int, tuple[int, ...]], dict[int, tuple]]:
    """(the category names in id order, {image id: the indices of the categories annotated in it}, {image id: its
    objects as (x, y, w, h, category id, iscrowd, area)}) from COCO's instance annotations; ((), {}, {}) without
    the file."""
    if not path.exists():
        return (), {}, {}
    with open(path) as f:
        data = json.load(f)
    categories = sorted(data.get("categories", []), key=lambda c: c["id"])
    index = {c["id"]: k for k, c in enumerate(categories)}
    present: dict[int, set[int]] = {}
    objects: dict[int, list[tuple]] = {}
    for a in data.get("annotations", []):
        present.setdefault(a["image_id"], set()).add(index[a["category_id"]])
        if a.get("bbox"):
            x, y, w, h = a["bbox"]
            objects.setdefault(a["image_id"], []).append(
                (x, y, w, h, a["category_id"], a.get("iscrowd", 0), a.get("area", w * h)))
    return (tuple(c["name"] for c in categories), {i: tuple(sorted(c)) for i, c in present.items()},
            {i: tuple(o) for i, o in objects.items()})
