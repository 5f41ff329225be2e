"""Model names given by the user, checked before any work: a built-in, a local folder, or a Hugging Face Hub
id that is in the local cache or, online, exists on the Hub. One Hub request with a short timeout, so an
offline machine is told at once instead of a library retrying for minutes."""

from __future__ import annotations

import difflib
import importlib.util
import os
import re

class MissingPackage(RuntimeError):
    """A model part needs a library that is not installed; the message says which extra installs it."""


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_TIMEOUT_S = 5.0
OFFLINE_FLAGS = ("CMCBENCH_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline() -> bool:
    return any(os.environ.get(f, "").lower() in ("1", "true", "yes", "on") for f in OFFLINE_FLAGS)


def check_model_name(part: str, name: str, builtins: tuple[str, ...], library: str, config_file: str,
                     what: str | None = None, extra: str = "models") -> None:
    """Before any work, in one sentence: a model part names a built-in, an existing local folder, or a Hub id
    that is in the local cache or, online, exists on the Hub (one request with a short timeout, so an
    offline machine is told at once instead of retrying for minutes)."""
    if name in builtins:
        return
    what = what or f"cmc {part}={name!r}"
    if importlib.util.find_spec(library) is None:
        raise MissingPackage(f"{what} needs {library}: pip install -e '.[{extra}]'")
    if os.path.exists(os.path.expanduser(name)):
        return
    close = difflib.get_close_matches(name, builtins, n=1, cutoff=0.6)
    if close and "/" not in name:
        raise ValueError(f"{what} is not a built-in {part} ({', '.join(builtins)}), a local folder or a Hub id: "
                         f"did you mean {part}={close[0]}?")
    if name.startswith(("/", ".", "~")) or not HUB_ID.match(name):
        raise ValueError(f"{what} is neither a built-in {part} ({', '.join(builtins)}), nor an existing folder, "
                         "nor a Hugging Face Hub id (owner/name).")
    from huggingface_hub import model_info, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(try_to_load_from_cache(name, config_file), str):
        return  # in the local cache: usable offline
    if offline():
        raise ValueError(f"{what} is not in the local Hugging Face cache and this machine is offline "
                         f"({'/'.join(f for f in OFFLINE_FLAGS if os.environ.get(f))} set): download it where there is "
                         f"internet (`hf download {name}`) or pass a local folder, {part}=PATH.")
    try:
        model_info(name, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        raise ValueError(f"{what} is a gated model: accept its terms on huggingface.co and log in "
                         "(`hf auth login`), or pass a local folder.") from None
    except RepositoryNotFoundError:
        raise ValueError(f"{what}: no such model on the Hugging Face Hub (or it is private; check the spelling, "
                         "log in with `hf auth login`, or pass a local folder).") from None
    except Exception as exc:  # noqa: BLE001 - any network failure is the same sentence
        raise ValueError(f"{what} is not in the local cache and the Hugging Face Hub cannot be reached "
                         f"({type(exc).__name__}): pass a local folder, {part}=PATH, or run once with internet.") from None


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def folder_weights(folder: str) -> str | None:
    """The checkpoint's weights file in a model folder (the file whose sha256 identifies the network)."""
    found = [os.path.join(folder, name) for name in WEIGHT_FILES if os.path.isfile(os.path.join(folder, name))]
    return found[0] if found else None


def local_weights(name: str) -> str | None:
    """The weights file of a transformers model, a local folder or a Hub id already in the local cache; None
    when it is not here yet."""
    folder = os.path.expanduser(name)
    if os.path.isdir(folder):
        return folder_weights(folder)
    if not HUB_ID.match(name) or importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    for file in WEIGHT_FILES:
        path = try_to_load_from_cache(name, file)
        if isinstance(path, str):
            return path
    return None
