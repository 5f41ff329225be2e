"""File names of saved outputs: what `--save-reconstructions`/`--save-bitstreams` write and the `precomputed`
codec reads back (OUTPUTS/<codec>/<setting>/<image id>.png|.bin), made safe for any file system."""

from __future__ import annotations

import re


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text) or "_"


def output_file_name(image_id: str, suffix: str) -> str:
    """A saved output's file name: the image id (folders kept, characters made safe) plus the suffix, except
    that a .png reconstruction of an id already ending in .png keeps the id as it is. Ids are unique, so two
    images with the same stem (x.png and x.jpg) never share a file."""
    parts = [safe_name(p) for p in image_id.split("/") if p not in ("", ".", "..")]
    name = "/".join(parts) or "_"
    return name if suffix == ".png" and name.lower().endswith(".png") else name + suffix
