"""The orchestrator: creates a run (dataset, codecs, metrics and the row schema resolved once, with
provenance, into config.json), plans its tasks, hands them to an executor and writes the summary.

Work is split into tasks of (chunk of images, codec). A task reads and preprocesses each of its images
once, produces every setting's reconstruction and scores it (`benchmark.run.worker`), and returns one row per
(image, setting). This process commits each task's rows as one atomic parquet shard with the run's
declared schema, so a killed run loses at most the tasks in flight, and `resume` redoes exactly those.
Set-level metrics come afterwards from stored per-image features. Nothing about any particular codec or
metric is known here: codecs come from their specs, metrics from the registry.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import pathlib
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Callable


from benchmark.run import (console, dinov2_stage, feature_stage, feature_store, fullref, perceptual, provenance,
                           run_folder, schema, timings, weights)
from benchmark.codecs.codec_spec import CodecSpec
from benchmark.run.backlog import Backlog, carried_at_most, default_bound
from benchmark.run.config import RunConfig, codec_context
from benchmark.data.datasets import Dataset
from benchmark.data.preprocess import get_preset
from benchmark.run.record import CodecRecord, RunRecord, read_record
from benchmark.run.produce import check_output, time_limit  # noqa: F401 - re-exported for callers of the old module
from benchmark.run.results import (DamagedFile, atomic_write_bytes, damaged_files, discard_task_files, failure_reason,
                                   read_summary, redo_hint, safe_name, shard_files, shard_path, summarise,
                                   write_summary, write_table)
from benchmark.run.scoring import COMPUTED_HERE, metric_states, requested, status_column
from benchmark.run.timings import WORKER_PREFIX, Timings
from benchmark.run.worker import Task, TaskResult, Worker
from metrics import defaults, registry
from metrics.caption import resolve as resolve_caption_metrics
from metrics.caption import resolve_embedder
from metrics.inception import SPACE

__all__ = ["RunConfig", "Task", "TaskResult", "Worker", "codec_context", "create_run", "execute", "plan"]


def _codec_info(spec: CodecSpec, context: dict) -> dict:
    codec = spec.build()
    cls = type(codec)
    cls.check_available()
    codec.setup(context)
    return {"label": spec.label, "target": spec.target, "name": cls.name, "options": codec.options,
            "settings": list(spec.settings), "rate_parameter": cls.rate_parameter,
            "versions": {**codec.versions(), **provenance.source_revision(type(getattr(codec, "inner", codec)))},
            "side_information": codec.side_information(), "parallel": codec.parallel,
            "wants_gpu": bool(codec.wants_gpu), "batch_size": int(codec.batch_size), "batched": codec.batched(),
            "model_per_setting": bool(codec.model_per_setting),
            **({"samples": spec.samples, "sample_seeds": [int(codec.options["seed"]) + k for k in range(spec.samples)]}
               if spec.samples > 1 else {}),
            "exact_size": codec.exact_size, "produced_outside": cls.produced_outside, "columns": dict(codec.columns),
            "notes": codec.notes()}


def preflight(config: RunConfig, split: str) -> None:
    """Everything about the codecs that can be checked before any work or download (availability, whether
    they fit the dataset, model names, files), each failure one sentence naming the fix."""
    context = codec_context(config, split)
    for spec in config.codecs:
        spec.codec_class().check_available()
        spec.build().preflight(context)


def added_metrics(config: RunConfig) -> list[str]:
    """Registry metrics that are off by default and this run asked for (names checked)."""
    added = list(dict.fromkeys(column for name in config.add_metrics for column in registry.expand(name)))
    return added + (["patch_fid"] if config.inception.patch_fid else [])


def run_schema(record: RunRecord) -> list[list[str]]:
    """The run's row schema (see benchmark.run.schema), from its codecs and requested metrics; `sample` (the
    decode's index, 0..K-1) when a codec decodes each bitstream several times."""
    sampled = [{"sample": "int64"}] if any(c.samples > 1 for c in record.codecs) else []
    return [list(c) for c in schema.run_columns([c.columns for c in record.codecs] + sampled,
                                                 requested(record.metrics))]


def create_run(config: RunConfig, out_root: str | os.PathLike = "results", name: str | None = None,
               progress: bool = True, dataset: Dataset | None = None) -> pathlib.Path:
    """Resolve the dataset, codecs and metrics, write config.json with full provenance and the row schema,
    return the run directory. `dataset`: config.dataset already opened (with config.split), if the caller has it."""
    if not config.codecs:
        raise ValueError("No codecs to run.")
    run_folder.check_name(name)
    labels = [c.label for c in config.codecs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"Codec labels must be unique, got {labels}: give each a label=NAME.")
    folders: dict[str, str] = {}  # a label's folder name, as a file system that ignores case sees it -> the label
    for label in labels:  # two labels in one folder would overwrite each other's shards
        folder = safe_name(label)
        if (other := folders.setdefault(folder.casefold(), label)) != label:
            raise ValueError(f"Codec labels {other!r} and {label!r} would share one results folder "
                             f"(images/{safe_name(other)}, images/{folder}): give one of them a label=NAME of "
                             "letters, digits and . _ = - that differs in more than case.")
    added = added_metrics(config)
    dataset = dataset.limit(config.limit) if dataset is not None else config.open_dataset()
    config.split = dataset.split
    if not len(dataset):
        raise ValueError(f"Dataset {config.dataset!r} ({dataset.split}) has no images.")
    description, _ = get_preset(config.preprocess)
    preflight(config, dataset.split)
    if config.chunk_size is None:
        config.chunk_size = max(1, min(32, len(dataset) // 64))
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    inception = perceptual.resolve(config.inception, pathlib.Path(out_root) / ".cache", progress)
    image_metrics = fullref.resolve(config.image_metrics, pathlib.Path(out_root) / ".cache", progress)
    dinov2 = dinov2_stage.resolve(config.dinov2, pathlib.Path(out_root) / ".cache")
    from metrics import iqa

    iqa_states = iqa.resolve(config.iqa, config.iqa_weights, progress)
    stages = {s.name: s.resolved(config.stages.get(s.name, s.default), pathlib.Path(out_root) / ".cache", progress)
              for s in registry.STAGES.values() if not s.home}
    stages = {name: state for name, state in stages.items() if state["status"] != "disabled"}
    # Every weight file the run uses: the first four as earlier versions hashed them (their runs keep their
    # hash), the rest (LPIPS's linear layers, LPIPS-VGG, DISTS, CLIP, codecs' local model folders such as CMC's
    # captioner and generator) under "weights", absent when none.
    hashed_before = {"Inception", "lpips backbone", "DINOv2", *iqa_states}
    codecs = [_codec_info(c, codec_context(config, dataset.split)) for c in config.codecs]
    used = RunRecord.from_json({"inception": inception, "image_metrics": image_metrics, "dinov2": dinov2,
                                "iqa": iqa_states, "codecs": codecs, **stages})
    more = {what: sha for what, (_, sha) in weights.recorded(used).items() if what not in hashed_before}
    more.update({what: fingerprint for what, (_, fingerprint) in weights.codec_models(used).items()})
    chash = provenance.config_hash({**config.hashed_part(), "extractor": inception.get("weights_sha256"),
                                    **({"lpips": image_metrics["lpips"]["backbone_sha256"]}
                                       if image_metrics["lpips"]["status"] == "ok" else {}),
                                    **({"dinov2_weights": dinov2["weights_sha256"]} if dinov2["status"] == "ok"
                                       else {}),
                                    **{f"iqa_{k}": v["weights_sha256"] for k, v in iqa_states.items()
                                       if v.get("weights_sha256")},
                                    **({"weights": more} if more else {})})
    run_id = name or f"{created:%Y%m%d-%H%M%S}-{chash[:8]}"
    run_dir = pathlib.Path(out_root) / run_id
    if name and (run_dir / "config.json").exists():  # told before any work; a generated id gets a suffix instead
        raise FileExistsError(f"{run_dir} already holds a run: resume it with --resume {shlex.quote(str(run_dir))}, "
                              "or pick another --name.")
    embedder = resolve_embedder(config.caption_embedder)
    record = RunRecord.from_json({  # from here on, the run is read by attribute
        "run_id": run_id, "created": created.isoformat(), "config_hash": chash, "git_sha": provenance.git_sha(),
        "git_date": provenance.git_date(),
        "versions": provenance.package_versions(), "config": config.to_json(),
        "dataset": {"name": dataset.name, "kind": dataset.kind, "split": dataset.split, "n_images": len(dataset),
                    "fingerprint": dataset.fingerprint(), "notes": dataset.notes, "origin": dataset.origin,
                    "preprocess": config.preprocess, "preprocess_description": description},
        "codecs": codecs, "inception": inception, "dinov2": dinov2, "iqa": iqa_states, "image_metrics": image_metrics,
        "caption_embedder": embedder, "caption_metrics": resolve_caption_metrics(embedder),
        **stages,  # each requested Stage of a metric file, under its name
    })
    record = replace(record, codecs=tuple(replace(c, task_images=task_images(record.config, c)) for c in record.codecs))
    states = metric_states(record, added)
    truth = _instance_annotations(states, dataset, config.preprocess)
    if any(states[m]["status"] != "disabled" and "labels" in registry.get(m).needs for m in states):
        # only when a metric reads them: config.json reads as before
        record = replace(record, dataset=replace(record.dataset, rest={**record.dataset.rest,
                                                                       **dataset.class_record()}))
    for name in added:
        if states[name]["status"] == "disabled":
            asked = f"--add-metric {name}" if any(name in registry.expand(n) for n in config.add_metrics) \
                else "--patch-fid"  # the flag that asked for it
            raise ValueError(f"{asked} needs a stage this run does not request: {states[name]['reason']}.")
    record = replace(record, metrics=states)
    # absent when no space needs a cache, so config.json reads as it did before
    record = replace(record, feature_caches=feature_stage.cache_dirs(record, pathlib.Path(out_root) / ".cache",
                                                                     run_dir))
    more = {}
    if config.protocol:
        from benchmark.run import protocols

        protocol = protocols.get(config.protocol)
        more["protocol"] = protocol.as_record()
        if not protocol.whole_image_fid:
            states = dict(states)
            for name in ("inception_score", "fid", "kid"):
                if states[name]["status"] == "ok":
                    states[name] = {"status": "disabled", "reason": f"protocol {protocol.name} reports FID only "
                                    "over 256-px patches (patch_fid), never on whole images"}
            record = replace(record, metrics=states)
    more["conventions"] = {"psnr_cap_db": registry.PSNR_CAP_DB,
                           "psnr_cap": "per-image PSNR stays exact (inf when lossless); averages clip it at the cap "
                                       "and the summary counts those images in n_lossless"}
    more["integrity"] = "sha256"  # every result and cached feature file has a checksum beside it (run.integrity)
    run_dir = run_folder.new_folder(pathlib.Path(out_root), run_id, named=bool(name))
    # run_id with its suffix, when another run of this configuration took the id this second
    record = replace(record, run_id=run_dir.name, schema=run_schema(record), rest={**record.rest, **more})
    try:
        run_folder.write_config(run_dir, record.to_json())
        if truth is not None:
            feature_stage.write_truth(run_dir, truth)
        if config.save_reconstructions or config.save_bitstreams:
            _write_output_manifests(run_dir, record)
    except BaseException:  # a creation that did not finish (a full disk, Ctrl-C) leaves no folder behind
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


def _instance_annotations(states: dict, dataset: Dataset, preprocess: str):
    """The dataset's annotated objects in the preprocessed pixels when a requested metric reads them; a metric that
    would and cannot is marked unavailable in `states`, saying why."""
    wanted = [m for m, state in states.items() if state["status"] == "ok" and "objects" in registry.get(m).needs]
    truth = feature_stage.truth_table(dataset, preprocess) if wanted else None
    if wanted and truth is None:
        for m in wanted:
            states[m] = {"status": "unavailable", "reason": "the dataset has no instance annotations that its "
                         "preprocessing keeps (MS-COCO with annotations/instances_<split>.json, preprocessed by none "
                         "or resize-N, has them)"}
    return truth


def _write_output_manifests(run_dir: pathlib.Path, record: RunRecord) -> None:
    """Beside each codec's saved outputs, what they are: a `precomputed` codec reads the settings' order from it."""
    from benchmark.run.results import OUTPUTS

    for c in record.codecs:
        manifest = {"codec": c.label, "target": c.target, "rate_parameter": c.rate_parameter,
                    "settings": [str(v) for v in c.settings], "folders": [safe_name(str(v)) for v in c.settings],
                    "run_id": record.run_id, "dataset": record.dataset.name, "split": record.dataset.split,
                    "preprocess": record.dataset.preprocess,
                    "reconstructions": record.config["save_reconstructions"],
                    "bitstreams": record.config["save_bitstreams"]}
        atomic_write_bytes(run_dir / OUTPUTS / safe_name(c.label) / "manifest.json",
                           json.dumps(manifest, indent=2).encode())


def _legacy_record(record: RunRecord) -> RunRecord:
    """Runs created before the metric registry and the declared schema: derive both once (written back as the
    keys the run's config.json lacked, should a resume rewrite it)."""
    if not record.has("metrics"):
        if "caption_metrics" not in record.rest:
            record = replace(record, rest={**record.rest,
                                           "caption_metrics": resolve_caption_metrics(record.caption_embedder)})
        added = ["patch_fid"] if record.config["inception"].get("patch_fid") else []
        record = replace(record, metrics=metric_states(record, added), present=record.present | {"metrics"})
    if not record.has("schema"):
        codecs = tuple(c if c.has("columns") else replace(c, columns=dict(CodecSpec.from_json(
            {"target": c.target, "label": c.label, "options": c.options, "settings": c.settings}).codec_class().columns),
            present=c.present | {"columns"}) for c in record.codecs)
        record = replace(record, codecs=codecs)
        record = replace(record, schema=run_schema(record), present=record.present | {"schema"})
    return record


def read_run_info(run_dir: pathlib.Path) -> RunRecord:
    """The run's record, with what runs of earlier versions did not record derived (their metric states, schema)."""
    return _legacy_record(read_record(run_dir))


def _revision(sha: str) -> str:
    """A recorded git_sha as a reader needs it: 12 digits, and whether tracked files had uncommitted changes (the
    '-dirty' that 12 digits would cut off, leaving 'abc -> abc')."""
    base, dirty = sha.removesuffix("-dirty"), sha.endswith("-dirty")
    return base[:12] + (" with uncommitted changes" if dirty else "")


def provenance_changes(record: RunRecord) -> tuple[list[str], dict]:
    """What differs now from the provenance the run recorded (code revision, packages, each codec's
    versions, weight files), as sentences, and the current values."""
    config = RunConfig.from_json(record.config)
    now = {"git_sha": provenance.git_sha(), "versions": provenance.package_versions(), "codecs": {}}
    changes = []
    if now["git_sha"] != record.git_sha:
        changes.append(f"the cmcbench revision changed ({_revision(record.git_sha)} -> {_revision(now['git_sha'])})")
    moved = sorted(k for k in set(now["versions"]) | set(record.versions)
                   if now["versions"].get(k) != record.versions.get(k))
    if moved:
        changes.append("package versions changed (" + ", ".join(
            f"{k} {record.versions.get(k, '-')} -> {now['versions'].get(k, '-')}" for k in moved[:6]) + ")")
    context = codec_context(config, record.dataset.split, record.dataset.to_json())
    for spec, recorded in zip(config.codecs, record.codecs):
        try:
            codec = _codec_info(spec, context)
            versions = codec["versions"]
        except Exception as exc:  # noqa: BLE001 - a codec that cannot even start now is a change too
            codec, versions = {}, {"error": str(exc)}
        now["codecs"][spec.label] = versions
        if versions != recorded.versions:
            changes.append(f"codec {spec.label}'s versions changed ({recorded.versions} -> {versions})")
        side = json.loads(json.dumps(codec.get("side_information", {}))) if "error" not in versions else None
        if side is not None and recorded.has("side_information") and side != recorded.side_information:
            changed = sorted(k for k in set(side) | set(recorded.side_information)
                             if side.get(k) != recorded.side_information.get(k))
            changes.append(f"codec {spec.label}'s side information changed ({', '.join(changed)}: its models, "
                           "tables or training data are not the ones the run started with)")
    changes += weights.changed(record)  # every weight file of every metric stage
    return changes, now


def check_resume(run_dir: pathlib.Path, record: RunRecord, anyway: bool, adds: str = "the rows it adds") -> RunRecord:
    """Refuse to finish a run under provenance other than its own; with `anyway`, finish it and stamp the
    new rows (shards) with the provenance that really produces them, recorded in config.json too."""
    changes, now = provenance_changes(record)
    if not changes:
        return record
    if not anyway:
        raise RuntimeError(f"Cannot resume {run_dir}: {'; '.join(changes)}. Start a new run, or pass "
                           f"--resume-anyway to finish it with the new provenance recorded in {adds}.")
    resumed = {"at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(), "changes": changes,
               "git_sha": now["git_sha"], "versions": now["versions"], "codec_versions": now["codecs"]}
    record = replace(record, rest={**record.rest, "resumed_with": [*record.rest.get("resumed_with", []), resumed]})
    run_folder.write_config(run_dir, record.to_json())
    return replace(record, git_sha=now["git_sha"], versions=now["versions"],
                   codecs=tuple(replace(c, versions=now["codecs"][c.label]) for c in record.codecs))


# A batched codec on the GPU gets chunks of at least this many batches per setting: its scoring thread is
# drained at the end of each task, so a one-batch task would overlap little (see scripts/bench_overlap.py).
GPU_TASK_BATCHES = 4


def task_images(config: dict, codec: CodecRecord) -> int:
    """Images per task of one codec: the run's chunk size, but at least one batch (its batch size, or
    --codec-batch) so that its batches fill, and for a codec on the GPU GPU_TASK_BATCHES batches so that scoring
    overlaps producing. Fixed in config.json when the run is created, so that a resumed run keeps its shards'
    boundaries whatever a later version would choose."""
    batch = int(config.get("codec_batch") or codec.batch_size or 1) if codec.batched else 1
    return max(config["chunk_size"], batch * (GPU_TASK_BATCHES if codec.wants_gpu else 1))


def plan(record: RunRecord, n_images: int) -> list[Task]:
    """Tasks of (chunk of images, codec), each codec's chunks of its `task_images`. A codec with a model per
    setting gets one task per (setting, chunk), setting by setting, so a process that runs them in order loads
    each setting's model once; its chunk numbers run on past the others' (setting s, chunk k is chunk
    s x chunks + k), keeping shards unique."""
    plain, by_setting = [], []
    for c in record.codecs:
        size = int(c.task_images or task_images(record.config, c))
        chunks = [(start, min(start + size, n_images)) for start in range(0, n_images, size)]
        if c.model_per_setting:
            by_setting += [Task(s * len(chunks) + k, c.label, a, b, (s,)) for s in range(len(c.settings))
                           for k, (a, b) in enumerate(chunks)]
        else:
            plain += [Task(k, c.label, a, b) for k, (a, b) in enumerate(chunks)]
    # chunk by chunk across codecs (a stable sort keeps the codecs' order), then the setting-major tasks
    return sorted(plain, key=lambda t: t.chunk) + by_setting


@dataclass
class RunOutcome:
    run_dir: pathlib.Path
    n_rows: int
    n_failed: int
    failed_reasons: dict[tuple[str, str], tuple[int, str]]  # (codec, reason) -> (rows, first image)
    seconds: float
    inception: dict = field(default_factory=dict)
    passes: dict = field(default_factory=dict)


@run_folder.exclusive
def execute(run_dir: str | os.PathLike, jobs: int | None = None, progress: bool = True,
            on_result: Callable[[TaskResult], None] | None = None, executor: str = "local",
            ray_address: str | None = None, stats: dict | None = None, resume: bool = False,
            resume_anyway: bool = False, isolate: bool = False, redo_damaged: bool = False,
            max_pending: int | None = None) -> RunOutcome:
    """Run every task of `run_dir` that has no shard yet, then write the summary.

    Finishing a run that already has work on disk (or `resume`) first recomputes its provenance and refuses
    on any change unless `resume_anyway` (then the new rows carry the new provenance). Codecs that may run
    in parallel run in worker processes when `jobs` > 1 or `isolate` (where --timeout is enforced even on
    code that hangs without returning to the interpreter); otherwise, and for codecs that must run in the
    main process, in this process, where only hangs in Python code can be interrupted.

    `executor` is "local" (a process pool of `jobs` workers; the default) or "ray" (Ray tasks on the
    cluster at `ray_address`, or on a local Ray with `jobs` CPUs). Only how tasks run differs.

    A shard or feature file that fails its checksum stops the run before any work, named; `redo_damaged`
    discards the damaged tasks' files so that they are redone. One process at a time works in a run (a second
    is refused), and only on the config.json that cmcbench wrote (an edited one is refused, naming the keys).

    `max_pending` bounds the images whose pixels wait for the network stages, or are on their way from tasks
    sent out (`benchmark.run.backlog`; None: a share of this machine's memory). `stats` receives the bound and
    the most images that were ever pending.
    """
    if executor not in ("local", "ray"):
        raise ValueError(f"Unknown executor {executor!r}: use local or ray.")

    t_start = time.perf_counter()
    clock = Timings()
    run_dir = pathlib.Path(run_dir)
    record = read_run_info(run_dir)
    config = RunConfig.from_json(record.config)
    dataset = config.open_dataset()
    if dataset.fingerprint() != record.dataset.fingerprint:
        raise RuntimeError(f"The dataset {dataset.name} ({dataset.split}) changed since this run started "
                           "(its image list, sizes or captions differ); start a new run.")
    damaged = damaged_files(run_dir)
    if damaged and not redo_damaged:
        path, why = damaged[0]
        more = f" ({len(damaged)} damaged files in all)" if len(damaged) > 1 else ""
        raise DamagedFile(path, f"{why}{more}; {redo_hint(run_dir)}")
    for path, _ in damaged:
        discard_task_files(run_dir, path)
    tasks = plan(record, len(dataset))
    todo = [t for t in tasks if not shard_path(run_dir, t.codec, t.chunk).exists()]
    # A finished run keeps the summary its own code wrote; one to write (none yet, damaged or out of date) is made
    # by this code, so it is checked like a task to do
    finished = not todo and _summary_stands(run_dir)
    if todo and (resume or len(todo) < len(tasks)) or not todo and not finished:
        record = check_resume(run_dir, record, resume_anyway, "the rows it adds" if todo else "config.json")
    # a codec with a model per setting runs its setting-major tasks in this process, in order: one load each
    parallel_codecs = {c.label for c in record.codecs if c.parallel and not c.model_per_setting}
    jobs = max(1, jobs or os.cpu_count() or 1)
    pooled = [t for t in todo if t.codec in parallel_codecs] if jobs > 1 or isolate else []
    pooled_set = set(pooled)
    local = [t for t in todo if t not in pooled_set]
    columns = record.schema
    crashed = Worker(record, dataset, "").crashed_result
    with contextlib.ExitStack() as stack:
        ray = None
        if executor == "ray":
            from benchmark.run import ray_executor

            ray = stack.enter_context(ray_executor.session(ray_address, jobs if ray_address is None else None))
        # Every network stage's extractor in a Ray actor where the cluster has a GPU, else in this process
        remote = (lambda build: ray_executor.feature_extractor(ray, build)) if ray is not None else (lambda build: None)
        inception_ok = record.inception.get("status") == "ok"
        stage = perceptual.PerceptualStage(record, run_dir, remote(feature_stage.builder(record, SPACE)), clock) \
            if inception_ok else None
        stages = [s for s in (stage,) if s is not None]
        stages += [feature_stage.FeatureStage(space, record, run_dir, clock,
                                              remote(feature_stage.builder(record, space)))
                   for space in feature_stage.active(record)]
        keep_pixels = bool(stages) or on_result is not None

        n_settings = {c.label: len(c.settings) for c in record.codecs}
        rows_of = {t: (t.stop - t.start) * n_settings[t.codec] for t in todo}
        bar = console.bar(total=sum(rows_of.values()), desc="encode/decode/score", unit="rows", enabled=progress)
        network = console.bar(total=sum(rows_of.values()), desc="Inception (reconstructions)", unit="images",
                              enabled=progress and inception_ok)

        def write(result: TaskResult) -> None:
            if on_result is not None:
                on_result(result)
            with clock.stage("write shards"):
                write_table(shard_path(run_dir, result.task.codec, result.task.chunk),
                            schema.table_from_rows(result.rows, columns))
            network.update(rows_of.get(result.task, 0))

        samples = {c.label: c.samples for c in record.codecs}
        batch_size = record.config.get("inception", {}).get("batch_size") or defaults.BATCH_SIZE
        backlog = Backlog(stages, write, lambda t: carried_at_most(t, n_settings[t.codec], samples[t.codec])
                          if keep_pixels else 0, batch_size, max_pending or default_bound(config.preprocess, batch_size))

        def commit(result: TaskResult) -> None:
            bar.update(rows_of.get(result.task, 0))
            clock.merge(result.timings, WORKER_PREFIX)
            backlog.commit(result)

        clock.add("start: dataset, plan, provenance", time.perf_counter() - t_start)

        try:
            if ray is not None:
                ray_executor.run_ray(ray, todo, record, dataset, run_dir, keep_pixels, commit, crashed,
                                     jobs if ray_address is None else None, stats, backlog)
                pooled = local = []
            if pooled:
                from benchmark.run.local_executor import run_pool

                run_pool(pooled, min(jobs, len(pooled)), record, dataset, run_dir, keep_pixels, commit, crashed,
                         on_started=(lambda: [s.load() for s in stages]) if stages else None, backlog=backlog)
            if local:
                worker = Worker(record, dataset, str(run_dir))
                for task in local:
                    backlog.admit(task)
                    commit(worker.run(task, keep_pixels))
            backlog.flush()
            if stats is not None:
                stats.update(max_pending=backlog.bound, peak_pending=backlog.peak)
        finally:
            bar.close()
            network.close()
        if stages:  # originals' features deleted from both the run and the cache: computed again
            with clock.stage("restore originals' features"):
                restored = restore_originals(run_dir, Worker(record, dataset, str(run_dir)), stages)
            if restored:
                print(f"note: the features of {restored} originals were in neither {run_dir / feature_store.OWN} nor "
                      "the cache; computed them again from the dataset.", file=sys.stderr)
    if not finished:
        summary = set_level_summary(run_dir, record, clock)
        with clock.stage("write summary"):
            write_summary(run_dir, summary)
    n_rows, n_failed, reasons = _failure_counts(run_dir)
    seconds = time.perf_counter() - t_start
    timings.append(run_dir, clock.as_record(seconds))
    return RunOutcome(run_dir, n_rows, n_failed, reasons, seconds, record.inception, feature_store.passes(run_dir))


def _summary_stands(run_dir: pathlib.Path) -> bool:
    """Whether the run has a summary that passes its checks against its checksum and the shards it was made from."""
    try:
        read_summary(run_dir)
        return True
    except (DamagedFile, OSError):
        return False


def restore_originals(run_dir: pathlib.Path, worker, stages: list) -> int:
    """Compute again, from the dataset, the originals' features that a finished task's rows need and that are
    neither in the run nor in the cache (both deleted); returns how many images that took."""
    lacking = sorted((i, sha) for i, sha in feature_store.image_shas(run_dir).items()
                     if any(s.lacks(sha) for s in stages))
    for index, sha in lacking:
        row, pixels, error = worker.load(index)
        if pixels is None or row.get("image_sha256") != sha:
            raise RuntimeError(f"The features of original {row['image_id']} (image {index}) are gone and it cannot "
                               f"be read again as it was ({error or 'its pixels changed'}); restore the dataset or "
                               f"the cache.")
        result = TaskResult(Task(-1, "", index, index + 1), [dict(row)], {index: pixels}, [])
        for stage in stages:
            stage.known.discard(sha)
            stage.on_result(result)
    return len(lacking)


def set_level_summary(run_dir: pathlib.Path, record: RunRecord, clock: Timings | None = None):
    """The per-setting summary: per-image means, set-level metrics from stored features, and each requested
    metric's availability (`<stage>_status`); a metric that is unavailable is NaN, never zero."""
    clock = clock or Timings()
    with clock.stage("summary: per-image means"):
        summary = summarise(run_dir)
    if not len(summary):
        return summary
    if record.inception.get("status") == "ok":
        summary = summary.merge(perceptual.InceptionSets(run_dir, record).table(clock), on=["codec", "setting_index"],
                                how="left")
        counts = feature_store.passes(run_dir)
        summary["inception_passes_reference"] = counts["reference"]
        summary["inception_passes_reconstruction"] = counts["reconstruction"]
        summary["inception_passes_patches"] = counts.get("patches", 0)
    summary = feature_stage.summary_columns(run_dir, record, summary, clock)
    declared = {name for name, _ in record.schema}
    if "sample" in declared:
        from benchmark.run.results import sample_spreads

        per_image = [m.column for m in registry.METRICS.values() if m.per_image and m.kind != "rate"
                     and m.column in declared]
        spreads = sample_spreads(run_dir, per_image)
        if len(spreads):
            summary = summary.merge(spreads, on=["codec", "setting_index"], how="left")
    if "rate_match" in declared:
        summary = summary.merge(rate_match_counts(run_dir), on=["codec", "setting_index"], how="left")
    for name, state in record.metrics.items():
        metric = registry.get(name)
        if state["status"] == "disabled" or (metric.kind in COMPUTED_HERE and name not in declared):
            continue  # not asked for, or not applicable to this run's codecs
        if metric.state or state["status"] != "ok":  # a metric without a stage: its column when it cannot run
            summary[status_column(name)] = "ok" if state["status"] == "ok" else f"{state['status']}: {state['reason']}"
        for column, _ in metric.all_columns():
            if state["status"] != "ok" or column not in summary:
                summary[column] = float("nan")  # unavailable: never zero, never made up
    return summary


def rate_match_counts(run_dir: pathlib.Path):
    """Per rate-matched setting: how many images reached the target within tolerance, and how the others
    ended (closest, below-range, above-range)."""
    import pandas as pd
    import pyarrow.parquet as pq

    frames = [pq.read_table(p, columns=["codec", "setting_index", "status", "rate_match"]).to_pandas()
              for p in shard_files(run_dir)]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["codec", "setting_index", "status", "rate_match"])
    rows = rows[(rows.status == "ok") & rows.rate_match.notna()]
    out = []
    for (codec, s), group in rows.groupby(["codec", "setting_index"]):
        counts = group.rate_match.value_counts()
        out.append({"codec": codec, "setting_index": s, "rate_n_matched": int(counts.get("matched", 0)),
                    "rate_match_counts": ", ".join(f"{k} {v}" for k, v in counts.items())})
    return pd.DataFrame(out, columns=["codec", "setting_index", "rate_n_matched", "rate_match_counts"])


def _failure_counts(run_dir: pathlib.Path) -> tuple[int, int, dict[tuple[str, str], tuple[int, str]]]:
    """(rows, failed rows, {(codec, reason): (rows, the first image it failed on)})."""
    import pyarrow.parquet as pq

    n = failed = 0
    reasons: dict[tuple[str, str], tuple[int, str]] = {}
    for path in shard_files(run_dir):
        t = pq.read_table(path, columns=["codec", "image_id", "status", "error"]).to_pydict()
        n += len(t["status"])
        for codec, image, status, error in zip(t["codec"], t["image_id"], t["status"], t["error"]):
            if status != "ok":
                failed += 1
                key = (codec, failure_reason(error, image))
                count, first = reasons.get(key, (0, image))
                reasons[key] = (count + 1, first)
    return n, failed, reasons
