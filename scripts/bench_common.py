"""What the benchmark scripts share: the default dataset and a clear message when it is missing."""

from __future__ import annotations

import os
import pathlib
import sys

DEFAULT_DATASET = pathlib.Path(__file__).resolve().parents[2] / "shared/datasets/kodak"


def image_folder(path: str, pattern: str = "*.png") -> tuple[pathlib.Path, list[str]]:
    """The folder (with `~` expanded) and its images; exits with one sentence when there are none."""
    folder = pathlib.Path(os.path.expanduser(path))
    files = sorted(str(p) for p in folder.glob(pattern)) if folder.is_dir() else []
    if not files:
        sys.exit(f"error: no {pattern} images in {folder} (it {'has none' if folder.is_dir() else 'does not exist'}); "
                 "pass --dataset FOLDER, e.g. the 24 Kodak images.")
    return folder, files
