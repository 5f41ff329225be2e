"""The runner: sweeps codecs and settings over a dataset, writing finished work as it completes.

Work is split into tasks of (chunk of images, codec). A task reads and preprocesses each of its images
once, encodes and decodes it at every setting of the codec, and returns one row per (image, setting).
The main process commits each task's rows as one atomic parquet shard, so a killed run loses at most
the tasks in flight, and `resume` redoes exactly those. Nothing about any particular codec is known here.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as dt
import hashlib
import json
import multiprocessing
import os
import pathlib
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
from PIL import Image

from benchmark import __version__, fullref, perceptual, provenance
from benchmark.codec import Codec, CodecSpec, encode_image
from benchmark.datasets import Dataset, open_dataset
from benchmark.imageio import DEFAULT_MAX_PIXELS, BadImage
from benchmark.preprocess import get_preset
from benchmark.results import (atomic_write_bytes, safe_name, shard_files, shard_path, summarise, table_from_rows,
                               write_table)
from metrics.caption import caption_scores, resolve_embedder
from metrics.psnr import psnr
from metrics.rate import bits_per_pixel


class CodecTimeout(Exception):
    pass


@dataclass
class RunConfig:
    """Everything that determines a run's rows (hashed), plus how to execute it (not hashed)."""

    dataset: str = "sample"
    split: str | None = None
    preprocess: str = "none"
    limit: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    codecs: list[CodecSpec] = field(default_factory=list)
    inception: dict = field(default_factory=lambda: dict(perceptual.DEFAULTS))
    caption_embedder: str = "auto"  # sentence-transformers model for caption_cosine; auto, none, id or path
    image_metrics: dict = field(default_factory=lambda: dict(fullref.DEFAULTS))  # MS-SSIM and LPIPS
    # Execution only: these do not change the rows' values.
    timeout: float = 300.0
    chunk_size: int | None = None
    save_reconstructions: bool = False
    save_bitstreams: bool = False

    def hashed_part(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "preprocess": self.preprocess, "limit": self.limit,
                "max_pixels": self.max_pixels, "codecs": [c.to_json() for c in self.codecs],
                "inception": {k: self.inception.get(k) for k in perceptual.HASHED},
                "caption_embedder": self.caption_embedder,
                "image_metrics": {"ms_ssim": bool(self.image_metrics.get("ms_ssim")),
                                  "lpips": self.image_metrics.get("lpips", "auto") != "none"}}

    def to_json(self) -> dict:
        d = asdict(self)
        d["codecs"] = [c.to_json() for c in self.codecs]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "RunConfig":
        d = dict(d)
        d["codecs"] = [CodecSpec.from_json(c) for c in d["codecs"]]
        return cls(**d)


@dataclass(frozen=True)
class Task:
    chunk: int
    codec: str  # label
    start: int  # record indices [start, stop)
    stop: int


@contextmanager
def time_limit(seconds: float, what: str):
    """Raise CodecTimeout in the calling thread after `seconds` (main thread of a process only)."""
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise CodecTimeout(f"{what} timed out after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _error_text(stage: str, exc: BaseException) -> str:
    if isinstance(exc, CodecTimeout):
        return str(exc)
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{stage} failed: {type(exc).__name__}" + (f": {msg}" if msg else "")


def check_output(recon: Any, reference: np.ndarray, exact_size: bool) -> tuple[np.ndarray, str]:
    if not isinstance(recon, np.ndarray):
        raise ValueError(f"decoder returned {type(recon).__name__}, not a numpy array")
    if recon.dtype != np.uint8:
        raise ValueError(f"decoder returned dtype {recon.dtype}, expected uint8")
    if recon.ndim != 3 or recon.shape[2] != 3:
        raise ValueError(f"decoder returned shape {recon.shape}, expected H x W x 3")
    if recon.shape == reference.shape:
        return recon, ""
    h, w = reference.shape[:2]
    if exact_size:
        raise ValueError(f"decoded image is {recon.shape[1]}x{recon.shape[0]}, expected {w}x{h}")
    note = f"output {recon.shape[1]}x{recon.shape[0]} resized to {w}x{h} (bicubic) for pixel metrics"
    return np.asarray(Image.fromarray(recon).resize((w, h), Image.BICUBIC)), note


class Worker:
    """Runs tasks; one per process. Holds the dataset, the preprocessing and an encoder and a
    separate decoder instance of each codec (the decoder never sees the encoder's state)."""

    def __init__(self, info: dict, dataset: Dataset, run_dir: str):
        self.info = info
        self.dataset = dataset
        self.run_dir = pathlib.Path(run_dir)
        self.config = RunConfig.from_json(info["config"])
        self.preprocess = get_preset(self.config.preprocess)[1]
        self.specs = {c.label: c for c in self.config.codecs}
        self.codecs: dict[str, tuple[Codec, Codec]] = {}
        self.reference_dir = info.get("inception", {}).get("reference_dir")
        self.context = codec_context(self.config, info["dataset"]["split"])
        self.embedder = info.get("caption_embedder", {}).get("model", "")
        self.fullref = fullref.FullReference(info.get("image_metrics", {}))
        self.base = {
            "run_id": info["run_id"], "created": info["created"], "git_sha": info["git_sha"],
            "cmcbench_version": __version__, "config_hash": info["config_hash"],
            "versions": json.dumps(info["versions"], sort_keys=True), "dataset": info["dataset"]["name"],
            "dataset_fingerprint": info["dataset"]["fingerprint"], "split": info["dataset"]["split"],
            "preprocess": self.config.preprocess,
        }
        self.codec_columns = {
            c["label"]: {"codec": c["label"], "codec_target": c["target"],
                         "codec_options": json.dumps(c["options"], sort_keys=True),
                         "codec_versions": json.dumps(c["versions"], sort_keys=True),
                         "rate_parameter": c["rate_parameter"]}
            for c in info["codecs"]}

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
            return row, None, _error_text("reading image", exc)
        h, w = pixels.shape[:2]
        digest = hashlib.sha256(f"{w}x{h}|".encode())
        digest.update(memoryview(pixels).cast("B"))
        row.update(image_sha256=digest.hexdigest(), width=w, height=h, source_mode=loaded.source_mode,
                   input_notes="; ".join(loaded.notes))
        return row, pixels, ""

    def run(self, task: Task, keep_pixels: bool = False) -> "TaskResult":
        spec = self.specs[task.codec]
        result = TaskResult(task, [], {}, [])
        try:
            encoder, decoder = self.codec_pair(task.codec)
            setup_error = ""
        except Exception as exc:  # noqa: BLE001 - the codec fails its rows, the run goes on
            encoder = decoder = None
            setup_error = _error_text("codec setup", exc)
        for index in range(task.start, task.stop):
            image_row, pixels, error = self.load(index)
            reference_cache: dict = {}
            if pixels is not None and keep_pixels and self.reference_dir and perceptual.needs_reference(
                    self.reference_dir, image_row["image_sha256"], self.config.inception.get("patch_fid")):
                result.originals[index] = pixels
            for s, setting in enumerate(spec.settings):
                row = self.row(task.codec, image_row, s, setting)
                if pixels is None or setup_error:
                    row.update(status="failed", error=error or setup_error)
                else:
                    record = self.dataset.records[index]
                    recon = self._encode_decode(encoder, decoder, pixels, setting, row, record)
                    if recon is not None and self.fullref.enabled:
                        try:
                            row.update(self.fullref.scores(pixels, recon, reference_cache))
                        except Exception as exc:  # noqa: BLE001 - the metric fails this row, not the run
                            row.update(status="failed", error=_error_text("MS-SSIM/LPIPS", exc))
                            recon = None
                    if "caption" in row and record.captions:
                        row.update(caption_scores(row["caption"], record.captions, self.embedder))
                    if recon is not None and keep_pixels:
                        result.reconstructions.append((len(result.rows), recon))
                    if recon is not None and self.config.save_reconstructions:
                        self._save(task.codec, str(setting), image_row["image_id"], recon)
                result.rows.append(row)
        return result

    def _encode_decode(self, encoder: Codec, decoder: Codec, pixels, setting, row: dict, record) -> np.ndarray | None:
        timeout = self.config.timeout
        stage = "encode"
        try:
            t0 = time.perf_counter()
            with time_limit(timeout, "encode"):
                data = encode_image(encoder, pixels, setting, record)
            t1 = time.perf_counter()
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"encoder returned {type(data).__name__}, not bytes")
            data = bytes(data)
            h, w = pixels.shape[:2]
            row.update(bytes=len(data), bits=8 * len(data), bpp=bits_per_pixel(len(data), w, h), encode_s=t1 - t0)
            row.update(encoder.encode_columns())
            if self.config.save_bitstreams:
                self._save_bytes(row["codec"], str(setting), row["image_id"], data)
            stage = "decode"
            t2 = time.perf_counter()
            with time_limit(timeout, "decode"):
                recon = decoder.decode(data)
            row["decode_s"] = time.perf_counter() - t2
            stage = "output check"
            recon, note = check_output(recon, pixels, type(decoder).exact_size)
            row.update(decoder.extra_columns(data))
            row.update(psnr=psnr(pixels, recon), output_notes=note, status="ok", error="")
            return recon
        except Exception as exc:  # noqa: BLE001 - the row fails with its reason, the run goes on
            row.update(status="failed", error=_error_text(stage, exc))
            return None

    def _save_bytes(self, codec: str, setting: str, image_id: str, data: bytes) -> None:
        path = self.run_dir / "bitstreams" / safe_name(codec) / safe_name(setting) / f"{image_id}.bin"
        atomic_write_bytes(path, data)

    def _save(self, codec: str, setting: str, image_id: str, recon: np.ndarray) -> None:
        path = (self.run_dir / "reconstructions" / safe_name(codec) / safe_name(setting) / image_id).with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(recon).save(path)


@dataclass
class TaskResult:
    task: Task
    rows: list[dict]
    originals: dict[int, np.ndarray]
    reconstructions: list[tuple[int, np.ndarray]]  # (row position, pixels)


_WORKER: Worker | None = None


def _init_worker(info: dict, dataset: Dataset, run_dir: str) -> None:
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    _WORKER = Worker(info, dataset, run_dir)


def _run_in_worker(task: Task, keep_pixels: bool) -> TaskResult:
    return _WORKER.run(task, keep_pixels)


# ----------------------------------------------------------------------------------------------------------------
# Creating and executing runs


def codec_context(config: RunConfig, split: str) -> dict:
    return {"dataset": config.dataset, "split": split, "preprocess": config.preprocess}


def _codec_info(spec: CodecSpec, context: dict) -> dict:
    codec = spec.build()
    cls = type(codec)
    cls.check_available()
    codec.setup(context)
    return {"label": spec.label, "target": spec.target, "name": cls.name, "options": codec.options,
            "settings": list(spec.settings), "rate_parameter": cls.rate_parameter, "versions": codec.versions(),
            "side_information": codec.side_information(), "parallel": codec.parallel, "exact_size": cls.exact_size}


def create_run(config: RunConfig, out_root: str | os.PathLike = "results", name: str | None = None,
               progress: bool = True) -> pathlib.Path:
    """Resolve the dataset and codecs, write config.json with full provenance, return the run directory."""
    if not config.codecs:
        raise ValueError("No codecs to run.")
    labels = [c.label for c in config.codecs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"Codec labels must be unique, got {labels}: give each a label=NAME.")
    dataset = open_dataset(config.dataset, config.split).limit(config.limit)
    config.split = dataset.split
    if not len(dataset):
        raise ValueError(f"Dataset {config.dataset!r} ({dataset.split}) has no images.")
    description, _ = get_preset(config.preprocess)
    if config.chunk_size is None:
        config.chunk_size = max(1, min(32, len(dataset) // 64))
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    inception = perceptual.resolve(config.inception, pathlib.Path(out_root) / ".cache", progress)
    image_metrics = fullref.resolve(config.image_metrics, progress)
    chash = provenance.config_hash({**config.hashed_part(), "extractor": inception.get("weights_sha256"),
                                    **({"lpips": image_metrics["lpips"]["backbone_sha256"]}
                                       if image_metrics["lpips"]["status"] == "ok" else {})})
    run_id = name or f"{created:%Y%m%d-%H%M%S}-{chash[:8]}"
    run_dir = pathlib.Path(out_root) / run_id
    if (run_dir / "config.json").exists():
        raise FileExistsError(f"{run_dir} already holds a run: resume it with --resume {run_dir}, or pick another --name.")
    info = {
        "run_id": run_id, "created": created.isoformat(), "config_hash": chash, "git_sha": provenance.git_sha(),
        "versions": provenance.package_versions(), "config": config.to_json(),
        "dataset": {"name": dataset.name, "kind": dataset.kind, "split": dataset.split, "n_images": len(dataset),
                    "fingerprint": dataset.fingerprint(), "notes": dataset.notes,
                    "preprocess": config.preprocess, "preprocess_description": description},
        "codecs": [_codec_info(c, codec_context(config, dataset.split)) for c in config.codecs],
        "inception": inception,
        "image_metrics": image_metrics,
        "caption_embedder": resolve_embedder(config.caption_embedder),
    }
    atomic_write_bytes(run_dir / "config.json", json.dumps(info, indent=2, sort_keys=True).encode())
    return run_dir


def plan(info: dict, n_images: int) -> list[Task]:
    size = info["config"]["chunk_size"]
    return [Task(k, c["label"], start, min(start + size, n_images))
            for k, start in enumerate(range(0, n_images, size)) for c in info["codecs"]]


@dataclass
class RunOutcome:
    run_dir: pathlib.Path
    n_rows: int
    n_failed: int
    failed_reasons: dict[str, int]
    seconds: float
    inception: dict = field(default_factory=dict)
    passes: dict = field(default_factory=dict)


def _start_method() -> str:
    """fork is cheapest, but unsafe once torch (threads, CUDA) is live in this process."""
    if not sys.platform.startswith("linux"):
        return "spawn"
    return "forkserver" if "torch" in sys.modules else "fork"


def execute(run_dir: str | os.PathLike, jobs: int | None = None, progress: bool = True,
            on_result: Callable[[TaskResult], None] | None = None, executor: str = "local",
            ray_address: str | None = None, stats: dict | None = None) -> RunOutcome:
    """Run every task of `run_dir` that has no shard yet, then write the summary.

    `executor` is "local" (a process pool of `jobs` workers; the default) or "ray" (Ray tasks on the
    cluster at `ray_address`, or on a local Ray with `jobs` CPUs). Only how tasks run differs.
    """
    if executor not in ("local", "ray"):
        raise ValueError(f"Unknown executor {executor!r}: use local or ray.")
    from tqdm import tqdm

    t_start = time.perf_counter()
    run_dir = pathlib.Path(run_dir)
    with open(run_dir / "config.json") as f:
        info = json.load(f)
    config = RunConfig.from_json(info["config"])
    dataset = open_dataset(config.dataset, config.split).limit(config.limit)
    if dataset.fingerprint() != info["dataset"]["fingerprint"]:
        raise RuntimeError(f"The dataset {dataset.name} ({dataset.split}) changed since this run started "
                           "(its image list, sizes or captions differ); start a new run.")
    todo = [t for t in plan(info, len(dataset)) if not shard_path(run_dir, t.codec, t.chunk).exists()]
    parallel_codecs = {c["label"] for c in info["codecs"] if c["parallel"]}
    jobs = max(1, jobs or os.cpu_count() or 1)
    pooled = [t for t in todo if t.codec in parallel_codecs] if jobs > 1 else []
    pooled_set = set(pooled)
    local = [t for t in todo if t not in pooled_set]
    with contextlib.ExitStack() as stack:
        ray = None
        if executor == "ray":
            from benchmark import ray_executor

            ray = stack.enter_context(ray_executor.session(ray_address, jobs if ray_address is None else None))
        extractor = ray_executor.feature_extractor(ray, info) if ray is not None and \
            info["inception"]["status"] == "ok" else None
        hooks = [perceptual.PerceptualStage(info, run_dir, extractor).on_result] \
            if info["inception"]["status"] == "ok" else []
        hooks += [on_result] if on_result is not None else []
        keep_pixels = bool(hooks)

        bar = tqdm(total=sum(t.stop - t.start for t in todo), unit="img", desc="encode/decode",
                   disable=not progress, dynamic_ncols=True)

        def commit(result: TaskResult) -> None:
            for hook in hooks:
                hook(result)
            write_table(shard_path(run_dir, result.task.codec, result.task.chunk), table_from_rows(result.rows))
            bar.update(result.task.stop - result.task.start)

        try:
            if ray is not None:
                ray_executor.run_ray(ray, todo, info, dataset, run_dir, keep_pixels, commit,
                                     lambda t: _crashed_result(info, dataset, t),
                                     jobs if ray_address is None else None, stats)
                pooled = local = []
            if pooled:
                _run_pool(pooled, jobs, info, dataset, run_dir, keep_pixels, commit)
            if local:
                worker = Worker(info, dataset, str(run_dir))
                for task in local:
                    commit(worker.run(task, keep_pixels))
        finally:
            bar.close()
    summary = summarise(run_dir)
    status = info["inception"]["status"]
    if len(summary) and status == "ok":
        summary = summary.merge(perceptual.set_metrics(run_dir, info), on=["codec", "setting_index"], how="left")
        counts = perceptual.passes(run_dir)
        summary["inception_passes_reference"] = counts["reference"]
        summary["inception_passes_reconstruction"] = counts["reconstruction"]
        summary["inception_passes_patches"] = counts.get("patches", 0)
        summary["inception_status"] = "ok"
    elif len(summary):
        summary["inception_status"] = f"{status}: {info['inception']['reason']}"
        for column in ("inception_score", "fid", "kid", "ipd"):
            summary[column] = float("nan")  # unavailable: never zero, never made up
    for name, state in info.get("image_metrics", {}).items():
        if len(summary):
            summary[f"{name}_status"] = "ok" if state["status"] == "ok" else f"{state['status']}: {state['reason']}"
            if state["status"] != "ok" or name not in summary:
                summary[name] = float("nan")
    write_table(run_dir / "summary.parquet", pa.Table.from_pandas(summary, preserve_index=False))
    n_rows, n_failed, reasons = _failure_counts(run_dir)
    return RunOutcome(run_dir, n_rows, n_failed, reasons, time.perf_counter() - t_start, info["inception"],
                      perceptual.passes(run_dir))


def _run_pool(tasks: list[Task], jobs: int, info: dict, dataset: Dataset, run_dir: pathlib.Path,
              keep_pixels: bool, commit: Callable[[TaskResult], None], max_attempts: int = 2) -> None:
    """Feed tasks to a process pool with a bounded number in flight (memory stays flat), committing
    results as they arrive. A crashed worker breaks the pool: it is rebuilt and the tasks in flight
    are retried one at a time; a task that kills its worker when alone becomes failed rows instead of
    stopping the run."""
    ctx = multiprocessing.get_context(_start_method())
    queue = list(reversed(tasks))
    attempts: dict[Task, int] = {}
    while queue:
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                    initargs=(info, dataset, str(run_dir))) as pool:
            in_flight: dict[cf.Future, Task] = {}
            lost: list[Task] = []
            while (queue or in_flight) and not lost:
                while queue and len(in_flight) < 2 * jobs:
                    if attempts.get(queue[-1]) and in_flight:
                        break  # a task that was in flight when a worker died is retried alone
                    task = queue.pop()
                    in_flight[pool.submit(_run_in_worker, task, keep_pixels)] = task
                    if attempts.get(task):
                        break
                done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    task = in_flight.pop(future)
                    try:
                        result = future.result()
                    except cf.process.BrokenProcessPool:
                        lost.append(task)
                        continue
                    commit(result)
            if lost:
                lost += in_flight.values()
                for task in lost:
                    attempts[task] = attempts.get(task, 0) + 1
                    if attempts[task] >= max_attempts:
                        commit(_crashed_result(info, dataset, task))
                    else:
                        queue.append(task)


def _crashed_result(info: dict, dataset: Dataset, task: Task) -> TaskResult:
    worker = Worker(info, dataset, "")
    rows = []
    for index in range(task.start, task.stop):
        record = dataset.records[index]
        image_row = {"image_id": record.image_id, "image_index": record.index}
        for s, setting in enumerate(worker.specs[task.codec].settings):
            rows.append({**worker.row(task.codec, image_row, s, setting), "status": "failed",
                         "error": "the worker process died while running this task (retried; codec crashed)"})
    return TaskResult(task, rows, {}, [])


def _failure_counts(run_dir: pathlib.Path) -> tuple[int, int, dict[str, int]]:
    import pyarrow.parquet as pq

    n = failed = 0
    reasons: dict[str, int] = {}
    for path in shard_files(run_dir):
        t = pq.read_table(path, columns=["status", "error"]).to_pydict()
        n += len(t["status"])
        for status, error in zip(t["status"], t["error"]):
            if status != "ok":
                failed += 1
                reasons[error] = reasons.get(error, 0) + 1
    return n, failed, reasons
