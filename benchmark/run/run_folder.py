"""A run folder's own rules: its configuration is what was run (config.json sealed when written, edits
refused by name), one process works in it at a time (a lock), and its name never collides with another's."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import pathlib
import shlex
import time

from benchmark import command
from benchmark.run.integrity import atomic_write_bytes

SEAL = ".config.sealed.json"  # the bytes of config.json as cmcbench last wrote them
LOCK = ".lock"
LOCK_TRIES = 5  # 50 ms apart: a process that works in the run holds the lock for its whole life, a reader never long


def write_config(run_dir: pathlib.Path, info: dict) -> None:
    """config.json and its seal, the seal first (a kill between leaves a seal that names the difference)."""
    data = json.dumps(info, indent=2, sort_keys=True).encode()
    atomic_write_bytes(run_dir / SEAL, data)
    atomic_write_bytes(run_dir / "config.json", data)


def check_unedited(run_dir: pathlib.Path) -> None:
    """Refuse a config.json that differs from what cmcbench wrote: its settings, codecs or metrics would then
    describe rows that were made otherwise. Runs from before the seal have none and are not checked."""
    sealed = run_dir / SEAL
    if not sealed.exists():
        return
    now, then = (run_dir / "config.json").read_bytes(), sealed.read_bytes()
    if now == then:
        return
    try:
        keys = changed_keys(json.loads(then), json.loads(now))
    except ValueError:
        keys = ["(it is no longer valid JSON)"]
    shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
    raise RuntimeError(f"{run_dir / 'config.json'} was edited after the run was created ({shown}); a run resumes "
                       "only with the configuration it was run with: undo the edit, or start a new run with the "
                       "options you want.")


def changed_keys(old, new, prefix: str = "") -> list[str]:
    """The key paths (`codecs[0].settings`) where two JSON values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(path)
            else:
                out += changed_keys(old[key], new[key], path)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [p for k, (a, b) in enumerate(zip(old, new)) for p in changed_keys(a, b, f"{prefix}[{k}]")]
    return [] if old == new else [prefix or "(the whole file)"]


@contextlib.contextmanager
def locked(run_dir: pathlib.Path):
    """Hold the run folder's lock while working in it; a second process is refused in one sentence. The lock
    goes with the process that holds it, however it ends (kill -9 included)."""
    path = pathlib.Path(run_dir) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        for attempt in range(LOCK_TRIES):  # a reader asking whether the run is `held` holds it for a moment
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == LOCK_TRIES - 1:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
                    raise RuntimeError(f"{run_dir} is being worked on by process {holder}; wait for it to finish (or "
                                       "stop it) before resuming this run.") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def resume_command(run_dir: pathlib.Path, *flags: str) -> str:
    """The command that resumes the run, as a shell takes it: a path with spaces or other scripts quoted."""
    return " ".join([command(), "run --resume", shlex.quote(str(run_dir)), *flags])


def held(run_dir: pathlib.Path) -> bool:
    """Whether a process works in the run now (holds its lock), asked without taking the lock."""
    try:
        fd = os.open(pathlib.Path(run_dir) / LOCK, os.O_RDONLY)
    except OSError:
        return False  # never locked here (a copied run), or unreadable: no process of this machine holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def check_name(name: str | None) -> None:
    """A given run name is one folder inside the runs' root: '--name .' made the root itself a run, among the
    others, and '--name ../x' wrote one outside it."""
    if name and (name in (".", "..") or "/" in name or os.sep in name or (os.altsep and os.altsep in name)):
        raise ValueError(f"--name {name!r}: a run's name is one folder name inside --out (no '/', not '.' or '..').")


def new_folder(out_root: pathlib.Path, run_id: str, named: bool) -> pathlib.Path:
    """Create the run's folder. A generated id that is taken (two runs of one configuration in the same second)
    gets a suffix, -2, -3, ...; a given --name that already holds a run is refused."""
    out_root = pathlib.Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    for k in range(1, 1000):
        run_dir = out_root / (run_id if k == 1 else f"{run_id}-{k}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            if named:
                if (run_dir / "config.json").exists():
                    raise FileExistsError(f"{run_dir} already holds a run: resume it with --resume "
                                          f"{shlex.quote(str(run_dir))}, or pick another --name.") from None
                return run_dir
    raise FileExistsError(f"{out_root} holds 999 runs named {run_id}-*: pick a --name.")


def exclusive(work):
    """`work(run_dir, ...)` under the run's lock, on a configuration checked to be the one that was written."""
    @functools.wraps(work)
    def wrapped(run_dir, *args, **kwargs):
        with locked(pathlib.Path(run_dir)):
            check_unedited(pathlib.Path(run_dir))
            return work(run_dir, *args, **kwargs)
    return wrapped
