"""File names of saved outputs: what `--save-reconstructions`/`--save-bitstreams` write and the `precomputed`
codec reads back (OUTPUTS/<codec>/<setting>/<image id>.png|.bin), made safe for any file system."""

from __future__ import annotations

import hashlib
import os
import re


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text) or "_"


def output_file_name(image_id: str, suffix: str) -> str:
    """A saved output's file name: the image id (folders kept, characters made safe) plus the suffix, except
    that a .png reconstruction of an id already ending in .png keeps the id as it is. Ids are unique, and so are
    the names: a part whose characters were replaced carries a digest of what it was (猫.png and 犬.png are
    _-<digest>.png each, not both _.png), so two images never share a file."""
    return _file_name([_unique_part(p) for p in _parts(image_id)], suffix)


def other_file_names(image_id: str, suffix: str) -> list[str]:
    """Names an output of `image_id` may have in a folder not written by this version: the id as it is (a
    folder of your own model's outputs, named after the dataset's files), and the name of versions before the
    digest (which replaced characters only)."""
    names = [_file_name(_parts(image_id), suffix), _file_name([safe_name(p) for p in _parts(image_id)], suffix)]
    return [n for n in dict.fromkeys(names) if n != output_file_name(image_id, suffix)]


def _parts(image_id: str) -> list[str]:
    return [p for p in image_id.split("/") if p not in ("", ".", "..")]


def _unique_part(part: str) -> str:
    safe = safe_name(part)
    if safe == part:
        return part
    stem, ext = os.path.splitext(part)
    digest = hashlib.sha256(part.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{safe_name(stem) if stem else ''}-{digest}{safe_name(ext) if ext else ''}"


def _file_name(parts: list[str], suffix: str) -> str:
    name = "/".join(parts) or "_"
    return name if suffix == ".png" and name.lower().endswith(".png") else name + suffix
