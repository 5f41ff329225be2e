"""Codecs that wrap a codec (best_of=N, rate matching with bpp=): one base that hands everything the codec
protocol has to the wrapped codec unless the wrapper says otherwise, so a check or hook added to the protocol
reaches every variant (rate matching once skipped CMC's preflight, so a misspelt model went unnoticed)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from benchmark.codecs.codec import Codec


class Wrapper(Codec):
    inner_class: ClassVar[type[Codec]]
    # Class attributes a variant takes from the codec it wraps (the process it runs in, what its encoder needs,
    # what its decoder makes), and those a wrapper may declare for itself instead.
    INHERITED: ClassVar[tuple[str, ...]] = ("name", "exact_size", "parallel", "wants_gpu", "needs_record",
                                            "rate_parameter")
    OWN: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def around(cls, inner: type[Codec], **attributes: Any) -> type[Wrapper]:
        """The variant of `inner` that this wrapper makes: its name, needs and columns, and `attributes`."""
        body = {k: getattr(inner, k) for k in cls.INHERITED if k not in cls.OWN}
        body.update(inner_class=inner, columns={**cls.columns, **inner.columns}, defaults=dict(inner.defaults))
        body.update(attributes)
        return type(f"{inner.__name__}{cls.__name__}", (cls,), body)

    def __init__(self, **options: Any):
        self.inner = self.inner_class(**options)
        self.options = dict(self.inner.options)
        for key in self.INHERITED:  # a codec may set them per instance (CMC runs in-process with a model)
            if key not in self.OWN and key in vars(self.inner):
                setattr(self, key, getattr(self.inner, key))
        if "columns" in vars(self.inner):  # columns the codec declares per instance (by its options)
            self.columns = {**type(self).columns, **self.inner.columns}

    @classmethod
    def check_available(cls) -> None:
        cls.inner_class.check_available()

    @classmethod
    def applicable(cls, context: dict, options: dict | None = None) -> str | None:
        inner = cls.inner_class
        return inner.applicable(context, None if options is None else
                                {k: v for k, v in options.items() if k in inner.defaults})

    def preflight(self, context: dict) -> None:
        self.inner.preflight(context)

    def setup(self, context: dict | None = None) -> None:
        self.inner.setup(context)

    def decode(self, data: bytes) -> np.ndarray:
        return self.inner.decode(data)

    def charged_bits(self, data: bytes) -> int:
        return self.inner.charged_bits(data)

    def published_bits(self, data: bytes) -> int | None:
        return self.inner.published_bits(data)

    def versions(self) -> dict[str, str]:
        return self.inner.versions()

    def side_information(self) -> dict[str, Any]:
        return self.inner.side_information()

    def extra_columns(self, data: bytes) -> dict[str, Any]:
        return self.inner.extra_columns(data)

    def notes(self) -> list[str]:
        return self.inner.notes()
