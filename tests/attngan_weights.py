"""Seeded weights of exactly AttnGAN's generator and DAMSM text encoder shapes (as the CMC authors use them),
for tests: drawn with numpy's generator key by key, the same on every machine and torch version."""

from __future__ import annotations

import numpy as np


def state(shapes: dict[str, tuple], seed: int) -> dict[str, np.ndarray]:
    """Convolutions and linear layers He-normal, BatchNorm at its initial statistics, embeddings uniform in
    +-1 (words that move the image), LSTM weights uniform in +-1/sqrt(hidden) (torch's own range)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            out[key] = np.array(0, np.int64)
        elif key.endswith("running_var"):
            out[key] = np.ones(shape, np.float32)
        elif key.endswith("running_mean") or (key.endswith(".bias") and "rnn" not in key):
            out[key] = np.zeros(shape, np.float32)
        elif key.startswith("rnn."):
            bound = 1 / np.sqrt(shapes["rnn.weight_hh_l0"][1])
            out[key] = rng.uniform(-bound, bound, shape).astype(np.float32)
        elif key == "encoder.weight":
            out[key] = rng.uniform(-1, 1, shape).astype(np.float32)
        elif len(shape) == 1:  # BatchNorm weight
            out[key] = np.ones(shape, np.float32)
        else:
            fan_in = int(np.prod(shape[1:]))
            out[key] = (rng.standard_normal(shape) * np.sqrt(2 / fan_in)).astype(np.float32)
    return out


def save_generator(folder, text_encoder, generator, seed: int = 2021) -> tuple:
    """text_encoder200.pth and netG.pth (state_dicts, as AttnGAN and the authors save them) in `folder`."""
    import torch

    paths = (folder / "text_encoder200.pth", folder / "netG_epoch_600.pth")
    for path, module, k in zip(paths, (text_encoder, generator), (0, 1)):
        shapes = {name: tuple(v.shape) for name, v in module.state_dict().items()}
        torch.save({name: torch.from_numpy(np.asarray(v)) for name, v in state(shapes, seed + k).items()}, path)
    return paths


CAPTIONS = ["this small bird has a red crown and white belly",
            "a bird with black wings",
            "this bird is yellow with a long tail and short beak",
            "a small brown bird"]


def noise(n: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """z and the conditioning augmentation's eps (n x 100 each), standard normal."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 100)).astype(np.float32), rng.standard_normal((n, 100)).astype(np.float32)
