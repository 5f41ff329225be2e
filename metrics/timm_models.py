"""A timm classifier chosen by name (`--classify timm:NAME`, e.g. `timm:convnext_tiny.in12k_ft_in1k`): its
pretrained weights file from the Hugging Face Hub (where timm itself downloads it; in the local cache, offline),
loaded by timm's own pretrained path from that recorded file, and its images prepared by timm's own eval
transforms for the model's data config (resize, centre crop, normalisation, on the PIL image, as timm does).
"""

from __future__ import annotations

import difflib
import importlib.util

PREFIX = "timm:"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's order of preference on the Hub
PREPROCESSING = "timm's create_transform(resolve_model_data_config(model)) on the PIL image"


def pretrained_config(flag: str, choice: str):
    """timm's pretrained config of `timm:NAME`; ValueError in one sentence, naming a close name, if timm has none."""
    import timm
    import timm.models

    name = choice[len(PREFIX):]
    config = timm.models.get_pretrained_cfg(name) if name else None
    if config is None or not config.hf_hub_id:
        close = "".join(f"did you mean {PREFIX}{m}? "
                        for m in difflib.get_close_matches(name, timm.list_pretrained(), 1))
        raise ValueError(f"{flag} {choice}: not a timm model with pretrained weights on the Hugging Face Hub; {close}"
                         "see timm.list_pretrained().")
    return config


def resolve(flag: str, choice: str, what: str) -> dict:
    """What a run records about a timm classifier: its name, Hub repository, weights file and sha256; or why there
    is none (offline and not in the local cache, or the Hub unreachable: told at once, one request, no retries)."""
    from metrics.download import file_digest

    if importlib.util.find_spec("timm") is None:
        return {"status": "unavailable", "reason": f"{what} with {choice} needs timm: pip install -e '.[tasks]'"}
    config = pretrained_config(flag, choice)
    try:
        path = weights_file(config.hf_hub_id, (config.hf_hub_filename,) if config.hf_hub_filename else WEIGHT_FILES)
    except OSError as exc:
        return {"status": "unavailable", "reason": f"no weights for {flag} {choice}: {exc}"}
    return {"status": "ok", "model": choice, "library": "timm", "arch": choice[len(PREFIX):],
            "hub_id": config.hf_hub_id, "transforms": "timm eval", "weights_path": path,
            "weights_sha256": file_digest(path), "preprocessing": PREPROCESSING}


def weights_file(repo: str, files: tuple[str, ...]) -> str:
    """The first of `files` in the local Hugging Face cache or, online, downloaded from `repo` into it; OSError
    saying why not."""
    from huggingface_hub import hf_hub_download, model_info, try_to_load_from_cache

    from metrics.hub import HUB_TIMEOUT_S, offline

    for file in files:
        cached = try_to_load_from_cache(repo, file)
        if isinstance(cached, str):
            return cached
    if offline():
        raise OSError(f"{repo} is not in the local Hugging Face cache and this machine is offline; download it where "
                      f"there is internet (`hf download {repo}`)")
    try:
        present = {s.rfilename for s in model_info(repo, timeout=HUB_TIMEOUT_S).siblings or ()}
        file = next((f for f in files if f in present), None)
        if file is None:
            raise OSError(f"{repo} on the Hugging Face Hub has none of {', '.join(files)}")
        return hf_hub_download(repo, file)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - any network failure is the same sentence
        raise OSError(f"the Hugging Face Hub cannot be reached for {repo} ({type(exc).__name__}); download it where "
                      f"there is internet (`hf download {repo}`)") from None


def load(state: dict):
    """(the network with the recorded weights file, a function preparing one H x W x 3 uint8 image)."""
    import timm
    import timm.data
    from PIL import Image

    model = timm.create_model(state["arch"], pretrained=True,
                              pretrained_cfg_overlay={"file": state["weights_path"], "source": "timm"})
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model), is_training=False)
    return model.eval(), lambda image: transform(Image.fromarray(image))
