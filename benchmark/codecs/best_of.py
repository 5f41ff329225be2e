"""best_of=N: the encoder decodes N candidates of a stochastic codec's bitstream (seeds seed, seed+1, ...,
seed+N-1), keeps the one closest to the original by a named pixel metric, and sends its index.

As Text+Sketch does, the choice is paid for: the index is charged ceil(log2 N) bits (what it takes in a
bit-packed stream; the stored stream carries it in one trailing byte, which `bytes` counts). The decoder
reads the index from the bitstream and decodes with that seed: it still gets the bytes and nothing else.
Candidate 0 is the codec's own output, so best_of=N is never worse than best_of=1 on the chosen metric.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from benchmark.codecs.codec import Codec, check_output, encode_image, reseeded
from benchmark.codecs.wrapper import Wrapper
from metrics import registry

SELECTABLE = ("psnr", "psnr_y", "ms_ssim")  # pixel metrics: a pure function of (original, candidate)


def index_bits(n: int) -> int:
    return math.ceil(math.log2(n)) if n > 1 else 0


class BestOf(Wrapper):
    columns = {"best_of_index": "int64"}

    def __init__(self, best_of: int = 2, select: str = "psnr", **options: Any):
        super().__init__(**options)
        self.n, self.select = int(best_of), select
        self.context: dict | None = None
        self._decoders: dict[int, Codec] = {0: self.inner}
        self.last: int | None = None

    def setup(self, context: dict | None = None) -> None:
        self.context = context
        self.inner.setup(context)

    def _decoder(self, k: int) -> Codec:
        if k not in self._decoders:
            self._decoders[k] = reseeded(self.inner, k, self.context)
        return self._decoders[k]

    def encode(self, image: np.ndarray, setting, record=None) -> bytes:
        payload = encode_image(self.inner, image, setting, record)
        metric = registry.get(self.select)
        fn = metric.function()
        scores = []
        for k in range(self.n):
            candidate, _ = check_output(self._decoder(k).decode(payload), image, self.inner.exact_size)
            value = fn(image, candidate)
            value = value[0] if isinstance(value, tuple) else value
            scores.append(-np.inf if value != value else (value if metric.higher_is_better else -value))
        self.last = int(np.argmax(scores))  # ties: the lowest index
        return payload + bytes([self.last])

    def encode_columns(self) -> dict[str, Any]:
        return {} if self.last is None else {"best_of_index": self.last}

    def decode(self, data: bytes) -> np.ndarray:
        return self._decoder(data[-1]).decode(data[:-1])

    def charged_bits(self, data: bytes) -> int:
        return 8 * (len(data) - 1) + index_bits(self.n)

    def side_information(self) -> dict[str, Any]:
        return {**self.inner.side_information(),
                "best_of": {"candidates": self.n, "select": self.select, "index_bits": index_bits(self.n),
                            "seeds": f"seed + 0..{self.n - 1}",
                            "charging": "the index is charged ceil(log2 N) bits; the stored stream holds it in "
                                        "one trailing byte"}}

    def extra_columns(self, data: bytes) -> dict[str, Any]:  # the trailing index byte is the wrapper's
        return self.inner.extra_columns(data[:-1])

    def published_bits(self, data: bytes) -> int | None:
        return self.inner.published_bits(data[:-1])


def best_of(cls: type[Codec], n: int, select: str) -> type[BestOf]:
    """The best-of-N variant of a stochastic codec class, checked in one sentence each."""
    if not cls.stochastic or "seed" not in cls.defaults:
        raise ValueError(f"best_of needs a stochastic codec (one whose decoder draws from its `seed` option); "
                         f"{cls.name} is deterministic.")
    if not 2 <= n <= 256:
        raise ValueError(f"best_of takes 2..256 candidates (the index travels in one byte), not {n}.")
    if select not in SELECTABLE:
        raise ValueError(f"best_of selects by a pixel metric: select={'|'.join(SELECTABLE)}, not {select!r}.")
    return BestOf.around(cls)
