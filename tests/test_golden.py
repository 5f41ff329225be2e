"""Golden snapshots of what a user sees and what a run in progress depends on: the command line (every
subcommand, flag, default and choice), the hashed configuration and its config hash, config.json's shape,
the summary's columns, and the names of the files a run and its caches write.

A refactoring must leave them unchanged, or old runs would stop resuming and scripts would break. A change
made on purpose regenerates them with `CMCBENCH_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py` and the
diff of tests/golden/ shows, in review, exactly what users will see change.
"""

import argparse
import json
import os
import pathlib
import re

import pytest

from benchmark import cli
from benchmark.run import provenance
from benchmark.codecs.codec_spec import parse_codec_spec
from benchmark.run.results import load_run
from benchmark.run.runner import RunConfig, create_run, execute

GOLDEN = pathlib.Path(__file__).parent / "golden"
UPDATE = os.environ.get("CMCBENCH_UPDATE_GOLDEN") == "1"
# Everything a network metric could make depend on this machine's caches and downloads is off.
NO_NETWORKS = dict(inception={"enabled": False}, caption_embedder="none",
                   image_metrics={"ms_ssim": True, "lpips": "none"})


def check(name: str, value) -> None:
    """`value` equals the stored snapshot `name` (written instead when CMCBENCH_UPDATE_GOLDEN=1)."""
    path = GOLDEN / f"{name}.json"
    text = json.dumps(value, indent=1, sort_keys=True, default=str) + "\n"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"no snapshot {path}: run with CMCBENCH_UPDATE_GOLDEN=1 once"
    assert json.loads(text) == json.loads(path.read_text()), f"{name} changed; if on purpose, regenerate it"


def parser_snapshot(parser: argparse.ArgumentParser) -> dict:
    """Every argument of a parser and, recursively, of its subcommands: flags, destination, default, choices,
    how many values, whether required, and the name of the function that converts it."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out["<subcommands>"] = {name: parser_snapshot(sub) for name, sub in sorted(action.choices.items())}
            continue
        if isinstance(action, argparse._HelpAction):
            continue
        out[",".join(action.option_strings) or action.dest] = {
            "dest": action.dest, "default": action.default, "choices": sorted(map(str, action.choices))
            if action.choices else None, "nargs": action.nargs, "required": action.required,
            "action": type(action).__name__, "type": getattr(action.type, "__name__", None)}
    return out


def test_command_line():
    check("command_line", parser_snapshot(cli.build_parser()))


def test_hashed_configuration_and_config_hash():
    """The part of the configuration that is hashed, and the hash, for the defaults and for many options set:
    a run created before a change must keep its config hash after it, or --resume refuses it."""
    default = RunConfig(codecs=[parse_codec_spec("jpeg"), parse_codec_spec("webp quality=30,70")])
    many = RunConfig(dataset="kodak", split="all", preprocess="resize-256", limit=8,
                     codecs=[parse_codec_spec("jpeg bpp=0.25,0.5"), parse_codec_spec("cmc text_codec=context"),
                             parse_codec_spec("avif quality=20,60 label=a")],
                     inception={"enabled": True, "patch_fid": True, "isc_splits": 5},
                     image_metrics={"ms_ssim": False, "lpips": "auto", "dists": "auto", "clip": "auto"},
                     dinov2={"model": "auto", "k": 3}, iqa=["niqe", "topiq_nr"], add_metrics=["psnr_y"],
                     protocol="hific", caption_embedder="none")
    check("hashed_configuration", {name: {"hashed": c.hashed_part(), "config_hash": provenance.config_hash(
        c.hashed_part())} for name, c in (("default", default), ("many_options", many))})


def _normalised(info: dict) -> dict:
    """config.json with what depends on the machine, the clock or the checkout replaced by its kind."""
    info = json.loads(json.dumps(info))
    for key in ("created", "git_sha", "git_date", "run_id"):
        info[key] = f"<{key}>"
    info["versions"] = sorted(info["versions"])
    for codec in info["codecs"]:
        codec["versions"] = sorted(codec.get("versions", {}))
    return info


def test_config_json_summary_columns_and_file_names(tmp_path):
    config = RunConfig(dataset="sample:6", codecs=[parse_codec_spec("jpeg quality=30,70"),
                                                   parse_codec_spec("webp quality=50")],
                       save_reconstructions=True, save_bitstreams=True, **NO_NETWORKS)
    run_dir = create_run(config, tmp_path / "results", "golden", progress=False)
    execute(run_dir, jobs=1, progress=False)
    info = json.loads((run_dir / "config.json").read_text())
    check("config_json", _normalised(info))
    _, summary = load_run(run_dir)
    check("summary_columns", list(summary.columns))
    names = sorted(re.sub(r"[0-9a-f]{64}", "<sha256>", str(p.relative_to(run_dir))) for p in run_dir.rglob("*")
                   if p.is_file())
    check("run_files", names)


def test_feature_and_cache_names(tmp_path, random_inception_weights):
    """The Inception stage's stored features and the originals' cache: their folder and file names and the
    arrays a feature file holds (a later version must find what an earlier run left)."""
    import numpy as np

    inception = {"enabled": True, "weights": str(random_inception_weights), "device": "cpu", "batch_size": 4,
                 "isc_splits": 2, "kid_subsets": 4, "kid_subset_size": 2, "seed": 2020, "patch_fid": False}
    config = RunConfig(dataset="sample:6", codecs=[parse_codec_spec("jpeg quality=30,70")], inception=inception,
                       caption_embedder="none", image_metrics={"ms_ssim": False, "lpips": "none"})
    run_dir = create_run(config, tmp_path / "results", "run", progress=False)
    execute(run_dir, jobs=1, progress=False)
    root = tmp_path / "results"
    stored = [p for p in (root / ".cache").rglob("*") if p.is_file()] + \
        [p for p in (run_dir / "features").rglob("*") if p.is_file()]
    names = {re.sub(r"[0-9a-f]{64}", "<sha256>", re.sub(r"/[0-9a-f]{2}/", "/<xx>/", re.sub(
        r"compat-[0-9a-f]{16}", "compat-<weights sha256>", str(p.relative_to(root))))) for p in stored}
    arrays = {}
    for path in sorted((run_dir / "features").rglob("*.npz")):
        with np.load(path) as z:
            arrays[str(path.relative_to(run_dir))] = sorted(z.files)
    check("feature_files", {"files": sorted(set(names)), "arrays": arrays})


@pytest.mark.skipif(not UPDATE, reason="only when regenerating the snapshots")
def test_snapshots_were_regenerated():
    assert GOLDEN.is_dir()
