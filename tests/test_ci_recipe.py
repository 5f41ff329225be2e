"""docs/ci/cmcbench.yml: the workflow's own shell steps, run here as GitHub Actions would run them.

The dataset comes from a server on 127.0.0.1 (the docs' Kodak stand-in), `cmcbench` is the installed command,
and $GITHUB_STEP_SUMMARY is a file the test reads: the same model passes, a decoder that adds noise fails the
job and the summary says so.
"""

import io
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import yaml
from PIL import Image

from benchmark.data import named_datasets
from test_named_datasets import FakeServer

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "docs" / "ci" / "cmcbench.yml"


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:64, 0:96]
    base = np.stack([128 + 90 * np.sin(x / (5 + seed % 5) + c) * np.cos(y / (7 + c)) for c in range(3)], -1)
    buf = io.BytesIO()
    Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_the_workflow_passes_the_same_model_and_fails_a_regression_with_a_summary(tmp_path):
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = {s.get("name"): s for s in workflow["jobs"]["benchmark"]["steps"]}
    assert {"Install", "Benchmark", "Compare with the baseline"} <= set(steps)
    assert set(workflow["env"]) == {"CMCBENCH", "DATASET", "CODEC", "BASELINE"}
    server = FakeServer()
    for k in range(1, 25):
        server.files[f"/kodak/kodim{k:02d}.png"] = _png(100 + k)
    summary = tmp_path / "summary.md"
    work = tmp_path / "repo"
    work.mkdir()
    env = {**os.environ, **workflow["env"], named_datasets.ENV_MIRROR: server.url, "HOME": str(tmp_path / "home"),
           "GITHUB_STEP_SUMMARY": str(summary), "PYTHONPATH": str(ROOT / "tests"),
           "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop(named_datasets.ENV_ROOT, None)

    def step(name: str, codec: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-e", "-c", steps[name]["run"]], cwd=work, env={**env, "CODEC": codec},
                              capture_output=True, text=True)

    try:
        model = "jpeg quality=20,50,80 label=mymodel"
        assert step("Benchmark", model).returncode == 0
        (work / "benchmarks").mkdir()
        shutil.move(work / "ci-results" / "new", work / "benchmarks" / "baseline")  # committed once
        same = [step("Benchmark", model), step("Compare with the baseline", model)]
        assert [p.returncode for p in same] == [0, 0], same[-1].stdout + same[-1].stderr
        text = summary.read_text()
        assert text.startswith(f"## cmcbench: {model} on kodak against benchmarks/baseline") and \
            "No significant regression." in text and "curve comparisons" in text
        shutil.rmtree(work / "ci-results")
        summary.unlink()
        noisy = "codecs_for_tests:NoisyJPEG quality=20,50,80 sigma=4 label=mymodel"
        worse = [step("Benchmark", noisy), step("Compare with the baseline", noisy)]
        assert [p.returncode for p in worse] == [0, 4], worse[-1].stdout + worse[-1].stderr
        text = summary.read_text()
        assert "**Regression**" in text and "REGRESSION: NEW is worse than BASE" in text and "psnr (mymodel" in text
    finally:
        server.close()
