"""Reconstructions made elsewhere: score a folder of outputs, matched to the dataset by image id.

Layout: `DIR/<setting>/<image id>.png` (or `.ppm`) for reconstructions and `DIR/<setting>/<image id>.bin`
for bitstreams, whose size gives bpp; without bitstream files, `DIR/bits.csv` with columns image_id,
setting, bits. An id that already ends in `.png` is its own file name; `<stem>.png` is also accepted
when no two images of the dataset share that stem, and the id as it is (spaces, any script) when no other
image could have that name. This is exactly what `--save-reconstructions
--save-bitstreams` writes under `RUN/outputs/<codec>/` (with a manifest giving the settings' order).

Images are matched by id, never by order. A missing reconstruction or bit count fails that row with its
reason; files that match no image are named in one note. The rows say `produced_outside`, and the
codec's versions carry a sha256 fingerprint of every file under DIR, so the run records what it scored.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import os
import pathlib

import numpy as np
from PIL import Image

from benchmark.codecs.codec import Codec, Produced

from benchmark.codecs.codec_spec import _parse_scalar
from benchmark.data.output_names import other_file_names, output_file_name, safe_name

RECON_SUFFIXES = (".png", ".ppm")


def _stem(image_id: str) -> str:
    return os.path.splitext(image_id)[0]


class Precomputed(Codec):
    name = "precomputed"
    rate_parameter = "setting"
    defaults = {"path": "", "resize": False}
    path_options = ("path",)
    produced_outside = True
    columns = {"source_file": "string"}

    def __init__(self, **options):
        super().__init__(**options)
        if not self.options["path"]:
            raise ValueError("precomputed needs path=DIR: a folder with one subfolder of reconstructions per setting.")
        self.root = pathlib.Path(os.path.expanduser(self.options["path"]))
        if not self.root.is_dir():
            raise ValueError(f"precomputed path {str(self.root)!r} is not a folder.")
        # A reconstruction of another size fails its row, unless resize=true (then resized like a generator's).
        self.exact_size = not self.options["resize"]
        self.shared: set[str] = set()  # file names more than one image of the dataset could have
        self.bits: dict[tuple[str, str], int] = {}
        self._notes: list[str] = []

    @classmethod
    def discover_settings(cls, options: dict) -> tuple:
        root = pathlib.Path(os.path.expanduser(str(options.get("path", ""))))
        manifest = root / "manifest.json"
        if manifest.is_file():
            return tuple(_parse_scalar(v) for v in json.loads(manifest.read_text())["settings"])
        folders = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        if not folders and (root / "bits.csv").is_file():
            with open(root / "bits.csv", newline="") as f:
                folders = list(dict.fromkeys(row["setting"] for row in csv.DictReader(f)))

        def key(name):
            value = _parse_scalar(name)
            return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, name)

        return tuple(_parse_scalar(v) for v in sorted(folders, key=key))

    def setup(self, context: dict | None = None) -> None:
        from benchmark.data.datasets import open_dataset

        context = context or {}
        ids = [r.image_id for r in open_dataset(context["dataset"], context.get("split")).records] \
            if context.get("dataset") else []
        claims = collections.Counter(name for i in ids for s in (*RECON_SUFFIXES, ".bin")
                                     for name in set(self._candidates(i, s)))
        self.shared = {name for name, n in claims.items() if n > 1}
        bits_csv = self.root / "bits.csv"
        if bits_csv.is_file():
            with open(bits_csv, newline="") as f:
                for row in csv.DictReader(f):
                    try:
                        self.bits[(row["image_id"], row["setting"])] = int(float(row["bits"]))
                    except (KeyError, TypeError, ValueError):
                        raise ValueError(f"{bits_csv} needs columns image_id, setting, bits with a number of bits "
                                         f"in each row; got {row}.") from None
        self._notes = self._unmatched(ids) if ids else []

    def _candidates(self, image_id: str, suffix: str) -> list[str]:
        """The names an output of `image_id` may have: the one cmcbench writes, then the id as it is and the name
        of versions before it, and those of its stem (x for x.jpg); a name another image of the dataset could
        have too is left out (but the first, which is the image's own)."""
        first = output_file_name(image_id, suffix)
        others = other_file_names(image_id, suffix)
        if _stem(image_id) != image_id:
            others += [output_file_name(_stem(image_id), suffix), *other_file_names(_stem(image_id), suffix)]
        return [first, *(n for n in dict.fromkeys(others) if n != first and n not in self.shared)]

    def _find(self, folder: pathlib.Path, image_id: str, suffixes) -> pathlib.Path | None:
        for suffix in suffixes:
            for name in self._candidates(image_id, suffix):
                if (folder / name).is_file():
                    return folder / name
        return None

    def _unmatched(self, ids: list[str]) -> list[str]:
        expected = {name for i in ids for s in (*RECON_SUFFIXES, ".bin") for name in self._candidates(i, s)}
        stray = sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*")
                       if p.is_file() and p.parent != self.root and _relative_name(p, self.root) not in expected)
        if not stray:
            return []
        return [f"{len(stray)} file(s) under {self.root} match no image of the dataset and are ignored: "
                + ", ".join(stray[:8]) + (" ..." if len(stray) > 8 else "")]

    def notes(self) -> list[str]:
        return list(self._notes)

    def produce(self, image: np.ndarray, setting, record) -> Produced:
        label = str(setting)
        folder = self.root / safe_name(label)
        image_id = record.image_id
        recon_file = self._find(folder, image_id, RECON_SUFFIXES)
        if recon_file is None:
            raise FileNotFoundError(f"no reconstruction of {image_id} for setting {label}: no file named after it "
                                    f"(.png or .ppm) in {folder}")  # one reason for every image it happens to
        bin_file = self._find(folder, image_id, (".bin",))
        data = bin_file.read_bytes() if bin_file is not None else None
        if data is not None:
            bits = 8 * len(data)
        elif (image_id, label) in self.bits or (_stem(image_id), label) in self.bits:
            bits = self.bits.get((image_id, label), self.bits.get((_stem(image_id), label)))
        else:
            raise FileNotFoundError(f"no bit count for {image_id} at setting {label}: no "
                                    f"{folder / output_file_name(image_id, '.bin')} and no row in "
                                    f"{self.root / 'bits.csv'}")
        with Image.open(recon_file) as im:
            note = "" if im.mode == "RGB" else f"reconstruction was {im.mode}, converted to RGB"
            pixels = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
        return Produced(data, bits, pixels, {"source_file": str(recon_file.relative_to(self.root)),
                                             "output_notes": note})

    def decode(self, data: bytes) -> np.ndarray:
        raise ValueError("precomputed outputs were decoded outside cmcbench; there is no decoder to run.")

    def versions(self) -> dict[str, str]:
        """A fingerprint of every file under DIR (names, sizes and contents): what this run scored."""
        digest = hashlib.sha256()
        files = sorted(p for p in self.root.rglob("*") if p.is_file())
        for p in files:
            digest.update(f"{p.relative_to(self.root).as_posix()}|{p.stat().st_size}|".encode())
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        return {"precomputed_files": str(len(files)), "precomputed_sha256": digest.hexdigest()}

    def side_information(self) -> dict:
        return {"produced_outside": "bits and reconstructions were made outside cmcbench",
                "path": str(self.root.resolve()), "bits_from": "bits.csv" if self.bits else ".bin file sizes"}


def _relative_name(path: pathlib.Path, root: pathlib.Path) -> str:
    """The file's name below its setting folder (image ids may hold folders)."""
    rel = path.relative_to(root).parts
    return "/".join(rel[1:])
