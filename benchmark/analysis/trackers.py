"""Send a finished run to the experiment tracker a researcher already uses: MLflow, TensorBoard or W&B.

What each receives is the same: the resolved configuration as params, the numbers of `metrics.json` (each
setting's means, how many images each rests on, BD-rates against the anchor), the R-D curves as a table
(`rd.csv`) and as figures, the provenance files (config.json) and a small grid of reconstructions. Every
tracker is an optional extra, imported only when asked for, and refused in one sentence when missing.

MLflow metric names allow no '@' or '=': `psnr@jpeg/quality=50` is logged as `psnr/jpeg/quality:50`.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import tempfile
from dataclasses import dataclass

import numpy as np

from benchmark.analysis import tracker_files
from benchmark.run.record import RunRecord, read_record
from benchmark.run.results import load_summary
from metrics.suggest import did_you_mean

# kind -> (module that must import, the extra that installs it)
TRACKERS = {"mlflow": ("mlflow", "mlflow"), "tensorboard": ("torch.utils.tensorboard", "tensorboard"),
            "wandb": ("wandb", "wandb")}


@dataclass(frozen=True)
class Target:
    kind: str  # mlflow, tensorboard or wandb
    where: str | None = None  # MLflow tracking URI, TensorBoard log folder, W&B project; None: the default


def parse_target(text: str, flag: str = "--track") -> Target:
    """'mlflow', 'mlflow:URI', 'tensorboard[:DIR]' or 'wandb[:PROJECT]', checked before any work; `flag` is the
    option it came from (`track --to`), as the one-sentence error names it."""
    kind, _, where = text.partition(":")
    if kind not in TRACKERS:
        close = did_you_mean(kind, TRACKERS)
        raise ValueError(f"{flag} {text}: {close}use mlflow[:URI], tensorboard[:DIR] or wandb[:PROJECT].")
    module, extra = TRACKERS[kind]
    if not _importable(module):
        raise ValueError(f"{flag} {kind} needs {module}, which is not installed: pip install -e '.[{extra}]'.")
    return Target(kind, where or None)


def _importable(module: str) -> bool:
    """Whether `module` can be imported, without importing it (a parent that is missing counts as missing)."""
    try:
        return importlib.util.find_spec(module) is not None and (
            module != "torch.utils.tensorboard" or importlib.util.find_spec("tensorboard") is not None)
    except ModuleNotFoundError:
        return False


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """A nested configuration as 'a.b.c' -> text (trackers take flat string params)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, name + "."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value, default=str)
    return out


def numbers(doc: dict) -> dict[str, float]:
    """The numeric entries of metrics.json (identities and notes are params or tags, not metrics)."""
    return {k: float(v) for k, v in doc.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def mlflow_name(key: str) -> str:
    return key.replace("@", "/").replace("=", ":")


@dataclass
class Payload:
    """Everything a tracker receives, gathered once from the run."""

    run_dir: pathlib.Path
    record: RunRecord
    params: dict[str, str]
    metrics: dict[str, float]
    doc: dict
    rd_csv: pathlib.Path
    figures: list[pathlib.Path]
    grid: np.ndarray | None
    tags: dict[str, str]


def gather(run_dir: pathlib.Path, scratch: pathlib.Path, grid_images: int = 2) -> Payload:
    from benchmark.analysis.plots import rd_plots
    from benchmark.analysis.report import grid_image

    record = read_record(run_dir)
    summary = load_summary(run_dir)
    tracker_files.write(run_dir, scratch)  # the same files the run folder holds, computed afresh
    doc = json.loads((scratch / tracker_files.METRICS_JSON).read_text())
    figures = sorted((run_dir / "plots").glob("rd_*.png")) or rd_plots(summary, scratch / "plots", formats=("png",))
    try:
        grid = grid_image(run_dir, grid_images)
    except Exception:  # noqa: BLE001 - a dataset no longer readable here: the numbers still go
        grid = None
    d = record.dataset
    tags = {"cmcbench.run_id": record.run_id, "cmcbench.dataset": f"{d.name}/{d.split}",
            "cmcbench.n_images": str(d.n_images), "cmcbench.git_sha": str(record.git_sha),
            "cmcbench.config_hash": str(record.config_hash)}
    return Payload(run_dir, record, flat_params(record.config), numbers(doc), doc, scratch / tracker_files.RD_CSV,
                   [pathlib.Path(f) for f in figures], grid, tags)


def send(run_dir: str | pathlib.Path, target: Target) -> str:
    """Send a finished run; returns where it went, in words. Default places are beside the run (its results
    folder)."""
    run_dir = pathlib.Path(run_dir)
    root = run_dir.parent
    with tempfile.TemporaryDirectory(prefix="cmcbench-track-") as scratch:
        payload = gather(run_dir, pathlib.Path(scratch))
        return {"mlflow": to_mlflow, "tensorboard": to_tensorboard, "wandb": to_wandb}[target.kind](
            payload, target, root, pathlib.Path(scratch))


def default_mlflow_uri(root: pathlib.Path) -> str:
    return f"sqlite:///{(root / 'mlflow' / 'mlflow.db').resolve()}"


def to_mlflow(p: Payload, target: Target, root: pathlib.Path, scratch: pathlib.Path) -> str:
    import time

    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    import logging

    for name in ("mlflow", "alembic"):  # schema creation and migration notes are not the user's business
        logging.getLogger(name).setLevel(logging.WARNING)
    uri = target.where or default_mlflow_uri(root)
    if uri.startswith("sqlite:///"):
        pathlib.Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    name = "cmcbench/" + p.record.dataset.name
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    elif uri.startswith("sqlite:///"):  # artifacts beside the local store, not in the working directory
        artifacts = (pathlib.Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve()
        experiment_id = client.create_experiment(name, artifact_location=artifacts.as_uri())
    else:
        experiment_id = client.create_experiment(name)
    run = client.create_run(experiment_id, run_name=p.record.run_id, tags=p.tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(mlflow_name(k), v, now, 0) for k, v in p.metrics.items()]
    params = [Param(k[:250], v[:6000]) for k, v in p.params.items()]
    for start in range(0, len(params), 100):  # MLflow's limits per batch: 100 params, 1000 metrics
        client.log_batch(run_id, params=params[start:start + 100])
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start:start + 1000])
    client.set_tag(run_id, "cmcbench.anchor", str(p.doc.get("bd_anchor")))
    client.log_artifact(run_id, str(p.rd_csv), "curves")
    client.log_artifact(run_id, str(scratch / tracker_files.METRICS_JSON), "curves")
    for figure in p.figures:
        client.log_artifact(run_id, str(figure), "figures")
    client.log_artifact(run_id, str(p.run_dir / "config.json"), "provenance")
    if p.grid is not None:
        client.log_image(run_id, p.grid, "reconstructions/grid.png")
    client.set_terminated(run_id)
    return f"MLflow run {run_id} in experiment {name} at {uri}"


def to_tensorboard(p: Payload, target: Target, root: pathlib.Path, scratch: pathlib.Path) -> str:
    from torch.utils.tensorboard import SummaryWriter
    from PIL import Image

    folder = pathlib.Path(target.where) if target.where else root / "tensorboard" / p.record.run_id
    writer = SummaryWriter(log_dir=str(folder))
    try:
        for key, value in p.metrics.items():
            writer.add_scalar(key, value, 0)
        writer.add_text("config", "```\n" + json.dumps(p.record.config, indent=1) + "\n```", 0)
        for figure in p.figures:
            with Image.open(figure) as im:
                writer.add_image(f"figures/{figure.stem}", np.asarray(im.convert("RGB")), 0, dataformats="HWC")
        if p.grid is not None:
            writer.add_image("reconstructions/grid", p.grid, 0, dataformats="HWC")
    finally:
        writer.close()
    return f"TensorBoard event files in {folder}"


def to_wandb(p: Payload, target: Target, root: pathlib.Path, scratch: pathlib.Path) -> str:
    import pandas as pd
    import wandb

    root.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=target.where or "cmcbench", name=p.record.run_id, config=p.params, dir=str(root),
                     mode="offline", tags=[p.record.dataset.name], settings=wandb.Settings(silent=True))
    try:
        run.log({**p.metrics, "rd": wandb.Table(dataframe=pd.read_csv(p.rd_csv)),
                 **{f"figures/{f.stem}": wandb.Image(str(f)) for f in p.figures},
                 **({"reconstructions/grid": wandb.Image(p.grid)} if p.grid is not None else {})})
        import shutil

        shutil.copyfile(p.run_dir / "config.json", pathlib.Path(run.dir) / "cmcbench-config.json")  # files in run.dir are synced
        where = run.dir
    finally:
        run.finish()
    return f"W&B offline run in {where} (wandb sync to upload)"
