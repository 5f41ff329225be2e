"""Downloading a weights file into a cache, with the standard library: torch.hub's download semantics
(a temporary file beside the target, the sha256 checked against the expected prefix, then an atomic rename)
without importing torch, which takes seconds even when the download then fails offline."""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
import urllib.request

CHUNK = 1 << 20
TIMEOUT_S = 30  # per network operation, not for the whole download


def download_url_to_file(url: str, dst: str | os.PathLike, hash_prefix: str | None = None,
                         progress: bool = True) -> None:
    """Fetch `url` to `dst`; on a sha256 that does not start with `hash_prefix`, nothing is left behind and
    RuntimeError says so. Network errors propagate as OSError."""
    dst = pathlib.Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 - weights from fixed https URLs
        total = int(response.headers.get("Content-Length") or 0) or None
        fd, tmp = tempfile.mkstemp(prefix=dst.name + ".", suffix=".partial", dir=dst.parent)
        try:
            from tqdm import tqdm

            with os.fdopen(fd, "wb") as out, tqdm(total=total, desc=f"downloading {dst.name}", unit="B",
                                                  unit_scale=True, disable=True if not progress else None,
                                                  leave=False) as shown:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    digest.update(block)
                    shown.update(len(block))
            if hash_prefix and not digest.hexdigest().startswith(hash_prefix):
                raise RuntimeError(f"the file from {url} has sha256 {digest.hexdigest()[:12]}..., expected "
                                   f"{hash_prefix}...: not kept")
            os.replace(tmp, dst)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
