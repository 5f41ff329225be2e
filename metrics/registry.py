"""The metric registry: every number cmcbench reports, collected from the files that declare them.

Each metric is declared once, in its own file's `SPECS` list (a `metrics.spec.MetricInfo`: its columns and
their types, label, direction, kind, needs, which resolved state of the run says whether it is available, its
default `compare` tolerance, its functions), beside its feature space where it has one; the registry imports
every such file of this package, so a new metric is one new file. The runner, the schema, the summary, plots,
leaderboard, bootstrap, compare and report read the registry.
"""

from __future__ import annotations

import pathlib
import pkgutil

from metrics.psnr import PSNR_CAP_DB  # noqa: F401 - re-exported
from metrics.spec import KINDS, PER_IMAGE_KINDS, FeatureSpace, MetricInfo, Option, Stage  # noqa: F401 - re-exported
from metrics.suggest import did_you_mean

TEXT_COLUMN = "caption"  # the row column in which a text-transmitting codec reports the text it sent


METRICS: dict[str, MetricInfo] = {}
SPACES: dict[str, FeatureSpace] = {}
STAGES: dict[str, Stage] = {}
OPTIONS: dict[str, Option] = {}  # by flag
# cmcbench's first metric files, in the order their metrics have always had: the row schema and config.json of
# earlier runs keep it. Every later file follows them by name; nothing needs to be added here.
FIRST_FILES = ("rate", "psnr", "msssim", "lpips", "dists", "clip", "iqa", "ipd", "inception_score", "fid", "kid",
               "patches", "dinov2", "caption")


def _collect() -> frozenset[str]:
    """Add the entries of every metric file (a module of this package with a module-level `SPECS` list): the first
    files in their order, then the others by name; a file is imported only if its source assigns SPECS. Returns
    the names of the first files' metrics."""
    import importlib

    folder = pathlib.Path(__file__).parent
    later = sorted(m.name for m in pkgutil.iter_modules([str(folder)]) if m.name not in FIRST_FILES)
    first = frozenset()
    for module in (*FIRST_FILES, *later):
        if "\nSPECS = [" in (folder / f"{module}.py").read_text():
            for entry in importlib.import_module(f"metrics.{module}").SPECS:
                what, name, table = (("feature space", entry.name, SPACES) if isinstance(entry, FeatureSpace)
                                     else ("stage", entry.name, STAGES) if isinstance(entry, Stage)
                                     else ("option", entry.flag, OPTIONS) if isinstance(entry, Option)
                                     else ("metric", entry.column, METRICS))
                if name in table:
                    raise ValueError(f"metrics/{module}.py declares the {what} {name!r} again.")
                table[name] = entry
        if module == FIRST_FILES[-1]:
            first = frozenset(METRICS)
    return first


def capped(name: str, values):
    """Per-image values as they enter an average: clipped at the metric's cap, if it has one."""
    import numpy as np

    info = METRICS.get(name)
    return values if info is None or info.cap is None else np.minimum(values, info.cap)


def get(name: str) -> MetricInfo:
    """The registry entry of `name`; an unknown name is an error, never a guess."""
    info = METRICS.get(name)
    if info is None:
        close = did_you_mean(name, [*METRICS, *groups()])
        raise ValueError(f"Unknown metric {name!r}; {close}known metrics: {', '.join(METRICS)}.")
    return info


def measured(name: str) -> MetricInfo:
    """A metric asked for against rate (--metric): a known name, and not the rate itself."""
    info = get(name)
    if info.kind == "rate":
        raise ValueError(f"--metric {name}: {name} is the rate, every curve's x axis; --metric names what is measured "
                         f"against it ({', '.join(quality_metrics()[:3])}, ...).")
    return info


def expand(name: str) -> list[str]:
    """The metrics `name` asks for: itself, or every metric of the group it names (`--add-metric zeroshot`)."""
    members = [m.column for m in METRICS.values() if m.group and m.group == name and name not in METRICS]
    return members or [get(name).column]


def groups() -> list[str]:
    return list(dict.fromkeys(m.group for m in METRICS.values() if m.group))


def higher_is_better(metric: str) -> bool:
    return get(metric).higher_is_better


def quality_metrics() -> list[str]:
    """Every metric that is plotted against rate (all but bpp itself), in registry order."""
    return [m for m, info in METRICS.items() if info.kind != "rate"]


def of_kind(*kinds: str) -> list[MetricInfo]:
    return [m for m in METRICS.values() if m.kind in kinds]


def option_default(config: str):
    """The default of the configuration key a metric file's Option fills ('dinov2.k'): declared once, there."""
    return next(o.default for o in OPTIONS.values() if o.config == config)


def in_space(space: str) -> list[MetricInfo]:
    """The set metrics computed in one feature space, in registry order."""
    return [m for m in METRICS.values() if m.space == space]


# The first files' metrics, which every run's config.json lists (disabled ones too); a later file's metric is
# listed only when a run asks for it, so runs that do not read as they did before the file was added.
FIRST = _collect()
