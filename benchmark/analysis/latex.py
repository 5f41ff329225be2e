"""Leaderboard tables as LaTeX that pastes into a paper: booktabs rules, short column headers with the full
names in the caption, tables no wider than the text (scaled down only when they would not fit), and the
every-setting table as `longtable`s of a few metrics each, so it breaks across pages instead of running off one.

Needs, in the preamble: \\usepackage{booktabs,graphicx,longtable} (the file says so in its first line).
"""

from __future__ import annotations

import math

import pandas as pd

from benchmark.analysis.table_format import NO_INTERVAL, format_value, short_label
from metrics.registry import METRICS

PREAMBLE = ("% cmcbench leaderboard. Needs \\usepackage{booktabs} (rules), \\usepackage{graphicx} (\\resizebox) and "
            "\\usepackage{longtable} (the every-setting table).\n% Paste the tables, or \\input{leaderboard.tex}.\n")
SETTINGS_METRICS_PER_TABLE = 3  # metric columns per longtable of the every-setting table (plus codec, setting, bpp)
NOTE_WIDTH = "5.5cm"
# Wider than the text only if need be: \resizebox to \linewidth when the natural width exceeds it.
FIT_OPEN = "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"

_ESCAPES = (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"), ("#", "\\#"), ("$", "\\$"),
            ("{", "\\{"), ("}", "\\}"), ("^", "\\^{}"), ("~", "\\~{}"))
_SYMBOLS = (("↑", "$\\uparrow$"), ("↓", "$\\downarrow$"), ("†", "\\dag{}"), ("‡", "\\ddag{}"), ("–", "--"),
            ("—", "---"), ("²", "$^2$"), ("≥", "$\\geq$"), ("≤", "$\\leq$"), ("×", "$\\times$"), ("±", "$\\pm$"))


def escape(text) -> str:
    """Plain text to LaTeX, including the few symbols the tables use (pdflatex-safe)."""
    text = str(text)
    for a, b in _ESCAPES:
        text = text.replace(a, b)
    for a, b in _SYMBOLS:
        text = text.replace(a, b)
    return text


def stacked_cell(cell) -> str:
    """(value, low, high, metric[, mark]) as the value over its interval in small type; '--' when there is none."""
    if not isinstance(cell, tuple):
        return escape(cell) if isinstance(cell, str) else "--"
    value, low, high, metric, *mark = cell  # mark: the leaderboard's sign for a value without an interval
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "--"
    main = format_value(value, metric) + escape("".join(mark))
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return main
    return (f"\\begin{{tabular}}[t]{{@{{}}r@{{}}}}{main}\\\\[-2pt]{{\\tiny[{format_value(low, metric)}, "
            f"{format_value(high, metric)}]}}\\end{{tabular}}")


def legend(columns) -> str:
    """Full names of the short headers, for the caption."""
    parts = []
    for metric, info in METRICS.items():
        if metric != "bpp" and short_label(metric) in columns and (info.short or metric) != info.label:
            parts.append(f"{escape(info.short or metric)}: {escape(info.label)}")
    return ("; ".join(parts) + ". $\\uparrow$ higher is better, $\\downarrow$ lower is better.") if parts else ""


def _tabular(table: pd.DataFrame, spec: str) -> str:
    head = " & ".join(f"\\textbf{{{escape(c)}}}" for c in table.columns) + " \\\\\n"
    body = "".join(" & ".join(stacked_cell(v) for v in row) + " \\\\\n" for row in table.itertuples(index=False))
    return f"\\begin{{tabular}}{{{spec}}}\n\\toprule\n{head}\\midrule\n{body}\\bottomrule\n\\end{{tabular}}"


def _float(title: str, caption_extra: str, tabular: str, label: str) -> str:
    caption = escape(title) + (f". {caption_extra}" if caption_extra else "")
    return (f"% {title}\n\\begin{{table}}[t]\n\\centering\n\\caption{{{caption}}}\n\\label{{tab:cmcbench-{label}}}\n"
            f"\\small\n{FIT_OPEN}{tabular}}}\n\\end{{table}}\n")


def _longtables(table: pd.DataFrame, title: str, rests_on: str = "") -> list[str]:
    """The every-setting table in chunks of a few metrics, each a longtable (breaks across pages)."""
    fixed = [c for c in ("codec", "setting", "bpp") if c in table.columns]
    metrics = [c for c in table.columns if c not in fixed]
    chunks = [metrics[i:i + SETTINGS_METRICS_PER_TABLE] for i in range(0, len(metrics), SETTINGS_METRICS_PER_TABLE)]
    out = []
    for k, chunk in enumerate(chunks or [[]]):
        part = table[fixed + chunk]
        spec = "ll" + "r" * (len(part.columns) - 2)
        head = " & ".join(f"\\textbf{{{escape(c)}}}" for c in part.columns) + " \\\\"
        caption = escape(title) + (f" (part {k + 1} of {len(chunks)})" if len(chunks) > 1 else "")
        extra = legend(part.columns) + rests_on
        body = "".join(" & ".join(stacked_cell(v) for v in row) + " \\\\\n" for row in part.itertuples(index=False))
        out.append(f"% {title}, part {k + 1}\n{{\\small\\setlength{{\\tabcolsep}}{{4pt}}\n"
                   f"\\begin{{longtable}}{{{spec}}}\n\\caption{{{caption}. {extra}}}\\\\\n\\toprule\n{head}\n\\midrule\n"
                   f"\\endfirsthead\n\\toprule\n{head}\n\\midrule\n\\endhead\n\\bottomrule\n\\endfoot\n{body}"
                   f"\\end{{longtable}}}}\n")
    return out


def render_tex(board, tables: dict[str, pd.DataFrame], titles: dict[str, str], only: tuple, notes: bool) -> str:
    out = [PREAMBLE]
    # what must not be read without the numbers (a run not finished, a metric a run lacks or some images could not
    # score, why a value has no interval), then what every number rests on ('Measured on kodak, 24 images.'), in
    # each caption: the comments do not print
    caveats = [n for n in board.notes if n.startswith(("Warning:", NO_INTERVAL)) or n.startswith("Run ")
               and " has no " in n]
    rests_on = "".join(" " + escape(n) for n in [*caveats, *(n for n in board.notes if n.startswith("Measured on"))])
    for key in only:
        table = tables.get(key)
        if table is None or table.empty:
            continue
        title = titles[key] + (f" ({board.anchor})" if key == "bd" else "")
        if key == "at_rates":
            cells = " Cells: value over its bootstrap interval;" if board.resamples else " Cells: value;"
            out.append(_float(title, legend(table.metric.tolist()) + cells + " -- outside the codec's range."
                              + rests_on,
                              _tabular(table, "ll" + "r" * (len(table.columns) - 2)), "at-rates"))
        elif key == "bd":
            spec = f"llrrp{{{NOTE_WIDTH}}}"
            marked = table[["BD-rate (%)", "BD-metric"]].apply(lambda c: c.str.contains("†")).to_numpy().any()
            out.append(_float(title, legend(table.metric.tolist()) + (" \\dag{} BD over too little overlap (see the "
                                                                      "notes)." if marked else "")
                              + rests_on, _tabular(table, spec), "bd"))
        else:
            out += _longtables(table, title, rests_on)
    if notes and board.notes:
        out.append("\n".join(f"% {n}" for n in board.notes) + "\n")
    return "\n".join(out)
