"""Scoring: per-image metrics of a reconstruction, as the metric registry declares them.

A Scorer takes (original, reconstruction, the record's reference captions, the transmitted text) and
returns the row's metric columns. It knows no metric by name: it runs every per-image registry entry
whose state in the run's config.json is ok (pixel metrics as pure functions, network metrics through a
model loaded once per process, text metrics on what the bitstream carried). A metric that cannot be
computed on one image is NaN with the reason in `metric_notes`; the row and the run go on.

`metric_states` is the one place that turns a run's resolved stages into each metric's availability.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmark.run.record import RunRecord
from benchmark.run.timings import Timings
from metrics import registry

COMPUTED_HERE = ("pixels", "network", "text")


def metric_states(record: RunRecord, added: list[str] = ()) -> dict[str, dict]:
    """{metric: {"status": ok | disabled | unavailable, "reason": ...}} for every registry metric."""
    out = {}
    for name, m in registry.METRICS.items():
        if not m.default and name not in added:
            if name in registry.FIRST:  # a later metric file's: absent, so config.json reads as it did before it
                out[name] = {"status": "disabled", "reason": f"not requested (--add-metric {name})"}
        elif reason := m.missing():
            out[name] = {"status": "unavailable", "reason": reason}
        elif not m.state:
            out[name] = {"status": "ok", "reason": ""}
        else:
            state = record.stage(m.state)
            if not state and m.state in registry.STAGES:  # its stage not requested: absent, as before the file
                continue
            status = state.get("status", "unavailable" if state else "disabled")
            out[name] = {"status": status, "reason": "" if status == "ok" else state.get("reason", "not recorded")}
    return out


def status_column(metric: str) -> str:
    """The summary column that carries a metric's availability (shared by metrics of one stage)."""
    state = registry.get(metric).state
    return f"{state.split('.')[-1] if state else metric}_status"


def requested(states: dict[str, dict]) -> list[str]:
    """Metrics the run asked for (available or not): their columns are part of its schema."""
    return [name for name, s in states.items() if s["status"] != "disabled"]


class Scorer:
    """Per-image metrics for one process; networks are loaded on first use and kept, on `device` (auto: CUDA
    when present)."""

    def __init__(self, states: dict[str, dict], record: RunRecord, device: str = "cpu"):
        for name in states:
            registry.get(name)  # an unknown name is an error, never skipped
        # registry order, whatever order config.json keeps: a derived metric follows the ones it reads
        self.metrics = [m for name, m in registry.METRICS.items()
                        if states.get(name, {}).get("status") == "ok" and m.kind in COMPUTED_HERE]
        self.record = record
        self.device = device
        self._functions: dict[str, Any] = {}
        self._models: dict[str, Any] = {}
        self.timings = Timings()  # seconds per metric (and per network load), read by the worker

    def _function(self, m: registry.MetricInfo):
        if m.column not in self._functions:
            self._functions[m.column] = m.function()
        return self._functions[m.column]

    def _device(self) -> str:
        """The run's device, resolved (auto: CUDA when present) when a network first needs it."""
        from metrics.inception import pick_device

        return pick_device(self.device)

    def _model(self, m: registry.MetricInfo):
        key = (m.load, m.state)  # metrics of one network and state (CLIP's three) share one model
        if key not in self._models:
            with self.timings.stage(f"{m.column}: load network"):
                self._models[key] = m.loader()(self.record.stage(m.state), self._device())
        return self._models[key]

    def score(self, original: np.ndarray, reconstruction: np.ndarray, captions=(), text: str | None = None,
              cache: dict | None = None, label: int | None = None) -> dict:
        """Metric columns for one reconstruction; `cache` holds this original's reference features."""
        cache = {} if cache is None else cache
        # What network metrics may read beside the original's cached features: the row's captions, transmitted
        # text and class label (with the dataset's class names and prompt), and a fresh dict for what several
        # metrics share about this reconstruction.
        dataset = self.record.dataset.rest  # the class names and prompt, recorded when a metric reads labels
        cache.update(captions=tuple(captions), text=text, row={}, label=label,
                     classes=tuple(dataset.get("classes", ())), class_prompt=dataset.get("class_prompt", ""))
        out: dict[str, Any] = {}
        notes = []
        for m in self.metrics:
            load_stage = f"{m.column}: load network"
            start, loading = time.perf_counter(), self.timings.seconds.get(load_stage, 0.0)
            try:
                if m.kind == "pixels":
                    value = self._function(m)(original, reconstruction)
                elif m.kind == "network":
                    value = self._function(m)(self._model(m), original, reconstruction, cache)
                elif text is None or not captions:
                    continue  # a text metric needs transmitted text and reference captions
                else:
                    state = self.record.stage(m.state)
                    if any(need.startswith("network:") for need in m.needs):  # a text network: the run's device
                        state = {**state, "device": self._device()}
                    value = self._function(m)(text, captions, state)
            except Exception as exc:  # noqa: BLE001 - the metric is NaN with its reason, the row goes on
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                value = (float("nan"), f"{m.column} failed: {msg}")
            loaded = self.timings.seconds.get(load_stage, 0.0) - loading  # a first call's network load, apart
            self.timings.add(m.column, time.perf_counter() - start - loaded)
            if isinstance(value, tuple):
                value, note = value
                notes += [note] if note else []
            if isinstance(value, dict):
                out.update(value)
            else:
                out[m.column] = value
        if notes:
            out["metric_notes"] = "; ".join(notes)
        return out
