"""What the user sees on the terminal: one progress bar per stage, and third-party chatter kept quiet.

Bars go to stderr and only to a terminal (tqdm's own rule), so logs, pipes and tests get none; the command
line's --no-progress sets CMCBENCH_NO_PROGRESS, which child processes inherit. Libraries' download bars,
"Loading weights" bars and advisory warnings are silenced unless --verbose: the run's own bars count the work.
"""

from __future__ import annotations

import logging
import os
import warnings

NO_PROGRESS = "CMCBENCH_NO_PROGRESS"
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error",
             "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore",
             "RAY_DEDUP_LOGS": "1"}
QUIET_LOGGERS = ("transformers", "diffusers", "sentence_transformers", "huggingface_hub", "torch_fidelity", "PIL",
                 "matplotlib", "urllib3", "httpx")


def quiet_third_party(verbose: bool = False) -> None:
    """Silence libraries' bars and warnings in this process and the ones it starts (their environment)."""
    if verbose:
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def disable_progress() -> None:
    os.environ[NO_PROGRESS] = "1"


def bar(iterable=None, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool | None = None):
    """A tqdm bar for one stage, counting `unit`s; shown only on a terminal and unless progress is off."""
    from tqdm import tqdm

    off = os.environ.get(NO_PROGRESS) == "1" or enabled is False
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=True if off else None, dynamic_ncols=True,
                leave=False)
