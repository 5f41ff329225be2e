"""The run as one typed object: RunRecord reads config.json into dataclasses and writes back the same bytes, for
a run of this version and for one written before keys it types existed; the analysis layer reads runs through it."""

import dataclasses
import json
import pathlib
import re

from benchmark.codecs.codec_spec import parse_codec_spec
from benchmark.run import perceptual
from benchmark.run.dinov2_stage import DINOv2Options
from benchmark.run.perceptual import InceptionOptions
from benchmark.run.record import CodecRecord, DatasetRecord, RunRecord, read_record
from benchmark.run.runner import RunConfig, create_run
from metrics import defaults
from metrics.prdc import DEFAULT_K

ROOT = pathlib.Path(__file__).resolve().parent.parent
GOLDEN = pathlib.Path(__file__).parent / "golden" / "config_json.json"


def as_written(d: dict) -> bytes:
    """config.json's bytes as the run folder writes them (run_folder.write_config)."""
    return json.dumps(d, indent=2, sort_keys=True).encode()


def test_a_record_writes_back_the_bytes_of_the_config_json_it_read(tmp_path):
    config = RunConfig(dataset="sample:6", codecs=[parse_codec_spec("jpeg quality=30,70"),
                                                   parse_codec_spec("codecs_for_tests:Raw")],
                       inception={"enabled": False}, caption_embedder="none", add_metrics=["psnr_y"],
                       image_metrics={"ms_ssim": True, "lpips": "none"}, protocol="hific")
    run_dir = create_run(config, tmp_path / "results", "run", progress=False)
    written = (run_dir / "config.json").read_bytes()
    record = read_record(run_dir)
    assert as_written(record.to_json()) == written
    d = json.loads(written)
    assert (record.run_id, record.config_hash, record.git_sha) == (d["run_id"], d["config_hash"], d["git_sha"])
    assert record.dataset.name == d["dataset"]["name"] == "sample:6"
    assert record.dataset.n_images == d["dataset"]["n_images"] and record.dataset.preprocess == "none"
    assert record.dataset.rest["preprocess_description"] == d["dataset"]["preprocess_description"]
    assert [c.label for c in record.codecs] == ["jpeg", "raw"] and record.codec("jpeg").rate_parameter == "quality"
    assert record.codec("nothing") is None
    assert record.metric_state("psnr_y") == d["metrics"]["psnr_y"] and record.metric_state("psnr_y")["status"] == "ok"
    assert record.stage("image_metrics.ms_ssim") == d["image_metrics"]["ms_ssim"] and record.stage("dists") == {}
    assert record.rest["protocol"] == d["protocol"]  # a key the record does not type travels as written
    assert RunConfig.from_json(record.config).to_json() == d["config"]


def test_the_golden_config_json_and_a_run_from_before_later_keys_round_trip():
    golden = json.loads(GOLDEN.read_text())
    assert RunRecord.from_json(golden).to_json() == golden
    old = {"run_id": "r", "created": "2024-01-01T00:00:00+00:00", "config": {"dataset": "kodak"}, "versions": {},
           "dataset": {"name": "kodak", "split": "all", "n_images": 24, "fingerprint": "ab"},  # no preprocess
           "codecs": [{"label": "jpeg", "settings": [10]}], "inception": {"status": "ok"}}  # no git_*, no metrics
    record = RunRecord.from_json(old)
    assert record.to_json() == old and as_written(record.to_json()) == as_written(old)
    assert record.git_sha is None and record.metric_state("fid") == {} and record.dataset.preprocess is None
    assert record.codecs[0].exact_size and record.codecs[0].rate_parameter is None  # the defaults of their time
    assert "git_sha" not in record.to_json() and "preprocess" not in record.to_json()["dataset"]
    assert DatasetRecord(name="d", split="s", n_images=3).label == "d/s (3 images)"
    made = CodecRecord(label="x", settings=[1]).to_json()  # made here, not read: every typed key is written
    assert made["label"] == "x" and made["samples"] == 1 and CodecRecord.from_json(made).to_json() == made


def test_a_run_from_before_metric_states_and_the_schema_gets_them_derived_as_a_new_run_records_them(tmp_path):
    """A run created before the metric registry and the declared schema resumes: its metric states, caption
    metrics, codec columns and row schema are derived once, as a run of this version records them."""
    from benchmark.run.runner import read_run_info

    config = RunConfig(dataset="sample:3", codecs=[parse_codec_spec("jpeg quality=30,70")],
                       inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": True, "lpips": "none"})
    run_dir = create_run(config, tmp_path / "results", "run", progress=False)
    now = json.loads((run_dir / "config.json").read_text())
    old = json.loads(json.dumps(now))
    for key in ("metrics", "schema", "caption_metrics"):
        del old[key]
    del old["codecs"][0]["columns"]
    (run_dir / "config.json").write_text(json.dumps(old))
    record = read_run_info(run_dir)
    assert record.metric_state("ms_ssim")["status"] == "ok" and record.metric_state("fid")["status"] == "disabled"
    assert record.codecs[0].columns == now["codecs"][0]["columns"] and record.schema == now["schema"]
    assert record.to_json() == now


def test_the_analysis_layer_and_the_command_line_read_runs_through_the_record():
    """No module of benchmark/ reads config.json as a dict by key, the run layer's creation of it included: one
    typed object, one reader."""
    offenders = []
    for path in sorted((ROOT / "benchmark").rglob("*.py")):
        text = path.read_text()
        for pattern in (r"\bread_config\(", r"config\.json\"\)\.read_text\(\)", r"\binfo\[\""):
            offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert offenders == []


def test_a_runs_inception_and_dinov2_options_are_dataclasses_written_as_they_were_given():
    partial = RunConfig(inception={"enabled": False}, dinov2={"model": "auto"})
    assert isinstance(partial.inception, InceptionOptions) and isinstance(partial.dinov2, DINOv2Options)
    assert (partial.inception.isc_splits, partial.inception.device, partial.dinov2.k) == \
        (defaults.ISC_SPLITS, defaults.DEVICE, DEFAULT_K)  # what an option left out means, written once
    assert partial.to_json()["inception"] == {"enabled": False} and partial.to_json()["dinov2"] == {"model": "auto"}
    assert partial.hashed_part()["inception"]["isc_splits"] is None  # hashed as absent, as it always was
    assert RunConfig.from_json(partial.to_json()).hashed_part() == partial.hashed_part()
    assert dataclasses.replace(partial.inception, patch_fid=True).to_json() == {"enabled": False, "patch_fid": True}
    assert RunConfig().to_json()["inception"] == perceptual.DEFAULTS and len(perceptual.DEFAULTS) == 12
