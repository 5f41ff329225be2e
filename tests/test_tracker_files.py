"""metrics.json and rd.csv: the numbers of the summary, keyed so that `dvc metrics diff` names what moved."""

import json
import math
import os
import shutil
import subprocess

import pandas as pd
import pytest

from benchmark.analysis import tracker_files
from benchmark.analysis.curves import Curve, compare_curves
from benchmark.cli import main
from benchmark.codecs.codec_spec import parse_codec_spec
from benchmark.run.record import RunRecord
from benchmark.run.results import load_run
from benchmark.run.runner import RunConfig, create_run, execute


def _run(root, name, webp_qualities):
    config = RunConfig(dataset="sample:6", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"},
                       codecs=[parse_codec_spec("jpeg quality=20,40,60"),
                               parse_codec_spec(f"webp quality={webp_qualities}")])
    run_dir = create_run(config, root, name, progress=False)
    execute(run_dir, jobs=1, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def two_runs(hermetic_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return _run(root, "a", "20,40,60"), _run(root, "b", "25,40,60")


def test_metrics_json_and_rd_csv_hold_the_summary(two_runs, tmp_path):
    run_dir = two_runs[0]
    assert main(["export", str(run_dir), str(tmp_path), "--format", "metrics"]) == 0
    doc = json.loads((tmp_path / "metrics.json").read_text())
    _, summary = load_run(run_dir)
    assert (doc["dataset"], doc["split"], doc["n_images"]) == ("sample:6", "test", 2)
    for row in summary.itertuples():
        key = f"{row.codec}/quality={row.setting_label}"
        assert doc[f"psnr@{key}"] == row.psnr and doc[f"bpp@{key}"] == row.bpp and doc[f"n_ok@{key}"] == row.n_ok
    curve = {c: Curve.from_points(c, "psnr", r.bpp, r.psnr) for c, r in summary.groupby("codec")}
    assert doc["bd_rate/psnr/webp@jpeg"] == compare_curves(curve["jpeg"], curve["webp"])["bd_rate"]
    assert (doc["bd_anchor"], doc["bd_method"]) == ("jpeg", "akima") and "unavailable" not in doc
    rd = pd.read_csv(tmp_path / "rd.csv")
    assert list(rd.columns[:6]) == ["codec", "setting", "rate_parameter", "n_ok", "n_failed", "bpp"]
    merged = rd.merge(summary.assign(setting=summary.setting_label.astype(int)), on=["codec", "setting"])
    assert len(merged) == len(summary) == 6
    assert (merged.psnr_x == merged.psnr_y).all() and (merged.bpp_x == merged.bpp_y).all()  # exact round trip


def test_an_unavailable_value_is_listed_never_written_as_a_number():
    info = {"run_id": "r", "dataset": {"name": "d", "split": "test", "n_images": 3}, "codecs": [
        {"label": "jpeg", "rate_parameter": "quality"}, {"label": "x", "rate_parameter": "level"}]}
    summary = pd.DataFrame({"codec": ["jpeg", "jpeg", "x", "x"], "setting_label": ["10", "50", "1", "2"],
                            "n_ok": [3, 3, 0, 3], "n_failed": [0, 0, 3, 0], "bpp": [0.2, 0.8, math.nan, 0.5],
                            "psnr": [28.0, 33.0, math.nan, 31.0]})
    doc = tracker_files.flat_metrics(RunRecord.from_json(info), summary)
    assert "psnr@x/level=1" not in doc and doc["unavailable"]["psnr@x/level=1"]
    assert "bd_rate/psnr/x@jpeg" not in doc
    assert doc["unavailable"]["bd_rate/psnr/x@jpeg"] == "fewer than 2 points on a curve"
    json.dumps(doc, allow_nan=False)  # strict JSON: no NaN anywhere


def test_dvc_metrics_diff_between_two_commits_shows_the_changed_numbers(two_runs, tmp_path):
    dvc = shutil.which("dvc")
    assert dvc, "dvc is a test dependency (pip install -e '.[test]')"
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def sh(*args):
        return subprocess.run(args, cwd=tmp_path, env=env, check=True, capture_output=True, text=True).stdout

    sh("git", "init", "-q")
    sh(dvc, "init", "-q")
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - eval/metrics.json\nplots:\n  - eval/rd.csv:\n      x: bpp\n"
                                       "      y: psnr\n")
    docs = []
    for run_dir in two_runs:
        assert main(["export", str(run_dir), str(tmp_path / "eval"), "--format", "metrics"]) == 0
        docs.append(json.loads((tmp_path / "eval" / "metrics.json").read_text()))
        sh("git", "add", "-A")
        sh("git", "commit", "-qm", run_dir.name)
    diff = json.loads(sh(dvc, "metrics", "diff", "HEAD~1", "HEAD", "--json"))["eval/metrics.json"]
    old, new = docs
    key = "bd_rate/psnr/webp@jpeg"
    assert diff[key]["old"] == old[key] and diff[key]["new"] == new[key] and old[key] != new[key]
    assert diff[key]["diff"] == pytest.approx(new[key] - old[key])
    assert diff["bpp@webp/quality=25"] == {"old": None, "new": new["bpp@webp/quality=25"]}  # the moved setting
    assert "psnr@jpeg/quality=40" not in diff  # unchanged numbers are not in the diff
    plots = json.loads(sh(dvc, "plots", "diff", "HEAD~1", "HEAD", "--json", "--split"))
    assert "eval/rd.csv" in json.dumps(plots)
