"""Where a run finds the folders config.json names, wherever the results folder has been moved or copied.

Paths inside the results folder are recorded relative to it: the shared cache of originals' features as
`.cache/KEY` (relative to the results root that holds the run), a run's own folders by their name in the run.
"""

from __future__ import annotations

import pathlib

CACHE = ".cache"  # the shared cache of originals' features, in the results root


def recorded_path(cache: pathlib.Path) -> str:
    """How config.json records a cache folder: relative to the results root (`.cache/KEY`), so that a results
    folder can be moved, copied or archived with its runs."""
    return f"{CACHE}/{cache.name}" if cache.parent.name == CACHE else str(cache.resolve())


def located(recorded: str, run_dir: pathlib.Path) -> pathlib.Path:
    """A cache folder recorded in config.json, found from where the run is now: `.cache/KEY` in the results root
    that holds the run, any other relative path inside the run; an absolute path (runs before this rule) where it
    is, else, for a moved run, under the same name in its new results root."""
    path, run_dir = pathlib.Path(recorded), pathlib.Path(run_dir)
    if not path.is_absolute():
        return run_dir.parent / path if path.parts[0] == CACHE else run_dir / path
    if path.exists() or not run_dir.name:
        return path
    return run_dir.parent / CACHE / path.name if path.parent.name == CACHE else run_dir / path.name
