"""--track and `bench.py track`: what MLflow, TensorBoard and W&B hold, read back with their own readers."""

import json

import numpy as np
import pandas as pd
import pytest

from benchmark.analysis import trackers
from benchmark.cli import main
from benchmark.run.results import load_run

RUN = ["run", "--dataset", "sample:4", "--split", "all", "--metrics", "none", "--codec", "jpeg quality=20,50,80",
       "--codec", "webp quality=20,50,80", "--no-progress", "--no-plots", "--name", "a"]


@pytest.fixture(scope="module")
def tracked(hermetic_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp:  # module-scoped: the hermetic fixture's settings, for the trackers
        for var in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR",
                    "WANDB_DATA_DIR"):
            mp.setenv(var, str(root / "home" / var.lower()))
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("DO_NOT_TRACK", "1")
        assert main([*RUN, "--out", str(root), "--track", "mlflow", "--track", "tensorboard", "--track", "wandb"]) == 0
    return root


def _summary_metrics(run_dir) -> dict[str, float]:
    """psnr, bpp and n_ok of every setting, keyed as metrics.json keys them."""
    _, summary = load_run(run_dir)
    out = {}
    for row in summary.itertuples():
        for m in ("psnr", "bpp", "n_ok"):
            out[f"{m}@{row.codec}/quality={row.setting_label}"] = float(getattr(row, m))
    return out


def test_mlflow_holds_the_summary_the_curves_and_the_config(tracked, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=trackers.default_mlflow_uri(tracked))
    experiment = client.get_experiment_by_name("cmcbench/sample:4")
    (run,) = client.search_runs([experiment.experiment_id])
    expected = _summary_metrics(tracked / "a")
    for key, value in expected.items():
        assert run.data.metrics[trackers.mlflow_name(key)] == value, key
    doc = json.loads((tracked / "a" / "metrics.json").read_text())
    assert run.data.metrics["bd_rate/psnr/webp/jpeg"] == doc["bd_rate/psnr/webp@jpeg"]
    assert run.data.params["dataset"] == "sample:4" and run.data.params["split"] == "all"
    assert json.loads(run.data.params["codecs"])[0]["settings"] == [20, 50, 80]
    assert run.data.tags["cmcbench.run_id"] == "a" and run.data.tags["cmcbench.n_images"] == "4"
    curves = client.download_artifacts(run.info.run_id, "curves/rd.csv", str(tmp_path))
    pd.testing.assert_frame_equal(pd.read_csv(curves), pd.read_csv(tracked / "a" / "rd.csv"))
    names = {a.path for folder in ("curves", "figures", "provenance", "reconstructions")
             for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"curves/rd.csv", "curves/metrics.json", "provenance/config.json", "figures/rd_psnr.png"} <= names
    assert any(n.startswith("reconstructions/") for n in names)


def test_tensorboard_event_files_hold_the_same_scalars(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked / "tensorboard" / "a"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    for key, value in _summary_metrics(tracked / "a").items():
        assert events.Scalars(key)[0].value == pytest.approx(value, rel=1e-6), key  # float32 in event files
    assert {"figures/rd_psnr", "reconstructions/grid"} <= set(events.Tags()["images"])


def test_wandb_offline_run_holds_the_summary(tracked):
    """W&B's offline log (a binary record file that only `wandb sync` reads) holds each metric's key with its
    value as JSON; the run's config.json is among the run's files."""
    (run_dir,) = (tracked / "wandb").glob("offline-run-*")
    (log,) = run_dir.glob("*.wandb")
    data = log.read_bytes()
    for key, value in _summary_metrics(tracked / "a").items():
        as_json = json.dumps(int(value) if value == int(value) else value)  # W&B writes 4.0 as 4
        assert key.encode() in data and as_json.encode() in data, key
    assert json.loads((run_dir / "files" / "cmcbench-config.json").read_text())["run_id"] == "a"


def test_a_missing_tracker_is_refused_before_any_work_in_one_sentence(tmp_path, monkeypatch, capsys):
    real = trackers._importable
    monkeypatch.setattr(trackers, "_importable", lambda module: module != "mlflow" and real(module))
    assert main([*RUN, "--out", str(tmp_path), "--track", "mlflow"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("error: --track mlflow needs mlflow, which is not installed: pip install -e '.[mlflow]'.")
    assert not (tmp_path / "a").exists()  # told before any work
    assert main([*RUN, "--out", str(tmp_path), "--track", "neptune"]) == 1
    assert "use mlflow[:URI], tensorboard[:DIR] or wandb[:PROJECT]" in capsys.readouterr().err
    # Without a tracker the run is unaffected, and a finished run can be sent later.
    assert main([*RUN, "--out", str(tmp_path)]) == 0
    monkeypatch.setattr(trackers, "_importable", real)
    capsys.readouterr()
    assert main(["track", str(tmp_path / "a"), "--to", f"tensorboard:{tmp_path / 'tb'}"]) == 0
    assert f"TensorBoard event files in {tmp_path / 'tb'}" in capsys.readouterr().out
    assert main(["track", str(tmp_path / "a"), "--to", "mlfow"]) == 1  # its own flag named, and what was meant
    assert capsys.readouterr().err == ("error: --to mlfow: did you mean 'mlflow'? use mlflow[:URI], tensorboard[:DIR] "
                                       "or wandb[:PROJECT].\n")
    assert np.any([p.name.startswith("events.out") for p in (tmp_path / "tb").iterdir()])


def test_a_run_without_trackers_imports_none_of_them(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from benchmark.cli import main; "
            f"rc = main({[*RUN, '--out', str(tmp_path)]!r}); "
            "loaded = sorted({'mlflow', 'wandb', 'tensorboard', 'dvc'} & {m.split('.')[0] for m in sys.modules}); "
            "print(rc, loaded)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stdout + done.stderr
