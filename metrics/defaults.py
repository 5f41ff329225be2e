"""Defaults written once: what the networks and set metrics use when neither the command line nor a caller
says otherwise (torch-fidelity's values, so that numbers compare with its own), and where networks run.

The command line's defaults, a run's configuration, the metric functions, the bootstrap and the leaderboard
read these;
a change here is a change of every default run's numbers (and config hash), made in one place.
"""

from __future__ import annotations

SEED = 2020  # IS split shuffling and KID subsets: torch-fidelity's default seed
ISC_SPLITS = 10  # Inception Score splits
KID_SUBSETS = 100  # KID: random subsets ...
KID_SUBSET_SIZE = 1000  # ... of this many images each
BATCH_SIZE = 32  # images per forward pass of a metric's network
DEVICE = "auto"  # CUDA when torch sees a device, else the CPU
TIMEOUT_S = 300.0  # seconds one encode or decode may take before its row fails as timed out
PENDING_MEMORY_SHARE = 0.125  # of physical memory: pixels waiting for the network stages (--max-pending auto)
BOOTSTRAP_RESAMPLES = 200  # resamples of a run's images behind every interval (0: no intervals)
BOOTSTRAP_SEED = 0
BOOTSTRAP_LEVEL = 0.95
RATES = (0.1, 0.25, 0.5, 1.0)  # bpps of the leaderboard's at-rate table


def pick_device(device: str = DEVICE, unavailable: type[Exception] = RuntimeError) -> str:
    """The torch device a network runs on: `auto` is CUDA when present, else the CPU; a CUDA device asked for
    on a machine without one is refused with `unavailable`, in one sentence, before any model is loaded."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise unavailable(f"--device {device} was asked for, but torch sees no CUDA device.")
    return device
