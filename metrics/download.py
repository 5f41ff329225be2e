"""Downloading a file with the standard library: weights into a cache, datasets' archives into the data root.

torch.hub's semantics (a temporary file beside the target, the checksum checked before the target exists,
then an atomic rename) without importing torch, which takes seconds even when the download then fails
offline; and, for large archives, a download cut midway resumes from its partial file with an HTTP Range
request. A file whose checksum does not match is deleted, partial file included, and the error says so.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import urllib.error
import urllib.request

ENV_OFFLINE = "CMCBENCH_OFFLINE"  # set: never try the network for weights (they must be local or cached)

CHUNK = 1 << 20
TIMEOUT_S = 30  # per network operation, not for the whole download


class ChecksumMismatch(RuntimeError):
    """The downloaded bytes are not the expected ones; nothing was kept."""


def partial_path(dst: pathlib.Path) -> pathlib.Path:
    return dst.with_name(dst.name + ".partial")


def _hash_file(h, path: str | os.PathLike):
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    return _hash_file(hashlib.new(algorithm), path).hexdigest()


def download_url_to_file(url: str, dst: str | os.PathLike, hash_prefix: str | None = None,
                         progress: bool = True, sha256: str | None = None, resume: bool = False) -> str:
    """Fetch `url` to `dst` and return its sha256. With `resume`, bytes already in `dst`.partial are kept and
    only the rest is requested (a server that ignores Range sends it all again). On a sha256 that is not
    `sha256` or does not start with `hash_prefix`, nothing is left behind and ChecksumMismatch says so.
    Network errors propagate as OSError, leaving the partial file for a resumed attempt."""
    dst = pathlib.Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dst)
    have = part.stat().st_size if resume and part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)  # noqa: S310 - fixed, declared addresses
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is already whole
            response = None
        else:
            raise
    digest = hashlib.sha256()
    if response is not None:
        with response:
            appending = have and response.status == 206
            if appending:  # the digest covers the bytes already there
                _hash_file(digest, part)
            length = int(response.headers.get("Content-Length") or 0)
            total = length + (have if appending else 0) or None
            from tqdm import tqdm

            with open(part, "ab" if appending else "wb") as out, \
                    tqdm(total=total, initial=have if appending else 0, desc=f"downloading {dst.name}", unit="B",
                         unit_scale=True, disable=True if not progress else None, leave=False) as shown:
                received = 0
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    digest.update(block)
                    shown.update(len(block))
                    received += len(block)
            if length and received < length:  # the connection closed early: keep what came, for a resume
                raise OSError(f"the connection closed after {received} of {length} bytes")
        got = digest.hexdigest()
    else:
        got = file_digest(part)
    if (sha256 and got != sha256.lower()) or (hash_prefix and not got.startswith(hash_prefix)):
        part.unlink(missing_ok=True)
        expected = sha256 or f"{hash_prefix}..."
        raise ChecksumMismatch(f"the file from {url} has sha256 {got[:16]}..., expected {expected[:16]}...: it was "
                               "deleted")
    os.replace(part, dst)
    return got


def hub_dir() -> pathlib.Path:
    """torch.hub.get_dir() without importing torch (seconds) just to find a file: $TORCH_HOME/hub, else
    $XDG_CACHE_HOME/torch/hub, else ~/.cache/torch/hub."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return pathlib.Path(os.path.expanduser(home)) / "hub"


def hub_download(url: str, hash_prefix: str | None, progress: bool = True, folder: str = "checkpoints") -> str:
    """The file of `url` in the torch hub cache's `folder`, downloaded once; OSError naming the URL and place
    if not."""
    target = hub_dir() / folder / url.rsplit("/", 1)[1]
    if not target.exists() and os.environ.get(ENV_OFFLINE, "") not in ("", "0"):
        raise OSError(f"downloading {url} to {target} failed (offline: {ENV_OFFLINE} is set)")
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            download_url_to_file(url, target, hash_prefix=hash_prefix, progress=progress)
        except Exception as exc:  # noqa: BLE001 - any network failure has the same remedy
            raise OSError(f"downloading {url} to {target} failed ({exc})") from None
    return str(target)


def weights_file(path: str | None, env: str, url: str, hash_prefix: str, what: str, purpose: str, option: str,
                 error: type[Exception], progress: bool = False) -> str:
    """A network's weights: `path`, else $`env`, else torchvision's file `url` in the torch hub cache,
    downloaded once; `error` with one sentence (naming `option` and `env`) when none can be had."""
    path = path or os.environ.get(env) or None
    if path is not None:
        if not os.path.isfile(path):
            raise error(f"{purpose} {what} weights file {path!r} does not exist.")
        return path
    try:
        return hub_download(url, hash_prefix, progress)
    except OSError as exc:
        raise error(f"no {what} weights for {purpose}: {exc}. Download it on a machine with internet and put it "
                    f"there, or pass {option} PATH (or set {env}).") from None
