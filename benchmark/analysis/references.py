"""Published R-D curves in and out: CompressAI's results JSON and a long CSV, read as summary rows that
tables and plots treat like a codec of a run (drawn dashed, marked published, never given intervals);
and a run exported as one CompressAI JSON per codec.

CompressAI's format: {"name", "description", "meta"?, "results": {"bpp": [...], "psnr-rgb": [...],
"ms-ssim-rgb": [...], ...}}, one list entry per rate point. The long CSV has columns codec, bpp, metric,
value and optionally dataset and source, one row per (point, metric).
"""

from __future__ import annotations

import csv
import json
import math
import pathlib

import pandas as pd

from metrics import registry

# Names other tools use for registry metrics; anything else that is not a metric is skipped with a warning.
ALIASES = {"psnr-rgb": "psnr", "psnr_rgb": "psnr", "ms-ssim": "ms_ssim", "ms-ssim-rgb": "ms_ssim",
           "ms_ssim_rgb": "ms_ssim", "msssim": "ms_ssim", "psnr-y": "psnr_y", "is": "inception_score",
           "lpips-alex": "lpips", "fid256": "patch_fid", "patch-fid": "patch_fid"}
NOT_METRICS = {"encoding_time", "decoding_time", "encode_s", "decode_s"}
EXPORT_NAMES = {"psnr": "psnr-rgb", "ms_ssim": "ms-ssim-rgb"}  # CompressAI's own keys


def metric_name(name: str) -> str | None:
    """The registry name for a published metric name, or None when it is not one."""
    key = name.strip().lower()
    key = ALIASES.get(key, key.replace("-", "_"))
    return key if key in registry.METRICS else None


def _frame(codec: str, points: list[dict], source: str, dataset: str | None, path: str,
           meta: dict | None = None) -> pd.DataFrame:
    """Summary-like rows of one curve; what its file says it was measured on (`meta`: a cmcbench export's image
    count and preprocessing) travels with them."""
    meta = meta or {}
    n = meta.get("n_images")
    rows = []
    for k, point in enumerate(sorted(points, key=lambda p: p["bpp"])):
        rows.append({"codec": codec, "setting_index": k, "setting_label": f"p{k}", "published": True,
                     "source": source, "reference_dataset": dataset or "", "reference_file": path, "n_ok": math.nan,
                     "n_failed": 0, "reference_n_images": float(n) if isinstance(n, (int, float)) else math.nan,
                     "reference_preprocess": str(meta.get("preprocess") or ""), **point})
    return pd.DataFrame(rows)


def load_reference(path: str | pathlib.Path) -> tuple[pd.DataFrame, list[str]]:
    """(summary-like rows of every curve in the file, warnings)."""
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Reference file {path} does not exist.")
    if path.suffix.lower() == ".json":
        return _load_compressai(path)
    if path.suffix.lower() == ".csv":
        return _load_csv(path)
    raise ValueError(f"Reference {path}: use a CompressAI results .json or a long .csv (codec, bpp, metric, value).")


def _load_compressai(path: pathlib.Path) -> tuple[pd.DataFrame, list[str]]:
    try:
        data = json.loads(path.read_text())
        results = data["results"]
        bpp = [float(v) for v in results["bpp"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"Reference {path} is not a CompressAI results file (needs 'results' with a 'bpp' list): "
                         f"{exc}") from None
    warnings, columns = [], {}
    for key, values in results.items():
        if key == "bpp" or key in NOT_METRICS:
            continue
        name = metric_name(key)
        if name is None:
            warnings.append(f"reference {path.name}: skipped {key!r}, not a metric cmcbench knows")
            continue
        if len(values) != len(bpp):
            raise ValueError(f"Reference {path}: {key!r} has {len(values)} values for {len(bpp)} bpp points.")
        columns[name] = [math.nan if v is None else float(v) for v in values]
    meta = data.get("meta") or {}
    name = str(data.get("name") or path.stem)
    source = str(meta.get("source") or data.get("description") or path.name)
    points = [{"bpp": b, **{m: v[k] for m, v in columns.items()}} for k, b in enumerate(bpp)]
    n_ok = meta.get("n_ok")  # a cmcbench export's images behind each point
    if isinstance(n_ok, list) and len(n_ok) == len(points) and all(isinstance(n, (int, float)) for n in n_ok):
        points = [{**p, "n_ok": float(n)} for p, n in zip(points, n_ok)]
    settings = meta.get("settings")  # a cmcbench export's setting labels, in the order of its points
    if isinstance(settings, list) and len(settings) == len(points):
        points = [{**p, "setting_label": str(label)} for p, label in zip(points, settings)]
    return _frame(name, points, source, meta.get("dataset"), str(path), meta), warnings


def _load_csv(path: pathlib.Path) -> tuple[pd.DataFrame, list[str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"codec", "bpp", "metric", "value"}
    if not rows or not need <= set(rows[0]):
        raise ValueError(f"Reference {path} needs columns codec, bpp, metric, value (optional: dataset, source).")
    warnings, curves = [], {}
    for row in rows:
        name = metric_name(row["metric"])
        if name is None:
            if row["metric"] not in NOT_METRICS:
                warnings.append(f"reference {path.name}: skipped metric {row['metric']!r}, not one cmcbench knows")
            continue
        try:
            bpp, value = float(row["bpp"]), float(row["value"])
        except ValueError:
            raise ValueError(f"Reference {path}: bpp and value must be numbers, got {row}.") from None
        curve = curves.setdefault(row["codec"], {"points": {}, "dataset": row.get("dataset") or None,
                                                 "source": row.get("source") or path.name})
        curve["points"].setdefault(bpp, {"bpp": bpp})[name] = value
    frames = [_frame(codec, list(c["points"].values()), c["source"], c["dataset"], str(path))
              for codec, c in curves.items()]
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), list(dict.fromkeys(warnings))


def fewest_images(curve: pd.DataFrame) -> tuple[int, int] | None:
    """(the fewest images a published curve's points rest on, the images it was measured on), where its file says
    so (a cmcbench export's `n_ok` and `n_images`) and the first is fewer; else None."""
    if "n_ok" not in curve or not curve["n_ok"].notna().all() or not curve["reference_n_images"].notna().any():
        return None
    n, total = int(curve["n_ok"].min()), int(curve["reference_n_images"].max())
    return (n, total) if n < total else None


def load_references(paths, runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Every reference file's rows, and warnings (skipped names; a curve whose file says it was measured on another
    dataset, another number of images or other preprocessing than the runs' summary rows `runs`)."""
    from benchmark.run.results import images_of

    run_datasets = sorted(set(runs["dataset"].dropna().astype(str))) if "dataset" in runs else []
    counts = {int(n) for n in images_of(runs, "n_images").dropna()} if "n_images" in runs else set()
    preprocessing = set(runs["preprocess"].dropna().astype(str)) if "preprocess" in runs else set()
    frames, warnings = [], []
    names = {d.lower() for d in run_datasets} | {pathlib.Path(d).name.lower() for d in run_datasets}
    for path in paths or []:
        frame, notes = load_reference(path)
        warnings += notes
        for codec, curve in frame.groupby("codec", sort=False):
            dataset, n, prep = curve[["reference_dataset", "reference_n_images", "reference_preprocess"]].iloc[0]
            if not dataset:
                warnings.append(f"published curve {codec!r} ({pathlib.Path(path).name}) declares no dataset: "
                                "make sure it was measured on the same images and preprocessing")
            elif dataset.lower() not in names:
                warnings.append(f"published curve {codec!r} is on dataset {dataset!r}, the run on "
                                f"{', '.join(run_datasets)}: not the same images")
            elif counts and pd.notna(n) and int(n) not in counts:
                warnings.append(f"published curve {codec!r} rests on {int(n)} images of {dataset!r}, the run on "
                                f"{' or '.join(map(str, sorted(counts)))}: not the same images")
            behind = fewest_images(curve)
            if behind is not None:
                warnings.append(f"published curve {codec!r} rests on {behind[0]} of its {behind[1]} images at some "
                                "setting (the others failed where it was measured): its values, and its BD, are over "
                                "those images only")
            if preprocessing and prep and prep not in preprocessing:
                warnings.append(f"published curve {codec!r} was measured with preprocessing {prep!r}, the run with "
                                f"{' or '.join(sorted(preprocessing))}: not the same pixels")
        frames.append(frame)
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), warnings


def _left_out(run_dir: pathlib.Path, summary: pd.DataFrame) -> dict[str, str]:
    """Metrics an export leaves out, and why: those some scored rows have no value of (MS-SSIM on images under
    161 px), whose means rest on fewer images than the one bpp per setting the format holds."""
    from benchmark.run.results import per_image_gaps

    return {m: f"{gap}, and the format has one bpp per setting, over every image"
            for m, gap in per_image_gaps(run_dir).items() if m in summary and summary[m].notna().any()}


def export_compressai(run_dir: str | pathlib.Path, out_dir: str | pathlib.Path) -> list[pathlib.Path]:
    """One CompressAI results JSON per codec of a run: mean bpp and metrics per setting, in the run's order
    of rates, with meta (dataset, preprocessing, versions, run id, and the metrics left out and why)."""
    from benchmark.run.record import CodecRecord, read_record
    from benchmark.run.results import load_summary, safe_name

    run_dir, out_dir = pathlib.Path(run_dir), pathlib.Path(out_dir)
    record = read_record(run_dir)
    summary = load_summary(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    left_out = _left_out(run_dir, summary)
    metrics = [m for m in registry.quality_metrics() if m in summary and summary[m].notna().any() and m not in left_out]
    for codec, rows in summary.groupby("codec", sort=False):
        rows = rows[rows.bpp.notna()].sort_values("bpp")
        if rows.empty:
            continue
        results = {"bpp": [float(v) for v in rows.bpp]}
        for m in metrics:
            if rows[m].notna().any():
                results[EXPORT_NAMES.get(m, m.replace("_", "-"))] = [None if pd.isna(v) else float(v) for v in rows[m]]
        c, d = record.codec(codec) or CodecRecord(target=codec), record.dataset
        doc = {"name": codec,
               "description": f"cmcbench run {record.run_id}: {c.target} {c.options} on {d.name} ({d.split}, "
                              f"{d.n_images} images)",
               "meta": {"dataset": d.name, "split": d.split, "n_images": d.n_images, "preprocess": d.preprocess,
                        "run_id": record.run_id, "git_sha": record.git_sha, "codec_versions": c.versions,
                        "versions": record.versions, "settings": [str(v) for v in rows.setting_label],
                        "n_ok": [int(v) for v in rows.n_ok], "source": f"cmcbench {record.run_id}",
                        **({"left_out": left_out} if left_out else {})},
               "results": results}
        path = out_dir / f"{safe_name(codec)}.json"
        path.write_text(json.dumps(doc, indent=2))
        written.append(path)
    return written
