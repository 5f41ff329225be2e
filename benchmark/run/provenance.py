"""What produced a number: code revision, library versions and a hash of the configuration."""

from __future__ import annotations

import hashlib
import inspect
import json
import pathlib
import platform
import subprocess
from importlib import metadata

from benchmark import __version__

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[2]  # the checkout: benchmark/, metrics/, baselines/


def _git(folder: pathlib.Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10,
                          check=True).stdout.strip()


def git_revision(folder: pathlib.Path) -> str:
    """HEAD of the git checkout holding `folder`, with '-dirty' when tracked files differ; 'unknown' outside git."""
    try:
        sha = _git(folder, "rev-parse", "HEAD")
        return sha + ("-dirty" if _git(folder, "status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def short_revision(revision: str, length: int = 12) -> str:
    """A revision as tables and titles show it: its first `length` characters, keeping '-dirty' (a run of
    uncommitted changes is not its commit's run)."""
    return str(revision)[:length] + ("-dirty" if str(revision).endswith("-dirty") else "")


def git_date(folder: pathlib.Path = PROJECT_ROOT, revision: str = "HEAD") -> str | None:
    """The committer date of `revision` (ISO 8601): the order of runs along a history of commits; None outside git
    or where the checkout does not hold that commit."""
    try:
        return _git(folder, "log", "-1", "--format=%cI", revision.removesuffix("-dirty"), "--") or None
    except (OSError, subprocess.SubprocessError):
        return None


def git_sha() -> str:
    """HEAD of the cmcbench checkout, with '-dirty' when tracked files differ; 'unknown' outside git."""
    return git_revision(PROJECT_ROOT)


def _tracked(path: pathlib.Path) -> bool:
    """Whether git tracks the file (in the checkout holding it)."""
    try:
        _git(path.parent, "ls-files", "--error-unmatch", path.name)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


def source_revision(cls: type) -> dict[str, str]:
    """Which code of a codec class defined outside cmcbench produced its rows: part of the codec's versions, so
    its rows say so and a resume under other code is refused. In a git checkout (a model tracked from commit to
    commit), the revision and commit date, with uncommitted changes the sha256 of `git diff HEAD`, and with Python
    files that git neither tracks nor ignores the sha256 of those; from an installed distribution, its name and
    version; else (a loose module) the sha256 of the module's file. {} for cmcbench's own codecs."""
    try:
        source = pathlib.Path(inspect.getsourcefile(cls) or "").resolve()
    except (TypeError, OSError):
        return {}
    folder = source.parent
    if folder == PROJECT_ROOT or PROJECT_ROOT in folder.parents or not source.is_file():
        return {}
    revision = git_revision(folder) if _tracked(source) else "unknown"  # not a venv's file inside a checkout
    if revision != "unknown":
        dirty = {"source_diff_sha256": hashlib.sha256(_git(folder, "diff", "HEAD", "--binary").encode()).hexdigest()}
        return {"source_git_sha": revision, "source_git_date": git_date(folder) or "",
                **(dirty if revision.endswith("-dirty") else {}), **_untracked_python(folder)}
    distributions = metadata.packages_distributions().get(cls.__module__.partition(".")[0], [])
    if distributions:
        return {"source_package": ", ".join(f"{d} {metadata.version(d)}" for d in sorted(set(distributions)))}
    return {"source_sha256": hashlib.sha256(source.read_bytes()).hexdigest()}


def _untracked_python(folder: pathlib.Path) -> dict[str, str]:
    """The sha256 of the Python files of the checkout that git neither tracks nor ignores (a module the codec
    imports, not added yet: `git diff` does not see it), with their paths; {} when there are none."""
    try:
        top = pathlib.Path(_git(folder, "rev-parse", "--show-toplevel"))
        names = sorted(n for n in _git(top, "ls-files", "--others", "--exclude-standard", "-z", "--", "*.py")
                       .split("\0") if n)
        digest = hashlib.sha256()
        for name in names:
            digest.update(name.encode() + b"\0" + (top / name).read_bytes() + b"\0")
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"source_untracked_sha256": digest.hexdigest()} if names else {}


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
