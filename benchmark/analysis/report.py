"""A run's report: one self-contained HTML page (images inlined) and a Markdown version with its files.

It holds the R-D plots with bootstrap error bars, the leaderboard, the run's provenance, and a visual
comparison grid: for a few images, the original, each codec at the setting whose bpp on that image is
closest to a common target, and a generative codec's output with the caption it transmitted. Tiles are
native-resolution centre crops, so artefacts are seen as they are. Reconstructions come from the run
when it saved them (--save-reconstructions), else the codec is run again on those few images.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
import pathlib

import numpy as np
import pandas as pd
from PIL import Image

from benchmark.analysis import bootstrap
from benchmark.run import console
from benchmark.analysis import leaderboard
from benchmark.run.integrity import atomic_write_bytes
from benchmark.run.provenance import short_revision
from benchmark.run.record import RunRecord, read_record
from benchmark.run.results import output_path, read_rows, run_summary, safe_name
from metrics import registry

CROP = 320


def _png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def centre_crop(pixels: np.ndarray, size: int = CROP) -> np.ndarray:
    h, w = pixels.shape[:2]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return pixels[top:top + size, left:left + size]


TILE_METRICS = ("psnr", "ms_ssim", "lpips")  # printed under a grid tile, where the run has them
# What the grid is chosen and its tiles made and captioned with: a reader of a large run reads these columns alone
GRID_COLUMNS = ["codec", "setting_index", "setting_label", "rate_parameter", "image_id", "image_index", "status", "bpp",
                registry.TEXT_COLUMN, *TILE_METRICS]


def grid_choices(images: pd.DataFrame, n_images: int, target_bpp: float | None, anchor: str,
                 generative: set[str] = frozenset()) -> list[dict]:
    """Which image ids and which setting of each codec the grid shows (anchor first, generative codecs
    last), with their per-image numbers."""
    ok = images[images.status == "ok"]
    codecs = sorted(dict.fromkeys(ok.codec), key=lambda c: (c != anchor, c in generative, c))
    complete = ok.groupby("image_id").codec.nunique()
    ids = [i for i in ok.sort_values("image_index").image_id.drop_duplicates() if complete.get(i) == len(codecs)]
    out = []
    for image_id in ids[:n_images]:
        rows = ok[ok.image_id == image_id]
        target = target_bpp
        if target is None:  # the anchor's lowest rate on this image: where the codecs differ most
            anchor_rows = rows[rows.codec == anchor]
            target = float(anchor_rows.bpp.min()) if len(anchor_rows) else float(rows.bpp.median())
        tiles = []
        for codec in codecs:
            c = rows[rows.codec == codec]
            best = c.iloc[int(np.argmin(np.abs(np.log(c.bpp.to_numpy() / target))))]
            tiles.append(best)
        out.append({"image_id": image_id, "image_index": int(rows.image_index.iloc[0]), "target": target,
                    "tiles": tiles})
    return out


GRID_NOTE = (f"Centre crops (at most {CROP}x{CROP}) at native resolution. Each codec is shown at its setting whose bpp "
             "on that image is closest to the target; a codec that cannot reach the target (a caption codec far below "
             "it, or JPEG above it) shows its nearest rate, printed under the tile.")


NOTHING = "No setting has a successful row: nothing to table (the failures above say why)."
NO_GRID = "No image has a successful row in every codec: nothing to compare side by side."
ZOOM_NOTE = " One image pixel per CSS pixel, never scaled (click a tile to zoom 2x)."


class Reconstructor:
    """The original and a codec's reconstruction of an image: from the run's saved files, or by the runner's
    own Worker (same reading, preprocessing, codec setup and output check as the run)."""

    def __init__(self, run_dir: pathlib.Path, record: RunRecord):
        from benchmark.run.config import RunConfig
        from benchmark.run.worker import Worker

        dataset = RunConfig.from_json(record.config).open_dataset()
        self.run_dir = run_dir
        self.worker = Worker(record, dataset, "")

    def original(self, index: int) -> np.ndarray:
        _, pixels, error = self.worker.load(index)
        if pixels is None:
            raise RuntimeError(error)
        return pixels

    def reconstruction(self, row, original: np.ndarray) -> np.ndarray:
        """The saved file, else the run's own production: encode and decode, or a precomputed codec's file."""
        from benchmark.run.produce import produce

        saved = output_path(self.run_dir, row.codec, str(row.setting_label), row.image_id, ".png")
        if saved.exists():
            return np.asarray(Image.open(saved).convert("RGB"))
        encoder, decoder = self.worker.codec_pair(row.codec)
        setting = self.worker.specs[row.codec].settings[int(row.setting_index)]
        made = produce(encoder, decoder, original, setting, self.worker.dataset.records[int(row.image_index)], 0)
        if made.reconstruction is None:
            raise RuntimeError(made.columns.get("error") or "no reconstruction")
        return made.reconstruction


def grid_image(run_dir: str | pathlib.Path, n_images: int = 2, anchor: str = "jpeg") -> np.ndarray | None:
    """A small mosaic for trackers: one row per image (its original, then each codec at the setting closest
    to the anchor's lowest rate on it), centre crops side by side; None when no image succeeded in every codec.
    A tile that cannot be reproduced is left grey."""
    run_dir = pathlib.Path(run_dir)
    record = read_record(run_dir)
    images = read_rows(run_dir, columns=GRID_COLUMNS)
    if not len(images):
        return None
    generative = {c.label for c in record.codecs if not c.exact_size}
    grid = grid_choices(images, n_images, None, anchor, generative)
    if not grid:
        return None
    recon = Reconstructor(run_dir, record)
    rows = []
    for item in grid:
        original = recon.original(item["image_index"])
        tiles = [centre_crop(original)]
        for row in item["tiles"]:
            try:
                tiles.append(centre_crop(recon.reconstruction(row, original)))
            except Exception:  # noqa: BLE001 - one tile fails, the grid goes on
                tiles.append(np.full_like(tiles[0], 128))
        side = min(min(t.shape[0] for t in tiles), min(t.shape[1] for t in tiles))
        rows.append(np.concatenate([t[:side, :side] for t in tiles], axis=1))
    width = min(r.shape[1] for r in rows)
    return np.concatenate([r[:, :width] for r in rows], axis=0)


def _tile_caption(row, metrics: list[str]) -> str:
    parts = [f"{row.codec} {row.rate_parameter} {row.setting_label}", f"{row.bpp:.4g} bpp"]
    for m in metrics:
        value = getattr(row, m, None)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            parts.append(f"{m} {value:.4g}")
    return " · ".join(parts)


def build_report(run_dir: str | pathlib.Path, out_dir: str | pathlib.Path | None = None, n_images: int = 3,
                 target_bpp: float | None = None, resamples: int = bootstrap.DEFAULT_RESAMPLES,
                 seed: int = bootstrap.DEFAULT_SEED, anchor: str | None = None,
                 rates=leaderboard.DEFAULT_RATES, references=()) -> tuple[pathlib.Path, pathlib.Path]:
    """Write report.html (self-contained) and report.md (with files beside it); return their paths."""
    from benchmark.analysis.plots import metric_gaps, rd_plots, scored_rates

    run_dir = pathlib.Path(run_dir)
    out_dir = pathlib.Path(out_dir) if out_dir else run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    record = read_record(run_dir)
    images, summary = read_rows(run_dir, columns=GRID_COLUMNS), run_summary(run_dir)
    from benchmark.analysis.references import load_references

    stages = console.bar(total=4, desc="report: leaderboard and intervals", unit="stages")
    board = leaderboard.build([run_dir], anchor=anchor, rates=rates, resamples=resamples, seed=seed,
                              references=references)
    ci = bootstrap.intervals(run_dir, resamples, seed) if resamples > 0 else None
    stages.update()
    stages.set_description("report: plots")
    refs, _ = load_references(references, summary)
    plots = [p for p in rd_plots(leaderboard.with_references(summary, refs), out_dir / "plots", intervals=ci,
                                 formats=("png", "pdf"), no_interval=_no_bar(board), gaps=metric_gaps([run_dir]),
                                 scored=scored_rates([run_dir]))
             if p.suffix == ".png"]
    failures_html, failures_md = _failures(summary)
    tabled = not board.empty  # a run whose every row failed has nothing to table
    generative = {c.label for c in record.codecs if not c.exact_size}
    stages.update()
    stages.set_description("report: comparison grid")
    grid = grid_choices(images, n_images, target_bpp, board.anchor, generative)
    grid_text = GRID_NOTE if grid else "No comparison grid (--images 0)." if not n_images else NO_GRID
    try:  # the originals: a run read where its dataset is not (a copied results folder) has no grid, and says why
        recon = Reconstructor(run_dir, record) if grid else None
    except (OSError, ValueError, RuntimeError) as exc:
        grid, grid_text = [], f"No comparison grid: the run's dataset cannot be read here ({str(exc).rstrip('.')})."
    grid_dir = out_dir / "grid"
    grid_dir.mkdir(exist_ok=True)
    tile_metrics = [m for m in TILE_METRICS if m in images]

    html_grid, md_grid, written = [], [], set()
    stems = [safe_name(pathlib.PurePosixPath(item["image_id"]).stem or item["image_id"]) for item in grid]
    for item, stem in zip(grid, stems):
        original = recon.original(item["image_index"])
        if stems.count(stem) > 1:  # two images' tiles apart where their names are not (x.png and x.jpg, 猫 and 犬)
            stem = f"{stem}-{item['image_index']}"
        tiles = [(f"{stem}-original", f"original {item['image_id']} ({original.shape[1]}x{original.shape[0]})", "",
                  centre_crop(original))]
        for row in item["tiles"]:
            try:
                pixels = centre_crop(recon.reconstruction(row, original))
            except Exception as exc:  # noqa: BLE001 - one tile fails, the report goes on
                pixels, caption_text, why = None, "", f" · could not reproduce: {exc}"
            else:
                caption_text = getattr(row, "caption", "") if "caption" in images else ""
                caption_text, why = caption_text if isinstance(caption_text, str) else "", ""
            tiles.append((f"{stem}-{safe_name(row.codec)}-{safe_name(str(row.rate_parameter))}{safe_name(str(row.setting_label))}",
                          _tile_caption(row, tile_metrics) + why, caption_text, pixels))
        cells, md_cells = [], []
        for name, label, caption_text, pixels in tiles:
            file = grid_dir / f"{name}.png"
            img_html = "<div class='missing'>unavailable</div>"
            if pixels is not None:
                data = _png_bytes(pixels)
                file.write_bytes(data)
                written.add(file.name)
                img_html = (f"<img src='{_data_uri(data)}' width='{pixels.shape[1]}' height='{pixels.shape[0]}' "
                            f"alt='{html.escape(label)}' title='click to zoom 2x' onclick=\"this.classList.toggle('zoom')\">")
                md_cells.append(f"![{label}](grid/{file.name})<br>{label}" + (f"<br>*“{caption_text}”*" if caption_text else ""))
            else:  # the tile is named with its reason, not left out
                md_cells.append(f"*unavailable*<br>{label}")
            caption_html = f"<div class='caption'>“{html.escape(caption_text)}”</div>" if caption_text else ""
            cells.append(f"<figure>{img_html}<figcaption>{html.escape(label)}{caption_html}</figcaption></figure>")
        html_grid.append(f"<h3>{html.escape(item['image_id'])} — codecs at the setting closest to "
                         f"{item['target']:.3g} bpp on this image</h3><div class='grid'>{''.join(cells)}</div>")
        md_grid.append(f"#### {item['image_id']} (closest to {item['target']:.3g} bpp)\n\n"
                       + "| " + " | ".join(md_cells) + " |\n" + "|" + "---|" * len(md_cells) + "\n")
    for stale in set(p.name for p in grid_dir.glob("*.png")) - written:  # an earlier report's tiles, not this one's
        (grid_dir / stale).unlink()

    prov = _provenance(record)
    title = f"cmcbench report: {record.run_id}"
    plot_html = "".join(f"<figure class='plot'><img src='{_data_uri(p.read_bytes())}' alt='{p.stem}'></figure>"
                        for p in plots)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1500px; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.6em; }} h2 {{ border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }}
table {{ border-collapse: collapse; font-size: .85em; margin: .5em 0 1.2em; }}
th, td {{ border: 1px solid #ddd; padding: .25em .5em; text-align: left; }} th {{ background: #f4f4f4; }}
.plots {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(600px, 1fr)); gap: 1em; }}
.plot {{ margin: 0; }} .plot img {{ width: 100%; height: auto; }}
.grid {{ display: flex; flex-wrap: wrap; gap: .8em; align-items: flex-start; }}
.grid figure {{ margin: 0; max-width: {CROP}px; }}
.grid img {{ display: block; max-width: none; image-rendering: pixelated; cursor: zoom-in; }}
.grid img.zoom {{ zoom: 2; cursor: zoom-out; }}
figcaption {{ font-size: .8em; }} .caption {{ font-style: italic; color: #444; margin-top: .2em; }}
.missing {{ width: {CROP}px; height: {CROP // 2}px; background: #eee; }}
.failed {{ color: #a40000; }}
code {{ background: #f4f4f4; padding: 0 .2em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(prov['headline'])}</p>{''.join(f"<p class='failed'>{html.escape(n)}</p>" for n in _partial(board))}
<h2>Rate–quality curves</h2><p>{html.escape(_error_bars(board))}</p>
<div class="plots">{plot_html}</div>
{failures_html}
<h2>Leaderboard</h2>
{leaderboard.render(board, 'html', only=("at_rates", "bd")) if tabled else f"<p>{html.escape(NOTHING)}</p>"}
<h2>Visual comparison</h2>
<p>{html.escape(grid_text)}{ZOOM_NOTE if grid else ""}</p>
{''.join(html_grid)}
{leaderboard.render(board, 'html', only=("settings",), notes=False)}
<h2>Provenance</h2>
{prov['html']}
<p><small>Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC} by <code>bench.py report</code>.</small></p>
</body></html>"""
    stages.update()
    stages.set_description("report: writing")
    html_path = out_dir / "report.html"
    atomic_write_bytes(html_path, page.encode(), durable=False)
    md = [f"# {title}\n", prov["headline"] + "\n", *(f"**{n}**\n" for n in _partial(board)), "## Rate–quality curves\n",
          _error_bars(board) + "\n"]
    md += [f"![{p.stem}](plots/{p.name})\n" for p in plots]
    md += [failures_md, "## Leaderboard\n", leaderboard.render(board, "md", only=("at_rates", "bd")) if tabled
           else NOTHING + "\n", "## Visual comparison\n", grid_text + "\n", *md_grid,
           leaderboard.render(board, "md", only=("settings",), notes=False),
           "## Provenance\n", prov["md"]]
    md_path = out_dir / "report.md"
    atomic_write_bytes(md_path, "\n".join(md).encode(), durable=False)
    stages.update()
    stages.close()
    return html_path, md_path


def _partial(board: leaderboard.Leaderboard) -> list[str]:
    """One line naming the codecs whose numbers rest on fewer images than the dataset's, with their counts."""
    if not board.counts:
        return []
    return ["Resting on fewer images than the dataset holds: " + ", ".join(board.shown(c) for c in board.counts)
            + f" (n/N; the rest {'are not done yet or ' if board.unfinished else ''}failed, see Failures): their "
            "values are means over those images only."]


def _failures(summary: pd.DataFrame) -> tuple[str, str]:
    """Rows per codec and setting: how many succeeded and failed, and why; a setting whose every row failed is
    listed too, so nothing vanishes from the report."""
    if not len(summary) or "n_failed" not in summary:
        return "", ""
    total, n_ok = int(summary.n_failed.sum()), int(summary.n_ok.sum())
    head = "<h2>Failures</h2>"
    if not total:
        text = f"No failed rows: all {n_ok} rows ({len(summary)} codec settings) succeeded."
        return f"{head}<p>{html.escape(text)}</p>", f"## Failures\n\n{text}\n"
    failed_settings = summary[summary.n_ok == 0]
    intro = (f"{total} of {total + n_ok} rows failed, in {int((summary.n_failed > 0).sum())} of {len(summary)} codec "
             f"settings ({len(failed_settings)} with no successful row, so absent from the curves and tables). A failed "
             "row has no metric values and is left out of the means.")
    table = pd.DataFrame({"codec": summary.codec, "setting": summary.setting_label.astype(str),
                          "n_ok": summary.n_ok.astype(int), "n_failed": summary.n_failed.astype(int),
                          "reasons": summary.get("failure_reasons", pd.Series("", summary.index)).fillna("")})
    rows_html = "".join(
        f"<tr class='{'failed' if r.n_failed else 'ok'}'><td>{html.escape(str(r.codec))}</td><td>{html.escape(r.setting)}"
        f"</td><td>{r.n_ok}</td><td>{r.n_failed}</td><td>{html.escape(r.reasons)}</td></tr>" for r in table.itertuples())
    table_html = ("<table><thead><tr><th>codec</th><th>setting</th><th>n_ok</th><th>n_failed</th><th>reasons</th></tr>"
                  f"</thead><tbody>{rows_html}</tbody></table>")
    return (f"{head}<p>{html.escape(intro)}</p>{table_html}",
            f"## Failures\n\n{intro}\n\n{table.to_markdown(index=False)}\n")


def _no_bar(board) -> dict[str, str]:
    """Per metric, why some of its points have no interval (the plots say it beside the bars they lack)."""
    notes = board.settings[board.settings.interval_note.fillna("") != ""] if len(board.settings) else board.settings
    return {m: "; ".join(sorted(set(n))) for m, n in notes.groupby("metric").interval_note} if len(notes) else {}


def _error_bars(board) -> str:
    """What the plots' bars are, and why a point has none (a missing bar is not a zero spread)."""
    bars = next((n.removeprefix("Intervals: ") for n in board.notes if n.startswith("Intervals")), "none (no bootstrap).")
    missing = sorted(set(board.settings.get("interval_note", [])) - {""})
    return f"Error bars: {bars}" + (f" A point without a bar has no interval: {'; '.join(missing)}." if missing else "")


def _provenance(record: RunRecord) -> dict:
    d = record.dataset
    headline = (f"Dataset {d.name} ({d.split}, {d.n_images} images, preprocessing {d.preprocess}); "
                f"run {record.run_id} created {record.created}, git {short_revision(record.git_sha)}, "
                f"config hash {str(record.config_hash)[:12]}.")
    rows = [("dataset", f"{d.name} / {d.split} / {d.n_images} images / fingerprint {d.fingerprint[:16]}"),
            ("preprocessing", f"{d.preprocess}: {d.rest.get('preprocess_description', '')}"),
            ("Inception", _stage(record.inception, "weights_sha256")),
            *[(name, _stage(state, _identity(state))) for name, state in (
                ("DINOv2", record.dinov2),
                *[(f"pyiqa {k}", v) for k, v in record.iqa.items() if k != "cmc_bench_overall"],
                *[(s.label or s.name, record.stage(s.record)) for s in registry.STAGES.values()])
              if state.get("status") not in (None, "disabled")],
            ("caption embedder", str(record.caption_embedder.get("model") or "none"))]
    for c in record.codecs:
        side = c.side_information or {}
        rows.append((f"codec {c.label}", f"{c.target} {c.options} · {c.rate_parameter} "
                                         f"{c.settings} · versions {c.versions}"
                     + (f" · side information {side}" if side else "")))
    rows.append(("packages", ", ".join(f"{k} {v}" for k, v in sorted(record.versions.items()))))
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    md = "| | |\n|---|---|\n" + "".join(f"| {k} | {str(v).replace('|', '/')} |\n" for k, v in rows)
    return {"headline": headline, "html": f"<table>{table}</table>", "md": md}


def _identity(stage: dict) -> str:
    """What names what a stage ran: its weights' sha256 where recorded, else its implementation or model."""
    return next((key for key in ("weights_sha256", "backbone_sha256", "implementation") if key in stage), "model")


def _stage(stage: dict, key: str) -> str:
    if not stage:
        return "not recorded"
    if stage.get("status") != "ok":
        return f"{stage.get('status')}: {stage.get('reason', '')}"
    return f"ok ({key.replace('_', ' ')} {str(stage.get(key))[:16]})"
