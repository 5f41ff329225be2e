"""Files written whole and checked when read: a result that changed on disk is named, never summarised.

Every file is written under a temporary name and renamed into place (a reader never sees half of one), with
the permissions the user's umask gives (0644 by default, as for any other file the user makes). Results and
cached features are also written with a checksum beside them (`.NAME.sha256`, written first, as sha256sum
prints it): the sha256 of the file's key (its folder and name, or its name alone for a file directly in a run,
which can be renamed) and its bytes, so a file swapped with another, truncated, zeroed or with one byte changed
fails the check before any number read from it is printed, compared or summarised. Files of runs
made before checksums have none and are read as they are.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file


class DamagedFile(RuntimeError):
    """A checked file whose bytes are not the ones written: the message names it and what is wrong."""

    state = "damaged"

    def __init__(self, path: pathlib.Path, why: str):
        super().__init__(f"{path} is {self.state} ({why})")
        self.path, self.why = pathlib.Path(path), why


def atomic_write_bytes(path: pathlib.Path, data: bytes, durable: bool = True) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def checksum_path(path: pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    return path.parent / f".{path.name}.sha256"


def key_of(path: pathlib.Path, parts: int = 2) -> str:
    path = pathlib.Path(path)
    return f"{path.parent.name}/{path.name}" if parts == 2 else path.name


def digest(key: str, data: bytes) -> str:
    """sha256 of the file's key, then its bytes: the same bytes under another name do not match."""
    return hashlib.sha256(f"{key}\0".encode() + data).hexdigest()


def write_checked(path: pathlib.Path, data: bytes, durable: bool = True, key_parts: int = 2) -> None:
    """The checksum first, then the file: a kill between the two leaves a checksum without its file (the work
    is redone) or, when a file is rewritten, a mismatch that names it; never a file that passes unchecked.
    `key_parts` 1 for a file whose folder may be renamed (a run's own summary)."""
    key = key_of(path, key_parts)
    atomic_write_bytes(checksum_path(path), f"{digest(key, data)}  {key}\n".encode(), durable)
    atomic_write_bytes(path, data, durable)


def remove_checked(path: pathlib.Path) -> None:
    pathlib.Path(path).unlink(missing_ok=True)
    checksum_path(path).unlink(missing_ok=True)


_verified: dict[str, tuple] = {}  # path -> (size, mtime_ns, inode) of the version that passed


def problem(path: pathlib.Path, strict: bool = True) -> str | None:
    """Why `path` cannot be trusted (missing, its checksum missing where `strict`, or not matching), else None."""
    path = pathlib.Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return "it is missing"
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    if _verified.get(str(path)) == stamp:
        return None
    try:
        recorded = checksum_path(path).read_text()
    except FileNotFoundError:
        return "its checksum is missing" if strict else None
    why = mismatch(path, path.read_bytes(), recorded)
    if why:
        return why if st.st_size else "it is empty"
    _verified[str(path)] = stamp
    return None


def mismatch(path: pathlib.Path, data: bytes, recorded: str) -> str | None:
    """Why `data`, read from `path`, does not match its recorded checksum line, else None."""
    expected, _, key = recorded.strip().partition("  ")
    if key not in (key_of(path, 1), key_of(path, 2)):
        return f"its checksum belongs to {key or 'another file'}"
    if digest(key, data) != expected:
        return "its bytes do not match the checksum written with it"
    return None
