"""A task's work, in whichever process runs it: read each image once, produce every setting's
reconstruction, score it, and return one row per (image, setting).

The Worker holds the dataset, the preprocessing, an encoder and a separate decoder instance of each codec
(the decoder never sees the encoder's state) and the Scorer. Both executors (the local process pool and
Ray) run tasks through it; it imports neither of them nor the orchestrator.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from benchmark import __version__
from benchmark.run import feature_stage
from benchmark.codecs.codec import Codec, reseeded
from benchmark.run.config import RunConfig, codec_context
from benchmark.run.feature_store import needs_reference, variants
from benchmark.run.locations import located
from benchmark.data.datasets import Dataset
from benchmark.data.imageio import BadImage
from benchmark.data.preprocess import get_preset
from benchmark.run.produce import Production, decode_checked, error_text, produce_batch
from benchmark.run.record import RunRecord
from benchmark.run.results import atomic_write_bytes, output_path
from benchmark.run.scoring import Scorer
from benchmark.run.timings import Timings
from metrics import defaults, registry


@dataclass(frozen=True)
class Task:
    chunk: int
    codec: str  # label
    start: int  # record indices [start, stop)
    stop: int
    settings: tuple[int, ...] = ()  # setting indices this task produces; () for all of them


def equal_size_batches(items: list[tuple], size: int):
    """Groups of at most `size` items whose images (each item's last element) have one shape, in order of
    each group's first item."""
    open_groups: dict[tuple, list] = {}
    for item in items:
        group = open_groups.setdefault(item[-1].shape, [])
        group.append(item)
        if len(group) == size:
            yield open_groups.pop(item[-1].shape)
    yield from open_groups.values()


@dataclass
class TaskResult:
    task: Task
    rows: list[dict]
    originals: dict[int, np.ndarray]
    reconstructions: list[tuple[int, np.ndarray]]  # (row position, pixels)
    timings: tuple[dict, dict] | None = None  # this task's worker-side stage seconds (benchmark.run.timings)


class Worker:
    def __init__(self, record: RunRecord, dataset: Dataset, run_dir: str):
        self.record = record
        self.dataset = dataset
        self.run_dir = pathlib.Path(run_dir)
        self.config = RunConfig.from_json(record.config)
        self.preprocess = get_preset(self.config.preprocess)[1]
        self.specs = {c.label: c for c in self.config.codecs}
        self.codecs: dict = {}  # label -> (encoder, decoder); (label, k) -> the decoder of sample k
        self.samples = {c.label: c.samples for c in record.codecs if c.samples > 1}
        recorded = record.inception.get("reference_dir")
        self.reference_dir = located(recorded, self.run_dir) if recorded else None
        self.context = codec_context(self.config, record.dataset.split, record.dataset.to_json())
        # Per-image networks (LPIPS, DISTS, CLIP, the caption embedder) run on the run's device, as Inception does.
        self.scorer = Scorer(record.metrics, record, self.config.inception.device or defaults.DEVICE)
        self.base = {
            "run_id": record.run_id, "created": record.created, "git_sha": record.git_sha,
            "cmcbench_version": __version__, "config_hash": record.config_hash,
            "versions": json.dumps(record.versions, sort_keys=True), "dataset": record.dataset.name,
            "dataset_fingerprint": record.dataset.fingerprint, "split": record.dataset.split,
            "preprocess": self.config.preprocess,
        }
        self.codec_columns = {
            c.label: {"codec": c.label, "codec_target": c.target,
                      "codec_options": json.dumps(c.options, sort_keys=True),
                      "codec_versions": json.dumps(c.versions, sort_keys=True), "rate_parameter": c.rate_parameter,
                      "produced_outside": bool(c.produced_outside)}
            for c in record.codecs}

    def needs_original(self, sha: str) -> bool:
        """Whether a feature stage has no cached features of this original yet (it then travels to the stage)."""
        return bool(self.reference_dir and needs_reference(
            self.reference_dir, sha, variants(bool(self.config.inception.patch_fid)))) \
            or feature_stage.needs_reference(self.record, sha, self.run_dir)

    def codec_pair(self, label: str) -> tuple[Codec, Codec]:
        if label not in self.codecs:
            spec = self.specs[label]
            encoder, decoder = spec.build(), spec.build()
            encoder.setup(self.context)
            decoder.setup(self.context)
            self.codecs[label] = (encoder, decoder)
        return self.codecs[label]

    def row(self, codec: str, image_row: dict, setting_index: int, setting) -> dict:
        """A new per-image row: provenance, codec, image and setting columns."""
        return {**self.base, **self.codec_columns[codec], **image_row,
                "setting": float(setting) if isinstance(setting, (int, float)) else None,
                "setting_label": str(setting), "setting_index": setting_index}

    def load(self, index: int) -> tuple[dict, np.ndarray | None, str]:
        record = self.dataset.records[index]
        row = {"image_id": record.image_id, "image_index": record.index}
        try:
            loaded = self.dataset.read(record, self.config.max_pixels)
            pixels = np.ascontiguousarray(self.preprocess(loaded.pixels, record))
        except BadImage as exc:
            return row, None, str(exc)
        except Exception as exc:  # noqa: BLE001 - any reader failure becomes this image's reason
            return row, None, error_text("reading image", exc)
        h, w = pixels.shape[:2]
        digest = hashlib.sha256(f"{w}x{h}|".encode())
        digest.update(memoryview(pixels).cast("B"))
        row.update(image_sha256=digest.hexdigest(), width=w, height=h, source_mode=loaded.source_mode,
                   input_notes="; ".join(loaded.notes))
        return row, pixels, ""

    heartbeat: pathlib.Path | None = None  # set in pool workers: where the parent watches for native hangs

    def _beat(self, task: Task | None, index: int = -1, setting_index: int = -1, stage: str = "") -> None:
        """Tell the parent what this process is doing now (it kills a process stuck past its deadline)."""
        if self.heartbeat is None:
            return
        state = {"pid": os.getpid(), "busy": task is not None, "started": time.time()}
        if task is not None:
            state.update(chunk=task.chunk, codec=task.codec, index=index, setting_index=setting_index, stage=stage)
        atomic_write_bytes(self.heartbeat, json.dumps(state).encode(), durable=False)

    def run(self, task: Task, keep_pixels: bool = False, skip: dict | None = None) -> TaskResult:
        """`skip`: {(image index, setting index): reason} of rows that hung a previous attempt: failed, not rerun.

        Each image is read once; then setting by setting, images of equal size go to the codec in batches of
        its `batch_size` (one at a time for codecs without the batch protocol). Rows come back in (image,
        setting) order whatever the batching, so a run's rows do not depend on it."""
        spec = self.specs[task.codec]
        skip = skip or {}
        result = TaskResult(task, [], {}, [])
        clock = self.scorer.timings = Timings()
        try:
            with clock.stage("codec setup"):
                encoder, decoder = self.codec_pair(task.codec)
            setup_error = ""
        except Exception as exc:  # noqa: BLE001 - the codec fails its rows, the run goes on
            encoder = decoder = None
            setup_error = error_text("codec setup", exc)
        loaded = []
        for index in range(task.start, task.stop):
            with clock.stage("read image"):
                image_row, pixels, error = self.load(index)
            if pixels is not None and keep_pixels and self.needs_original(image_row["image_sha256"]):
                result.originals[index] = pixels
            loaded.append((index, image_row, pixels, error))
        settings = task.settings or tuple(range(len(spec.settings)))
        batch_size = max(1, int(self.config.codec_batch or getattr(encoder, "batch_size", 1) or 1))
        reference_caches: dict[int, dict] = {index: {} for index, *_ in loaded}
        made: dict[tuple[int, int], list[tuple[dict, np.ndarray | None]]] = {}  # a row per sample
        # A codec on the GPU: scoring (and the stages' CPU work) runs in a thread beside it. One scoring thread,
        # so the scorer's networks and caches are used by one thread at a time; the codec only by this one.
        scoring = ThreadPoolExecutor(1) if getattr(encoder, "wants_gpu", False) else None
        pending = []
        try:
            for s in settings:
                setting = spec.settings[s]
                todo = []
                for index, image_row, pixels, error in loaded:
                    row = self.row(task.codec, image_row, s, setting)
                    if pixels is None or setup_error or (index, s) in skip:
                        row.update(status="failed", error=error or setup_error or skip.get((index, s), ""))
                        made[(index, s)] = [(row, None)]
                    else:
                        todo.append((index, row, pixels))
                for group in equal_size_batches(todo, batch_size):
                    records = [self.dataset.records[index] for index, _, _ in group]
                    first = group[0][0]
                    productions = produce_batch(encoder, decoder, [px for _, _, px in group], setting, records,
                                                self.config.timeout, lambda stage: self._beat(task, first, s, stage))
                    self._beat(None)
                    jobs = []
                    for (index, row, pixels), record, production in zip(group, records, productions):
                        samples = self.samples.get(task.codec, 1) if production.reconstruction is not None else 1
                        # a stochastic decoder's further samples of the same bitstream, decoded here, in order
                        more = [self._decode_sample(task, k, row, pixels, setting, production)
                                for k in range(1, samples)]
                        jobs.append((index, row, pixels, record, production, more))

                    def finish(jobs=jobs, setting=setting, s=s):
                        for index, row, pixels, record, production, more in jobs:
                            cache = reference_caches[index]
                            rows = [(row, production, 0)] + [(r, p, k) for k, (r, p) in enumerate(more, 1)]
                            made[(index, s)] = [(r, self._finish(task, r, pixels, record, setting, p, cache, clock,
                                                                 keep_pixels, k)) for r, p, k in rows]

                    if scoring is not None:  # scores this batch while the codec's networks produce the next
                        pending.append(scoring.submit(finish))
                    else:
                        finish()
            for job in pending:
                job.result()
        finally:
            if scoring is not None:
                scoring.shutdown()
        for index, *_ in loaded:
            for s in settings:
                for row, recon in made[(index, s)]:
                    if recon is not None:
                        result.reconstructions.append((len(result.rows), recon))
                    result.rows.append(row)
        result.timings = clock.state()
        return result

    def _decode_sample(self, task: Task, k: int, first: dict, pixels: np.ndarray, setting,
                       production: Production) -> tuple[dict, Production]:
        """Sample k of a stochastic codec's row: the same bitstream (and bits) decoded by a decoder seeded seed+k."""
        row = {**first, "sample": k, **{c: production.columns[c] for c in ("bytes", "bits", "bpp", "encode_s")
                                         if c in production.columns}}
        key = (task.codec, k)
        try:
            if key not in self.codecs:
                self.codecs[key] = reseeded(self.codec_pair(task.codec)[1], k, self.context)
        except Exception as exc:  # noqa: BLE001 - this sample's row fails with its reason
            return row, Production(data=production.data, columns={"status": "failed",
                                                                   "error": error_text("decode", exc)})
        return row, decode_checked(self.codecs[key], production.data, pixels, setting, self.config.timeout)

    def _finish(self, task: Task, row: dict, pixels: np.ndarray, record, setting, production, cache: dict,
                clock: Timings, keep_pixels: bool, sample: int = 0) -> np.ndarray | None:
        """A produced row: its columns, saved outputs and scores; the reconstruction if the stages want it."""
        if task.codec in self.samples:
            row.setdefault("sample", sample)
        row.update(production.columns)
        for stage in ("encode", "decode"):
            if production.columns.get(f"{stage}_s") is not None:
                clock.add(stage, production.columns[f"{stage}_s"])
        if production.data is not None and self.config.save_bitstreams and not sample:
            atomic_write_bytes(output_path(self.run_dir, task.codec, str(setting), record.image_id, ".bin"),
                               production.data)
        recon = production.reconstruction
        if recon is None:
            return None
        row.update(self.scorer.score(pixels, recon, record.captions, row.get(registry.TEXT_COLUMN), cache,
                                     record.label))
        if self.config.save_reconstructions:
            path = output_path(self.run_dir, task.codec, str(setting), record.image_id,
                               f".sample{sample}.png" if sample else ".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(recon).save(path)
        return recon if keep_pixels else None

    def crashed_result(self, task: Task) -> TaskResult:
        """Failed rows for a task whose worker process kept dying."""
        rows = []
        spec = self.specs[task.codec]
        for index in range(task.start, task.stop):
            record = self.dataset.records[index]
            image_row = {"image_id": record.image_id, "image_index": record.index}
            for s in task.settings or range(len(spec.settings)):
                setting = spec.settings[s]
                rows.append({**self.row(task.codec, image_row, s, setting), "status": "failed",
                             "error": "the worker process died while running this task (retried; codec crashed)"})
        return TaskResult(task, rows, {}, [])
