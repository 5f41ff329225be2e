"""A model's quality across commits: runs of one dataset and protocol, ordered by the commit that produced
them, each codec's BD-rate against a fixed anchor with its interval, and the commits where a change counts.

The commit of a run is the one of the code under test: the git revision and commit date a codec defined
outside cmcbench records in its versions (`source_git_sha`, `source_git_date`), else cmcbench's own
(`git_sha`, `git_date`), else the run's creation time. The anchor is a run (the same codec in the anchor
run: how far the model moved since then; default the oldest run) or a codec (jpeg in the same run: where
the model stands against a fixed codec). A commit is marked where its curve differs from the previous
run's under `compare`'s rule (beyond the tolerance plus the curve-fit error, with a paired bootstrap
interval that excludes zero), so moving along one's own curve is not a change. Only summaries and stored
per-image values are read (features too when a set metric such as FID is asked for).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import pathlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmark.analysis import bootstrap, compare
from benchmark.analysis.curves import BD_METHODS
from benchmark.analysis.table_format import NO_INTERVAL, run_names
from benchmark.run import provenance
from benchmark.run.integrity import DamagedFile
from benchmark.run.provenance import short_revision
from benchmark.run.record import RunRecord, read_record
from metrics import defaults, registry
from metrics.suggest import did_you_mean


@dataclass
class HistoryOptions:
    anchor_run: str | None = None  # a run folder or run id; default the oldest run shown (after `since`)
    anchor_codec: str | None = None  # a codec label in every run instead of an anchor run
    codecs: list[str] = field(default_factory=list)  # only these codec labels (default: all)
    metrics: list[str] = field(default_factory=lambda: ["psnr"])
    since: str | None = None  # YYYY-MM-DD or a commit sha prefix: runs from then on
    resamples: int = defaults.BOOTSTRAP_RESAMPLES
    seed: int = defaults.BOOTSTRAP_SEED
    level: float = defaults.BOOTSTRAP_LEVEL
    bd_method: str = "akima"
    tolerances: dict = field(default_factory=lambda: dict(compare.DEFAULT_TOLERANCES))


@dataclass
class RunPoint:
    run_dir: pathlib.Path
    run_id: str
    commit: str  # the revision of the code under test ('unknown' outside git)
    date: str  # its commit date (ISO 8601), else the run's creation time
    record: RunRecord = field(repr=False, default_factory=RunRecord)
    damage: DamagedFile | None = None  # why its numbers cannot be read (a damaged shard, an out-of-date summary)
    summary: pd.DataFrame | None = field(repr=False, default=None)  # its summary, checked, when it can be read


@dataclass
class History:
    table: pd.DataFrame  # one row per (run, codec, metric)
    anchor: str  # what BD is against, in words
    notes: list[str] = field(default_factory=list)
    runs: int = 0  # the runs followed (a run whose every row failed has no row in `table`)


def find_runs(paths: list[str | pathlib.Path]) -> list[pathlib.Path]:
    """Run folders: each path a run (it holds config.json) or a folder of runs."""
    out = []
    for p in map(pathlib.Path, paths):
        if (p / "config.json").exists():
            out.append(p)
        elif p.is_dir():
            found = sorted(c for c in p.iterdir() if (c / "config.json").exists())
            if not found:
                raise FileNotFoundError(f"{p} holds no cmcbench run (no */config.json).")
            out += found
        else:
            raise FileNotFoundError(f"{p} is not a cmcbench run or a folder of runs.")
    return list(dict.fromkeys(out))


def commit_of(record: RunRecord, codecs: list[str] | None = None) -> tuple[str, str]:
    """(revision, date) of the code under test in a run (see the module's docstring)."""
    sources = [(c.versions.get("source_git_date") or "", c.versions["source_git_sha"])
               for c in record.codecs if isinstance(c.versions, dict) and "source_git_sha" in c.versions
               and (not codecs or c.label in codecs)]
    if sources:
        date, sha = max(sources)
        return sha, date or record.created
    sha = record.git_sha if record.has("git_sha") else "unknown"
    return sha, record.git_date or _commit_date(sha) or record.created


@functools.lru_cache(maxsize=None)
def _commit_date(sha: str) -> str | None:
    """A cmcbench commit's date from this checkout, for a run whose config.json predates `git_date` (ordered by
    its creation time otherwise, after runs of later commits)."""
    return provenance.git_date(provenance.PROJECT_ROOT, sha) if sha != "unknown" else None


def _is_date(since: str) -> bool:
    """--since YYYY-MM-DD, as against a commit sha prefix (hex digits, no dashes)."""
    return len(since) == 10 and since[4] == since[7] == "-"


def _when(text: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def ordered(run_dirs: list[pathlib.Path], codecs: list[str] | None = None) -> tuple[list[RunPoint], list[str]]:
    """The runs in commit order, each with its damage if its results cannot be read, and why each run whose
    config.json cannot be read (so that it has no place in the order) is left out."""
    from benchmark.run.results import load_summary

    points, left_out = [], []
    for run_dir in run_dirs:
        try:
            record = read_record(run_dir)
        except DamagedFile as exc:
            left_out.append(f"left out: {exc}")
            continue
        commit, date = commit_of(record, codecs)
        points.append(RunPoint(run_dir, record.run_id, commit, date, record))
        try:  # its shards and summary, checked as every reader checks them, once
            points[-1].summary = load_summary(run_dir)
        except DamagedFile as exc:
            points[-1].damage = exc
    ids = [p.run_id for p in points]
    names = run_names([p.run_dir for p in points if ids.count(p.run_id) > 1])
    for p in points:  # runs of one id in two folders (one --name in two checkouts) are told apart by their folders
        p.run_id = names.get(str(p.run_dir), p.run_id)
    return sorted(points, key=lambda p: (_when(p.date), _when(p.record.created), p.run_id)), left_out


def check_codecs(points: list[RunPoint], asked: list[str]) -> None:
    """Each codec label --codec or --anchor names is in at least one run; else one sentence, with a "did you
    mean" (a misspelt --codec followed nothing and said so only as a history of no runs)."""
    labels = list(dict.fromkeys(c.label for p in points for c in p.record.codecs))
    for label in asked:
        if label not in labels:
            close = did_you_mean(label, labels)
            raise ValueError(f"No run has a codec labelled {label!r}; {close}their codecs: {', '.join(labels)}.")


def check_same_protocol(points: list[RunPoint]) -> None:
    """One dataset, preprocessing and protocol, or one sentence naming the run that differs."""
    def key(p):
        return p.record.dataset.fingerprint, p.record.dataset.preprocess, p.record.config.get("protocol")

    first = points[0]
    for p in points[1:]:
        if key(p) != key(first):
            d, f = p.record.dataset, first.record.dataset
            raise ValueError(f"{p.run_dir} is of other data or protocol ({d.label}, preprocessing {d.preprocess}) "
                             f"than {first.run_dir} ({f.label}, preprocessing {f.preprocess}): a history follows "
                             "one dataset and protocol.")


def _only(sets: dict, metrics: list[str], codecs: list[str]) -> dict:
    """The settings of the chosen codecs, holding only bpp and the chosen metrics (so that resampling
    computes nothing else)."""
    keep = {"bpp", *metrics}
    out = {}
    for (codec, label), data in sets.items():
        if codecs and codec not in codecs:
            continue
        wanted = {"inception"} if keep & {"fid", "kid", "inception_score"} else set()
        wanted |= {space for space in registry.SPACES if any(m.column in keep for m in registry.in_space(space))}
        out[(codec, label)] = dataclasses.replace(
            data, per_image={k: v for k, v in data.per_image.items() if k in keep}, wanted=frozenset(wanted),
            sample_sets=[_only({(codec, label): s}, metrics, [])[(codec, label)] for s in data.sample_sets])
    return out


def _as_anchor(sets: dict, anchor_codec: str, codecs: set[str]) -> dict:
    """The anchor codec's settings, filed under each codec's name (curve_verdicts pairs by codec)."""
    return {(codec, label): data for (c, label), data in sets.items() if c == anchor_codec for codec in codecs}


# Why a codec that both runs have was still not judged: a curve needs two settings, each with a value, on two
# images both runs scored
NO_SHARED_CURVE = "not compared: no curve of it in both runs (two settings, each with a value, on two shared images)"


def build(paths: list[str | pathlib.Path], options: HistoryOptions | None = None) -> History:
    options = options or HistoryOptions()
    if options.bd_method not in BD_METHODS:
        raise ValueError(f"BD method must be one of {', '.join(BD_METHODS)}, not {options.bd_method!r}.")
    for m in options.metrics:
        registry.measured(m)
    if options.anchor_run and options.anchor_codec:
        raise ValueError("Give an anchor run or an anchor codec, not both.")
    if options.since and _is_date(options.since):
        try:
            dt.date.fromisoformat(options.since)
        except ValueError as exc:  # told before any run is read, naming the flag
            raise ValueError(f"--since {options.since}: not a date ({exc}); give YYYY-MM-DD or a commit sha.") from None
    points, left_out = ordered(find_runs(paths), options.codecs)
    if not points:
        raise ValueError("No runs to follow" + (f" ({'; '.join(left_out)})." if left_out else "."))
    check_same_protocol(points)
    check_codecs(points, [*options.codecs, *filter(None, [options.anchor_codec])])
    anchor_point = None
    if options.anchor_run:
        wanted = pathlib.Path(options.anchor_run)
        matches = [p for p in points if p.run_dir.resolve() == wanted.resolve()] or \
            [p for p in points if str(options.anchor_run) in (p.run_id, p.record.run_id)]
        if not matches:
            raise ValueError(f"Anchor run {options.anchor_run} is not among the runs given.")
        if len(matches) > 1:
            raise ValueError(f"Anchor run {options.anchor_run} names {len(matches)} of the runs given "
                             f"({', '.join(p.run_id for p in matches)}): give its folder.")
        anchor_point = matches[0]
        if anchor_point.damage:
            raise anchor_point.damage
    if options.since:
        since = options.since
        if _is_date(since):
            points = [p for p in points if _when(p.date) >= _when(since + "T00:00:00+00:00")]
        else:
            start = next((k for k, p in enumerate(points) if p.commit.startswith(since)), None)
            if start is None:
                raise ValueError(f"--since {since}: no run of a commit starting with {since} (or give a date "
                                 "YYYY-MM-DD).")
            points = points[start:]
    if not points:
        raise ValueError(f"--since {options.since}: no run of a commit from then on.")
    readable = [p for p in points if not p.damage]
    if not readable:
        raise points[0].damage
    anchor_point = anchor_point or readable[0]  # default: the oldest run shown that can be read
    need_features = any(registry.METRICS[m].kind == "set" for m in options.metrics)
    cache: dict[pathlib.Path, dict] = {}

    def sets_of(point: RunPoint, codecs: list[str] | None = None) -> dict:
        """A run's settings (of the chosen codecs), each run read once."""
        if point.run_dir not in cache:
            cache[point.run_dir] = _only(bootstrap.load_settings(point.run_dir, features=need_features),
                                         options.metrics, [])
        chosen = options.codecs if codecs is None else codecs
        return {k: v for k, v in cache[point.run_dir].items() if not chosen or k[0] in chosen}

    def verdicts(base: dict, new: dict, intervals: bool = True) -> pd.DataFrame:
        return compare.curve_verdicts(base, new, options.tolerances, options.resamples, options.seed, options.level,
                                      bd_method=options.bd_method, intervals=intervals)

    def _not_in_anchor(codec: str) -> str:
        if options.anchor_codec or any(c == codec for c, _ in sets_of(anchor_point, [codec])):
            return ""
        return f"not compared: codec {codec} is not in the anchor run ({anchor_point.run_id})"

    def no_curve(point: RunPoint, codec: str, metric: str) -> str:
        return _no_curve(point, codec, metric, point.summary)

    def codecs_of(point: RunPoint) -> set[str]:
        """The chosen codecs with a setting that has a value in the run, from its summary: a history whose
        verdicts are all cached reads no run's per-image rows."""
        summary = point.summary[point.summary.n_ok > 0] if "n_ok" in point.summary else point.summary
        return {c for c in summary.codec if not options.codecs or c in options.codecs}

    rows = []
    previous = None
    last_with: dict[tuple[str, str], RunPoint] = {}  # per (codec, metric), the latest run that has its curve
    unread: list[RunPoint] = []  # the runs since `previous` whose results cannot be read
    for point in points:
        run = {"run_id": point.run_id, "run_dir": str(point.run_dir), "commit": point.commit, "date": point.date,
               "bd_method": options.bd_method}
        if point.damage:  # shown, without numbers, with why; the next run is judged against the last readable one
            rows += [{**run, "codec": codec, "metric": metric, "why": "", "change": "not compared",
                      "missing_note": f"its results cannot be read: {point.damage}"}
                     for codec in dict.fromkeys(c.label for c in point.record.codecs)
                     if (not options.codecs or codec in options.codecs) and codec != options.anchor_codec
                     for metric in options.metrics]
            unread.append(point)
            continue

        def against_anchor(point=point) -> pd.DataFrame:
            sets = sets_of(point)
            if not options.anchor_codec:
                return verdicts(sets_of(anchor_point), sets)
            if not sets_of(point, [options.anchor_codec]):
                raise ValueError(f"Anchor codec {options.anchor_codec} is not in run {point.run_dir}.")
            anchor_sets = _as_anchor(sets_of(point, [options.anchor_codec]), options.anchor_codec,
                                     {c for c, _ in sets} - {options.anchor_codec})
            return verdicts(anchor_sets, {k: v for k, v in sets.items() if k[0] != options.anchor_codec})

        against = _cached("anchor", point if options.anchor_codec else anchor_point, point, options, against_anchor)
        change = _cached("change", previous, point, options,
                         lambda previous=previous, point=point: verdicts(sets_of(previous), sets_of(point), False)) \
            if previous is not None else pd.DataFrame(columns=["codec", "metric", "verdict", "why", "bd_metric"])
        for r in against.itertuples():
            if r.metric not in options.metrics:
                continue
            c = change[(change.codec == r.codec) & (change.metric == r.metric)]
            gap = (_unmeasured(previous, r.metric, "the previous run") or _absent(previous, r.codec, sets_of)
                   or no_curve(previous, r.codec, r.metric)) if not len(c) and previous is not None else ""
            earlier = last_with.get((r.codec, r.metric))
            if gap and earlier:  # a change across the gap counts: against the last run with it
                across = _cached("change", earlier, point, options,
                                 lambda earlier=earlier, point=point: verdicts(sets_of(earlier), sets_of(point), False))
                c = across[(across.codec == r.codec) & (across.metric == r.metric)]
                gap = f"{gap}; compared with run {earlier.run_id}, the last that has it"
            if not len(c) and previous is not None and not gap:  # both have curves, and still none was judged
                gap = NO_SHARED_CURVE
            if unread and previous is not None:
                gap = "; ".join(filter(None, [f"compared with run {previous.run_id}: the run"
                                              f"{'s' if len(unread) > 1 else ''} after it "
                                              f"({', '.join(p.run_id for p in unread)}) cannot be read", gap]))
            rows.append({**run, "codec": r.codec, "metric": r.metric, "bd_rate": r.bd_rate,
                         "bd_rate_low": r.bd_rate_low, "bd_rate_high": r.bd_rate_high, "bd_metric": r.bd_metric,
                         "n_images": r.n_images,
                         "change": c.verdict.iloc[0] if len(c) else ("first" if previous is None else "not compared"),
                         "change_bd_metric": c.bd_metric.iloc[0] if len(c) else np.nan,
                         "why": "; ".join(filter(None, [gap, c.why.iloc[0] if len(c) else ""])),
                         "interval_note": r.note if np.isfinite(r.bd_rate) and np.isnan(r.bd_rate_low) else "",
                         "missing_note": "" if np.isfinite(r.bd_rate) else r.note})
        shown = set(zip(against.codec, against.metric))
        codecs = codecs_of(point) - {options.anchor_codec}
        for codec, metric in ((c, m) for c in sorted(codecs) for m in options.metrics if (c, m) not in shown):
            rows.append({**run, "codec": codec, "metric": metric, "why": "",
                         "change": "first" if previous is None else "not compared",
                         "missing_note": _unmeasured(point, metric) or _not_in_anchor(codec) or _unmeasured(
                             None if options.anchor_codec else anchor_point, metric, "the anchor run")
                         or NO_SHARED_CURVE})
        last_with.update({(c, m): point for c in codecs_of(point) for m in options.metrics
                          if not _unmeasured(point, m) and not no_curve(point, c, m)})
        previous, unread = point, []
    table = pd.DataFrame(rows, columns=["run_id", "run_dir", "commit", "date", "codec", "metric", "bd_rate",
                                        "bd_rate_low", "bd_rate_high", "bd_metric", "n_images", "change",
                                        "change_bd_metric", "why", "bd_method", "interval_note", "missing_note"])
    table[["interval_note", "missing_note"]] = table[["interval_note", "missing_note"]].fillna("")
    anchor = (f"codec {options.anchor_codec} in each run" if options.anchor_codec else
              f"the same codec in run {anchor_point.run_id} (commit {short_revision(anchor_point.commit)})")
    from benchmark.run.results import unfinished

    notes = [f"{len(points)} run{'' if len(points) == 1 else 's'} of {points[0].record.dataset.label}, ordered by "
             f"commit date; BD-rate in % against "
             f"{anchor} ({options.bd_method} interpolation), {options.resamples} paired resamples at "
             f"{options.level:.0%}; a change is marked where compare's rule says the curve moved"]
    damaged = [p.run_id for p in points if p.damage]
    if damaged:
        notes.append(f"{len(damaged)} of them cannot be read and {'is' if len(damaged) == 1 else 'are'} shown without "
                     f"numbers (why, and the fix, under each table): {', '.join(damaged)}")
    notes += [why for why in (unfinished(p.run_dir) for p in readable) if why]  # its n says on how many images
    return History(table, anchor, notes + left_out, len(points))


def _absent(point: RunPoint, codec: str, sets_of) -> str:
    """Why the previous run has no curve of `codec`: it did not run it ("" where it did)."""
    return "" if any(c == codec for c, _ in sets_of(point)) else \
        f"the previous run ({point.run_id}) has no {codec}"


def _no_curve(point: RunPoint, codec: str, metric: str, summary: pd.DataFrame) -> str:
    """Why a run that ran `codec` and measured `metric` has no curve of it: fewer than two of its settings (its
    `summary`'s rows) have a value (a sweep of one setting, or settings whose every row failed); "" where it has one."""
    rows = summary[summary.codec == codec]
    n = int(rows[metric].notna().sum()) if metric in rows else 0
    return "" if n >= 2 else (f"the previous run ({point.run_id}) has no curve of {codec} in {metric}: "
                              f"{n} setting{'' if n == 1 else 's'} with a value")


def _unmeasured(point: RunPoint | None, metric: str, which: str = "") -> str:
    """Why a run has no value of `metric`, as its config.json records it (turned off, or unavailable: weights that
    failed to download); "" where it was measured or nothing is recorded. A commit whose run lost a metric is
    shown, with this, rather than left out of that metric's history."""
    state = point.record.metric_state(metric) if point is not None else {}
    if state.get("status") in (None, "ok"):
        return ""
    return (f"{which or 'its run'} ({point.run_id}) has no {metric}: {state['status']}, "
            f"{state.get('reason') or 'no reason recorded'}")


def code_key() -> str:
    """A digest of the code a cached verdict comes from: compare's rule, the curves and BD it fits (curves.py), and
    the bootstrap."""
    import hashlib

    from benchmark.analysis import curves

    source = b"".join(pathlib.Path(m.__file__).read_bytes() for m in (compare, curves))
    return hashlib.sha256(source).hexdigest()[:12] + bootstrap.code_key()


def _cached(kind: str, base: RunPoint, new: RunPoint, options: HistoryOptions, compute) -> pd.DataFrame:
    """compute(), or its result from an earlier history with the same options over the same two runs (keyed by
    their summaries' checksums, so a rewritten run is computed again): each new commit's run costs its own
    verdicts, not the whole history's. The runs' shards and summaries were checked when they were ordered."""
    import hashlib
    import json

    import pyarrow as pa

    from benchmark.run.integrity import problem
    from benchmark.run.results import write_table

    keys = [bootstrap.summary_checksum(p.run_dir) for p in (base, new)]
    if None in keys:
        return compute()
    code = code_key()
    described = json.dumps([kind, code, keys, options.metrics, options.codecs, options.anchor_codec, options.resamples,
                            options.seed, options.level, options.bd_method, sorted(options.tolerances.items())],
                           default=str)
    path = bootstrap.cache_folder("history") / f"{kind}-{hashlib.sha256(described.encode()).hexdigest()[:32]}.parquet"
    if problem(path, strict=True) is None:
        return pd.read_parquet(path)
    table = compute()
    try:
        write_table(path, pa.Table.from_pandas(table.astype({"significant": object}) if "significant" in table
                                               else table, preserve_index=False), key_parts=1)
    except (OSError, pa.ArrowException):
        pass  # a cache that cannot be written is only a slower next time
    return table


def significant(history: History) -> pd.DataFrame:
    """The rows whose commit changed the codec's curve (better or worse) under compare's rule."""
    return history.table[history.table.change.isin(["worse", "better"])]


def render(history: History) -> str:
    """The history as text: per codec and metric, one line per run."""
    lines = [f"note: {n}" for n in history.notes]
    table = history.table
    for (codec, metric), rows in table.groupby(["codec", "metric"], sort=False):
        lines.append(f"\n{codec} {metric}: BD-rate % against {history.anchor}")
        shown = pd.DataFrame({
            "date": [d[:19] for d in rows.date], "commit": [short_revision(c) for c in rows.commit], "run": rows.run_id,
            "BD-rate % [interval]": ["–" if pd.isna(v) else f"{v:+.2f}" + (NO_INTERVAL if pd.isna(lo) else
                                                                             f" [{lo:+.2f}, {hi:+.2f}]")
                                     for v, lo, hi in zip(rows.bd_rate, rows.bd_rate_low, rows.bd_rate_high)],
            "n": rows.n_images.astype("Int64"),
            "change": [("** " + v.upper() + " **") if v in ("worse", "better") else v for v in rows.change]})
        lines.append(shown.to_string(index=False))
        for r in rows[rows.change.isin(["worse", "better"])].itertuples():
            lines.append(f"  {short_revision(r.commit)} ({r.run_id}): {r.why}")
        for note in dict.fromkeys(n for n in rows.interval_note if n):  # why a BD-rate so marked has no interval
            lines.append(f"  {NO_INTERVAL} {note}")
        for r in rows[rows.missing_note != ""].itertuples():  # why a run shows no BD-rate ("–")
            lines.append(f"  – {short_revision(r.commit)} ({r.run_id}): {r.missing_note}")
        for r in rows[(rows.missing_note == "") & (rows.change == "not compared")].itertuples():  # why no verdict
            lines.append(f"  – {short_revision(r.commit)} ({r.run_id}): {r.why}")
    marked = significant(history)
    n_runs = history.runs or table.run_dir.nunique()
    judged = int(table.change.isin(["same", "better", "worse"]).sum())  # a curve compared with an earlier run's
    unjudged = int((table.change == "not compared").sum())
    if not judged:  # nothing was compared: that is not "no change"
        lines.append("\nNo change could be judged: " + ("one run has no earlier run to compare with." if n_runs == 1
                     else f"no codec's curve in these {n_runs} runs was compared with an earlier run's (each '–' "
                          "above says why)."))
        return "\n".join(lines)
    lines.append(f"\n{len(marked)} significant change{'' if len(marked) == 1 else 's'} in {n_runs} "
                 f"run{'' if n_runs == 1 else 's'}"
                 + (": " + ", ".join(f"{short_revision(r.commit)} {r.codec} {r.metric} {r.change}"
                                     for r in marked.itertuples()) if len(marked) else "")
                 + (f" ({judged} curve{'' if judged == 1 else 's'} compared with an earlier run's, {unjudged} not: "
                    "each '–' above says why)." if unjudged else "."))
    return "\n".join(lines)
