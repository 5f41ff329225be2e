"""Rate-distortion curves: every summary metric against bpp, one line per codec, markers at settings.

Figures are made for papers: a codec keeps one colour and marker in every plot and every run (keyed by its
name; a relabelled or rate-matched variant keeps its codec's, with a line style of its own), the legend prints
display names and says how many images a curve rests on where that is fewer than the dataset's, the title
names the dataset and how many images were evaluated, intervals are vertical bars only (a bpp interval
drawn sideways turns crossing curves into a hairball), the legend sits outside the data, and each figure
is written as PNG (for screens) and SVG and PDF (for papers).
"""

from __future__ import annotations

import hashlib
import io
import pathlib
import textwrap
from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmark.analysis.references import fewest_images
from benchmark.run import results
from benchmark.run.integrity import atomic_write_bytes
from benchmark.run.provenance import short_revision
from benchmark.run.results import images_of, per_image_gaps
from metrics import registry
from metrics.registry import METRICS

FORMATS = ("png", "svg", "pdf")
# Built-in codecs: Okabe and Ito's colour-blind-safe hues, far apart (AVIF and JPEG 2000 were two neighbouring
# oranges, CMC a third), one marker each, so that grey-scale print tells them apart by marker.
CODEC_STYLES = {"jpeg": ("#0072b2", "o"), "jpeg2000": ("#e69f00", "s"), "webp": ("#009e73", "^"),
                "avif": ("#cc79a7", "D"), "jpegxl": ("#56b4e9", "v"), "cmc": ("#000000", "P"),
                "jpeg2000-psnr": ("#949494", "X")}
DISPLAY_NAMES = {"jpeg": "JPEG", "jpeg2000": "JPEG 2000", "webp": "WebP", "avif": "AVIF", "jpegxl": "JPEG XL",
                 "cmc": "CMC", "jpeg2000-psnr": "JPEG 2000 (PSNR)"}
# A relabelled or rate-matched variant of a codec keeps its colour and marker and takes one of these (by its
# label's hash); solid is the codec itself, dashed a published curve.
VARIANT_LINES = (":", "-.", (0, (8, 2, 1, 2)), (0, (3, 1, 1, 1, 1, 1)))
# A codec in several runs plotted together: its colour and marker, and one line style per run (not dashed: that
# marks a published curve).
RUN_LINES = ("-", ":", "-.", (0, (8, 2, 1, 2)), (0, (3, 1, 1, 1, 1, 1)))
# Any other label: a colour and marker chosen by a hash of its name, never one of the built-ins' colours.
OTHER_COLOURS = ("#d55e00", "#ece133", "#fbafe4", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#a6761d",
                 "#17becf", "#bcbd22", "#8c564b", "#393b79", "#843c39", "#637939")
OTHER_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p")
PUBLISHED = " [published]"
LOG_X_SPAN = 10.0  # log bpp axis when the largest rate is at least 10x the smallest (Kodak's JPEG sweep: 15x)


@dataclass(frozen=True)
class PlotStyle:
    """How a figure looks. `paper`: a single column of a two-column paper (3.5 in wide, 8 pt type, legend under
    the axes, the title only the dataset and its image count, the metric's direction as an arrow on its axis,
    fonts embedded in the PDF as TrueType); `title` replaces the generated one ('' for none); `size`
    is (width, height) in inches and `font_size` in points, each overriding the style's."""

    paper: bool = False
    title: str | None = None
    size: tuple[float, float] | None = None
    font_size: float | None = None

    def __post_init__(self):
        if self.font_size is not None and not 0 < self.font_size <= 100:  # 0 or -2 drew specks of text, unreadable
            raise ValueError(f"--font-size {self.font_size:g}: a text size in points lies in (0, 100], e.g. 8.")

    @property
    def figsize(self) -> tuple[float, float]:
        return self.size or ((3.5, 3.2) if self.paper else (8.4, 4.6))

    @property
    def points(self) -> float:
        return self.font_size or (8.0 if self.paper else 10.0)

    def rc(self) -> dict:
        """matplotlib settings: every text at the style's size; TrueType (42) fonts, embedded, in PDF and PS."""
        size = self.points
        return {"font.size": size, "axes.titlesize": size + (0 if self.paper else 1), "axes.labelsize": size,
                "xtick.labelsize": size - 1, "ytick.labelsize": size - 1, "legend.fontsize": size - (1 if self.paper
                                                                                                    else 0),
                "legend.title_fontsize": size - (1 if self.paper else 0), "pdf.fonttype": 42, "ps.fonttype": 42,
                "lines.linewidth": 1.2 if self.paper else 1.6, "lines.markersize": 4 if self.paper else 6}


def codec_style(label: str) -> tuple[str, str]:
    """The colour and marker of a codec label, the same in every plot and run. A published curve takes the
    colour of the codec it reports (drawn dashed, open markers)."""
    name = label[:-len(PUBLISHED)] if label.endswith(PUBLISHED) else label
    if name in CODEC_STYLES or name.removesuffix("@bpp") in CODEC_STYLES:  # rate-matched: the codec's, as a run's
        return CODEC_STYLES[name.removesuffix("@bpp")]
    digest = _digest(name)
    return OTHER_COLOURS[digest % len(OTHER_COLOURS)], OTHER_MARKERS[(digest // len(OTHER_COLOURS)) % len(OTHER_MARKERS)]


def _digest(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")


def variant_style(label: str, target: str | None = None) -> tuple[str, str, object]:
    """(colour, marker, line style) of a curve: a relabelled (label=) or rate-matched (bpp=) run of a built-in
    codec keeps that codec's colour and marker, with a line style of its own; anything else is solid."""
    name = label[:-len(PUBLISHED)] if label.endswith(PUBLISHED) else label
    if target in CODEC_STYLES and name != target:
        return (*CODEC_STYLES[target], VARIANT_LINES[_digest(name) % len(VARIANT_LINES)])
    return (*codec_style(label), "-")


def curve_style(curve: pd.DataFrame, runs: list[str]) -> tuple[str, str, object]:
    """(colour, marker, line style) of one curve of a summary (a codec's rows). When several `runs` share the
    figure, a codec that is in more than one of them keeps its own colour and marker in each, and the line style
    says which run it is (in the order the runs were given; the first solid). A variant of a built-in codec keeps
    the line style that tells it from its codec."""
    label, target = curve["codec"].iloc[0], _target(curve)
    in_run = curve["codec_in_run"].iloc[0] if "codec_in_run" in curve else label
    in_run = in_run if isinstance(in_run, str) else label  # a run's rows beside published ones (the report's)
    run = curve["run_dir"].iloc[0] if "run_dir" in curve else None
    own = variant_style(in_run, target)
    if len(runs) > 1 and in_run != label and run in runs and own[2] == "-":  # its label names its run
        return (*own[:2], RUN_LINES[runs.index(run) % len(RUN_LINES)])
    return variant_style(label, target)


def display_name(label: str, target: str | None = None) -> str:
    """The name a paper prints: JPEG 2000 for jpeg2000, 'JPEG @ bpp' for rate-matched JPEG; a label the user
    chose (label=) as given."""
    name, suffix = (label[:-len(PUBLISHED)], PUBLISHED) if label.endswith(PUBLISHED) else (label, "")
    if name in DISPLAY_NAMES:
        return DISPLAY_NAMES[name] + suffix
    matched = target if target in DISPLAY_NAMES else name.removesuffix("@bpp")  # a published curve has no target
    if matched in DISPLAY_NAMES and name == f"{matched}@bpp":
        return f"{DISPLAY_NAMES[matched]} @ bpp" + suffix
    for base in (target, *DISPLAY_NAMES):  # a codec of several runs, labelled with its run: 'JPEG (run-b)'
        if base in DISPLAY_NAMES and name.startswith(base + " ("):
            return DISPLAY_NAMES[base] + name[len(base):] + suffix
    return label


def images_behind(curve: pd.DataFrame, n_dataset: int | None) -> int | None:
    """The fewest images any setting of a curve rests on, where that is fewer than the dataset's; else None."""
    if not n_dataset or "n_ok" not in curve or not curve["n_ok"].notna().any():
        return None
    n = int(images_of(curve, "n_ok").min())
    return n if n < n_dataset else None


def plottable_metrics(summary: pd.DataFrame) -> list[str]:
    return [m for m in registry.quality_metrics() if m in summary.columns and summary[m].notna().any()
            and pd.api.types.is_numeric_dtype(summary[m])]


def dataset_title(summary: pd.DataFrame) -> str:
    """'kodak, 24 images' / 'sample (test), 16 images': the dataset's short name and the images evaluated."""
    from benchmark.data.datasets import short_name

    if "dataset" not in summary:
        return ""
    parts = []
    for name, group in summary.groupby(summary["dataset"].astype(str), sort=False):  # in the order the runs came
        split = group["split"].dropna().astype(str).iloc[0] if "split" in group and group["split"].notna().any() else ""
        counts = sorted({int(n) for n in images_of(group, "n_images").dropna()}) if "n_images" in group else []
        shown = short_name(name) + (f" ({split})" if split and split != "all" else "")
        if counts:  # runs of one dataset on other image sets (--limit) say each count, never just the largest
            said = counts[0] if len(counts) == 1 else ", ".join(map(str, counts[:-1])) + f" or {counts[-1]}"
            shown += f", {said} image{'' if counts == [1] else 's'}"
        parts.append(shown)
    return "; ".join(parts)


def use_log_x(bpp: pd.Series) -> bool:
    positive = bpp[bpp > 0]
    return bool(len(positive)) and positive.max() / positive.min() >= LOG_X_SPAN


def rd_plots(summary: pd.DataFrame, out_dir: str | pathlib.Path, log_x: bool | None = None,
             metrics: list[str] | None = None, formats=FORMATS,
             intervals: pd.DataFrame | None = None, style: PlotStyle = PlotStyle(),
             no_interval: dict[str, str] | None = None, gaps: dict[str, str] | None = None,
             scored: pd.DataFrame | None = None) -> list[pathlib.Path]:
    """One figure per metric; `intervals` (benchmark.analysis.bootstrap.intervals) adds the metric's bootstrap interval
    as a vertical bar at each setting, and `no_interval` (metric -> why) says in the legend why some points have
    none (a missing bar is not a zero spread); `gaps` (metric_gaps) says there which rows the metric could not score,
    so a mean over fewer images is not read as one over all, and `scored` (scored_rates) puts such a metric's
    points at the bpp of those images; `style` sizes it for a screen or a paper."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.lines import Line2D

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    data = summary[summary["bpp"].notna()].sort_values(["codec", "bpp"])
    if log_x is None:
        log_x = use_log_x(data["bpp"])
    title_data = dataset_title(data)
    runs = list(dict.fromkeys(summary["run_dir"].dropna())) if "run_dir" in summary else []  # in the order given
    sns.set_theme(style="whitegrid", context="paper" if style.paper else "notebook", rc=style.rc())
    for metric in metrics or plottable_metrics(data):
        info = METRICS.get(metric)
        sub = data[data[metric].notna() & (data[metric] != float("inf"))]
        if sub.empty:
            continue
        at_scored = False
        if scored is not None and len(scored) and metric in set(scored.metric):
            sub, at_scored = _at_scored_rates(sub, scored[scored.metric == metric])
        fig, ax = plt.subplots(figsize=style.figsize, layout="constrained" if style.paper else None)
        published = sub["published"].fillna(False).astype(bool) if "published" in sub else pd.Series(False, sub.index)
        partial = False
        for codec, curve in sub.groupby("codec", sort=False):
            target = _target(curve)
            colour, marker, line = curve_style(curve, runs)
            curve = curve.sort_values("bpp")
            is_published = bool(published[curve.index].all())
            # N is the curve's own run's: runs of other image sets share a figure with --allow-mixed
            n_dataset = int(images_of(curve, "n_images").max()) if "n_images" in curve and \
                curve["n_images"].notna().any() else None
            if is_published:  # a cmcbench export says what its points rest on; other published curves do not
                behind = fewest_images(curve)
                n, n_dataset = behind if behind is not None else (None, None)
            else:
                n = images_behind(curve, n_dataset)
            label = display_name(codec, target) + (f" ({n}/{n_dataset})" if n is not None else "")
            partial |= n is not None
            ax.plot(curve.bpp, curve[metric], color=colour, marker=marker,
                    linestyle="--" if is_published else line, markerfacecolor="none" if is_published else colour,
                    label=label, zorder=3)
        if intervals is not None and len(intervals):
            _error_bars(ax, sub, intervals, metric, runs)
        if "rate_n_matched" in sub:  # rate-matched settings that missed their target for some images
            missed = sub[sub.rate_n_matched.notna() & (sub.rate_n_matched < sub.n_ok)]
            if len(missed):
                ax.scatter(missed.bpp, missed[metric], s=150, facecolors="none", edgecolors="crimson", linewidths=1.2,
                           label="rate target missed\n(at achieved bpp)", zorder=5)
        _rate_axis(ax, log_x)
        label = info.label if info else metric
        better = "" if info is None else (" (higher is better)" if info.higher_is_better else " (lower is better)")
        arrow = "" if info is None else (" ↑" if info.higher_is_better else " ↓")
        ax.set_ylabel(label + (arrow if style.paper else ""))
        # A paper's caption names the figure; its title keeps only the dataset and how many images it rests on.
        generated = title_data if style.paper else f"{label} vs rate{better}" + (f"\n{title_data}" if title_data else "")
        title = style.title if style.title is not None else generated
        if title:
            ax.set_title(title)
        handles, labels = ax.get_legend_handles_labels()
        if intervals is not None and (no_interval or {}).get(metric):
            handles.append(Line2D([], [], linestyle="none"))
            labels.append(textwrap.fill(f"no bar: no interval ({no_interval[metric]})", 44 if style.paper else 30))
        if (gaps or {}).get(metric):
            handles.append(Line2D([], [], linestyle="none"))
            labels.append(textwrap.fill(f"note: {gaps[metric]}" + ("; each point at the bpp of the images it is over"
                                                                 if at_scored else ""), 44 if style.paper else 30))
        if style.paper:  # under the axes, as wide as they are: the column has no room beside them
            fig.legend(handles, labels, title="n/N: images a curve rests on, of N" if partial else None,
                       loc="outside lower center", ncol=2, frameon=False, handlelength=2.4, columnspacing=1.0)
            fig.draw_without_rendering()  # the constrained layout, done once
        else:
            ax.legend(handles, labels, title="codec" + ("\n(n/N: images a curve\nrests on, of N)" if partial else ""),
                      loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
            fig.tight_layout()
        # The tight box, laid out once for every format (bbox_inches="tight" draws each figure twice per file).
        box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(plt.rcParams["savefig.pad_inches"])
        for fmt in formats:
            path = out_dir / f"rd_{metric}.{fmt}"
            buffer = io.BytesIO()  # written whole, then renamed: a full disk leaves no truncated figure
            fig.savefig(buffer, format=fmt, dpi=300 if style.paper else 150, bbox_inches=box)
            atomic_write_bytes(path, buffer.getvalue(), durable=False)
            written.append(path)
        plt.close(fig)
    return written


def scored_rates(run_dirs: list) -> pd.DataFrame:
    """results.scored_rates of these runs (with run_dir): where a metric with per-image gaps draws its points."""
    frames = [results.scored_rates(r).assign(run_dir=str(r)) for r in run_dirs]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _at_scored_rates(curves: pd.DataFrame, scored: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """The settings of `curves` (one metric's) at their bpp over the images the metric scored, where `scored` has
    it; whether any moved. A summary of several runs names each setting's run and codec in it (`codec_in_run`)."""
    runs = curves["run_dir"] if "run_dir" in curves else pd.Series(scored.run_dir.iloc[0], curves.index)
    codecs = curves["codec_in_run"] if "codec_in_run" in curves else curves["codec"]
    rate = dict(zip(zip(scored.run_dir, scored.codec, scored.setting_index), scored.bpp))
    moved = [rate.get((str(r), c, s)) for r, c, s in zip(runs, codecs, curves["setting_index"])]
    found = pd.Series(moved, curves.index, dtype=float)
    return curves.assign(bpp=found.fillna(curves["bpp"])), bool(found.notna().any())


def metric_gaps(run_dirs: list) -> dict[str, str]:
    """metric -> the rows of these runs it could not score and why (results.per_image_gaps), for a figure's legend;
    each run named where there are several."""
    out: dict[str, str] = {}
    for run_dir in run_dirs:
        for metric, gap in per_image_gaps(run_dir).items():
            said = gap if len(run_dirs) == 1 else f"{pathlib.Path(run_dir).name}: {gap}"
            out[metric] = f"{out[metric]}; {said}" if metric in out else said
    return out


def _target(curve: pd.DataFrame) -> str | None:
    target = curve["codec_target"].iloc[0] if "codec_target" in curve else None
    return target if isinstance(target, str) else None


def _rate_axis(ax, log_x: bool) -> None:
    """bpp on the x axis; on a log axis, minor ticks at 2..9 and plain numbers (0.05, 0.1, 0.2, 0.5, 1, 2), or
    only the powers of ten where three labels a decade would not fit the axes (about 2.5 labels an inch)."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_xlabel("bits per pixel (bpp)" + (", log scale" if log_x else ""))
    if not log_x:
        return
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    decades = math.log10(high / low) if low > 0 and high > low else 1.0
    inches = ax.get_position().width * ax.figure.get_figwidth()
    fits = 3 * decades <= 2.5 * inches
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if fits else (1.0,)))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
    plain = FuncFormatter(lambda v, _: f"{v:.6g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.grid(True, which="minor", axis="x", linewidth=0.4, alpha=0.5)


def _error_bars(ax, sub: pd.DataFrame, intervals: pd.DataFrame, metric: str, runs: list[str]) -> None:
    """The metric's bootstrap interval at each setting, as a light vertical bar in the codec's colour."""
    ci = intervals[intervals.metric == metric].set_index(["codec", "setting_index"])
    colours = {codec: curve_style(curve, runs)[0] for codec, curve in sub.groupby("codec", sort=False)}
    for row in sub.itertuples():
        key = (row.codec, row.setting_index)
        if key not in ci.index:
            continue
        low, high = ci.loc[key, "low"], ci.loc[key, "high"]
        if isinstance(low, pd.Series):
            low, high = low.iloc[0], high.iloc[0]
        if pd.isna(low) or pd.isna(high):
            continue
        y = getattr(row, metric)
        ax.errorbar([row.bpp], [y], yerr=[[max(y - low, 0)], [max(high - y, 0)]], fmt="none",
                    ecolor=colours[row.codec], elinewidth=1.0,
                    capsize=3, alpha=0.55, zorder=2)


def history_plots(table: pd.DataFrame, anchor: str, out_dir: str | pathlib.Path, formats=FORMATS) -> list[pathlib.Path]:
    """One figure per metric of a history (benchmark.analysis.history): each codec's BD-rate against the anchor
    at each run, in commit order, with its interval; a commit whose change counts is ringed (red: worse, green:
    better). The title says how many images the numbers rest on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.lines import Line2D

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid", context="notebook")
    runs = list(dict.fromkeys(table.run_dir))  # a run's folder: copies of one run keep their run id
    firsts = table.drop_duplicates("run_dir")
    ticks = [f"{short_revision(c, 7)}\n{d[:10]}" for c, d in zip(firsts.commit, firsts.date)]
    written = []
    for metric, rows in table.groupby("metric", sort=False):
        fig, ax = plt.subplots(figsize=(min(max(6.0, 0.45 * len(runs) + 3), 16.0), 4.2))
        for codec, curve in rows.groupby("codec", sort=False):
            colour = variant_style(codec)[0]
            x = np.array([runs.index(r) for r in curve.run_dir])
            y = curve.bd_rate.to_numpy(float)
            low, high = curve.bd_rate_low.to_numpy(float), curve.bd_rate_high.to_numpy(float)
            ax.plot(x, y, color=colour, marker="o", label=codec, zorder=3)
            has = np.isfinite(low) & np.isfinite(high)
            ax.errorbar(x[has], y[has], yerr=[np.maximum(y - low, 0)[has], np.maximum(high - y, 0)[has]], fmt="none",
                        ecolor=colour, elinewidth=1.0, capsize=3, alpha=0.55, zorder=2)
            for change, edge in (("worse", "crimson"), ("better", "forestgreen")):
                hit = (curve.change == change).to_numpy()
                if hit.any():
                    ax.scatter(x[hit], y[hit], s=180, facecolors="none", edgecolors=edge, linewidths=1.6, zorder=4,
                               label=f"{change} than the run before")
        ax.axhline(0, color="0.4", linewidth=0.8)
        every = max(1, -(-len(runs) // 30))  # at most about 30 commit labels; marked commits always labelled
        marked = {runs.index(r) for r in rows[rows.change.isin(["worse", "better"])].run_dir}
        shown = sorted(set(range(0, len(runs), every)) | marked)
        ax.set_xticks(shown, [ticks[k] for k in shown], fontsize=7, rotation=90 if len(shown) > 12 else 0)
        info = METRICS.get(metric)
        n = rows.n_images.dropna()
        images = f"{int(n.min())} images" if len(n) and n.min() == n.max() else \
            (f"{int(n.min())}-{int(n.max())} images" if len(n) else "no images")
        # wrapped to the figure: a few runs make a narrow one, whose long labels would be cut at its edges
        ax.set_ylabel(textwrap.fill(f"BD-rate % ({info.label if info else metric}); lower is better", 32))
        width = int(fig.get_figwidth() * 8)
        counted = f"{len(runs)} run{'s' if len(runs) != 1 else ''}"
        ax.set_title("\n".join([textwrap.fill(f"{info.label if info else metric}: BD-rate against {anchor}", width),
                                textwrap.fill(f"{images} per point, {counted} in commit order", width)]),
                     fontsize=10)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        absent = int(rows.bd_rate.isna().sum())
        if absent:  # a missing point is not an invisible zero: say so, and where the reasons are
            unique[textwrap.fill(f"{absent} missing point(s): no BD-rate (why: history.csv, missing_note)",
                                 30)] = Line2D([], [], linestyle="none")
        ax.legend(unique.values(), unique.keys(), loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        fig.tight_layout()
        for fmt in formats:
            path = out_dir / f"history_{metric}.{fmt}"
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, dpi=150)
            atomic_write_bytes(path, buffer.getvalue(), durable=False)
            written.append(path)
        plt.close(fig)
    return written
