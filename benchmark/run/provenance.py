"""What produced a number: code revision, library versions and a hash of the configuration."""

from __future__ import annotations

import hashlib
import json
import pathlib
import platform
import subprocess
from importlib import metadata

from benchmark import __version__

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent


def git_sha() -> str:
    """HEAD of the cmcbench checkout, with '-dirty' when tracked files differ; 'unknown' outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions(names=("numpy", "pillow", "pandas", "pyarrow", "scipy", "glymur", "opencv-python-headless",
                            "torch", "torch-fidelity")):
    out = {"python": platform.python_version(), "cmcbench": __version__}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
