"""The feature stage, one for any feature space (DINOv2, CLIP, and whatever a metric file declares): features of
originals (cached across runs) and of reconstructions (stored with each shard), and the set metrics of each
setting computed from them (`SpaceSets.table`, the one evaluator). Inception's stage (`benchmark.run.perceptual`)
is this stage, storing more (IPD, the logits apart, patches), and its sets are read by `InceptionSets`.

Each original goes through a space's network once per (preprocessed pixels, weights), into a cache shared by the
runs under one output root; each reconstruction once, as its task completes, its features written beside the
task's shard before the shard. Each space keeps its own ledger of passes. Set metrics are the registry's pure
functions of the stored features (`MetricInfo.fn` of the metrics that name the space).
"""

from __future__ import annotations

import functools
import json
import pathlib

import numpy as np
import pandas as pd

from benchmark.run.console import bar
from benchmark.run.integrity import write_checked
from benchmark.run.locations import located, recorded_path
from benchmark.run import feature_store
from benchmark.run.feature_store import (feature_key, features_path, group_by_setting, image_shas, keep,
                                         new_originals, npz_bytes, over_samples, own_parts, passes, read_setting,
                                         record_passes, stored, stored_reference, write_reference)
from benchmark.run.results import atomic_write_bytes, checked, safe_name
from benchmark.run.record import RunRecord
from benchmark.run.timings import Timings
from metrics import defaults, registry
from metrics.fid import FIDReference
from metrics.spec import TRUTH_FIELDS, FeatureSpace


def active(record: RunRecord) -> list[FeatureSpace]:
    """The feature spaces this run computes: their stage is ok and at least one of their metrics is."""
    return [s for s in registry.SPACES.values() if record.stage(s.state).get("status") == "ok"
            and any(record.metric_state(m.column).get("status") == "ok" for m in registry.in_space(s.name))]


def ledger(space: FeatureSpace) -> str:
    return f"{space.name}_passes.log"


def folder(space: FeatureSpace) -> str:
    return f"features-{space.name}"


def reference_dir(record: RunRecord, space: FeatureSpace, run_dir: pathlib.Path) -> pathlib.Path:
    """Where the originals' features of a space are cached: the stage's own record, else the one the run chose."""
    return located(record.stage(space.state).get("reference_dir") or record.feature_caches[space.name], run_dir)


def cache_dirs(record: RunRecord, cache_root: pathlib.Path, run_dir: pathlib.Path) -> dict[str, str]:
    """For active spaces whose stage records no cache: a folder keyed by the weights' sha256 under the shared
    cache, or inside the run when the weights are known by name alone (a Hub id not yet downloaded)."""
    out = {}
    for space in active(record):
        state = record.stage(space.state)
        if state.get("reference_dir"):
            continue
        sha = state.get("weights_sha256")
        name = space.originals or space.name  # a space that shares another's originals shares its cache
        out[space.name] = recorded_path(cache_root / f"{name}-{sha[:16]}") if sha else f"reference-{name}"
    return out


def builder(record: RunRecord, space: FeatureSpace):
    """A picklable call that builds the space's extractor on the run's device and batch size (here, or in a Ray
    actor)."""
    opts = record.config.get("inception", {})  # the networks' device and batch (a run may turn Inception off)
    return functools.partial(space.build, record.stage(space.state), opts.get("device", defaults.DEVICE),
                             opts.get("batch_size", defaults.BATCH_SIZE))


def needs_reference(record: RunRecord, sha: str, run_dir: pathlib.Path) -> bool:
    """Whether any active space has no cached features of this original yet."""
    return any(feature_store.needs_reference(reference_dir(record, s, run_dir), sha) for s in active(record))


class FeatureStage:
    """Embeds what a finished task needs (originals without cached features, every reconstruction) in one space.

    Inception's stage (`benchmark.run.perceptual`) is this stage with more to store: IPD in the rows, the pool
    features and logits apart, and FID/256's patches as a second kind (`variants`) of each original's features."""

    variants: tuple[bool, ...] = (False,)  # each original's kinds of cached features: whole image (and patches)

    def __init__(self, space: FeatureSpace, record: RunRecord, run_dir: pathlib.Path, timings: Timings | None = None,
                 extractor=None):
        self.space = space
        self.build = builder(record, space)
        self.run_dir = run_dir
        self.reference_dir = reference_dir(record, space, run_dir)
        self.timings = timings or Timings()
        self.known: set[str] = set()
        self._extractor = extractor  # None: built here on first use; the Ray executor passes a remote one

    def load(self) -> None:
        """Build the network (the runner calls this once the worker pool has started, so that loading it overlaps
        the workers' first tasks)."""
        if self._extractor is None:
            with self.timings.stage(f"{self.space.label}: load network"):
                self._extractor = self.build()

    @property
    def extractor(self):
        self.load()
        return self._extractor

    @extractor.setter
    def extractor(self, value) -> None:
        self._extractor = value

    def lacks(self, sha: str) -> bool:
        """Whether an original's features are neither in the run's own copy nor in the cache (both deleted)."""
        return not all(stored(self.run_dir, self.space.name, self.reference_dir, sha, v) for v in self.variants)

    def missing(self, sha: str) -> bool:
        """Whether an original's features must be computed: not in the cache, or damaged there (then discarded)."""
        return feature_store.needs_reference(self.reference_dir, sha, self.variants, discard=True)

    def on_result(self, result) -> None:
        self.on_results([result])

    def on_results(self, results: list) -> None:
        """Embed what finished tasks need, in one batched pass per kind (originals, reconstructions), and store it
        (called before their shards are written)."""
        todo = [item for result in results for item in new_originals(result, self.known, self.missing)]
        if todo:
            self._embed_originals(todo)
        for sha in {row.get("image_sha256") for result in results for row in result.rows} - {None}:
            for variant in self.variants:
                keep(self.run_dir, self.space.name, self.reference_dir, sha, variant)
        if self.space.input == "text":
            self._embed_texts(results)
        else:
            self._embed_images(results)
        atomic_write_bytes(self.run_dir / f"{self.space.name}_passes.json",
                           json.dumps(passes(self.run_dir, ledger(self.space))).encode())

    def _embed_originals(self, todo: list[tuple[str, np.ndarray]]) -> None:
        with self.timings.stage(f"{self.space.label}: forward (originals)", len(todo)):
            features = self.extractor([px for _, px in todo])
        record_passes(self.run_dir, [f"reference {sha} 0" for sha, _ in todo], ledger(self.space))
        for (sha, _), f in zip(todo, features):
            write_reference(self.reference_dir, sha, f)

    def _embed_images(self, results: list) -> None:
        label = self.space.label
        images = [im for result in results for _, im in result.reconstructions]
        if images:
            with self.timings.stage(f"{label}: forward (reconstructions)", len(images)):
                features = self.extractor(images)
            if self.space.pair:
                features = self._paired(results, features)
            for result, part in own_parts(results):
                positions = [p for p, _ in result.reconstructions]
                self._write(result, positions, features[part])

    def _paired(self, results: list, features: list) -> np.ndarray:
        """Each reconstruction's features compared with its original's, read from the cache (a paired space)."""
        from metrics.spec import resolve

        compare = resolve(self.space.pair)
        shas = [result.rows[p]["image_sha256"] for result in results for p, _ in result.reconstructions]
        originals = {sha: np.load(stored_reference(self.run_dir, self.space.name, self.reference_dir, sha))
                     for sha in dict.fromkeys(shas)}  # each original's read once, however many settings it has
        return np.stack([compare(originals[sha], f) for sha, f in zip(shas, features)]).astype(np.float32)

    def _embed_texts(self, results: list) -> None:
        """The texts the tasks' codecs transmitted (a row's `caption`), in one batched pass."""
        sent = [(result, [(p, result.rows[p][registry.TEXT_COLUMN]) for p, _ in result.reconstructions
                          if result.rows[p].get(registry.TEXT_COLUMN)]) for result in results]
        texts = [text for _, items in sent for _, text in items]
        if not texts:
            return
        with self.timings.stage(f"{self.space.label}: forward (transmitted text)", len(texts)):
            features = self.extractor.texts(texts)
        start = 0
        for result, items in sent:
            if items:
                self._write(result, [p for p, _ in items], features[start:start + len(items)])
                start += len(items)

    def _write(self, result, positions: list[int], features: np.ndarray) -> None:
        """One task's features, by setting, beside its shard; its passes in the ledger."""
        record_passes(self.run_dir, [f"reconstruction {safe_name(result.task.codec)} {result.task.chunk} "
                                     f"{len(positions)} 0"], ledger(self.space))
        write_checked(features_path(self.run_dir, result.task.codec, result.task.chunk, folder(self.space)),
                      npz_bytes(group_by_setting(result.rows, positions, **{self.space.name: features})))


def columns_of(metrics: list, result) -> tuple[dict, str]:
    """What a set-metric function returned, as ({column: value}, note): a dict as it is, a number as the value of the
    first of the `metrics` that share the function (left out when NaN: the note says why)."""
    value, note = result if isinstance(result, tuple) else (result, "")
    if isinstance(value, dict):
        return value, note
    return ({} if np.isnan(value) else {metrics[0].column: value}), note


class SpaceSets:
    """A space's stored sets as its set metrics read them: each setting's reconstructions' features and their
    originals', the options its metrics take, and the columns that count and annotate a set. `table` is the one
    evaluator of set metrics, for every space; Inception's (`perceptual.InceptionSets`) reads more per set."""

    partial = "against the originals of the {n} of {total} images this setting reconstructed"

    def __init__(self, run_dir: pathlib.Path, record: RunRecord, space: FeatureSpace):
        self.run_dir, self.record, self.space = pathlib.Path(run_dir), record, space
        self.count, self.note = f"n_{space.name}", f"{space.name}_note"

    def options(self) -> dict:
        """What the space's metrics take besides the features (PRDC's k)."""
        return self.record.stage(self.space.state)

    def features(self, codec: str, s: int, sample: int = 0):
        """(image indices, features) of one setting's reconstructions (of one sample of a stochastic decoder's), by
        image index; None if none."""
        return read_setting(self.run_dir, folder(self.space), codec, feature_key(s, sample), (self.space.name,))

    def originals(self, shas: dict[int, str], order) -> np.ndarray:
        """The features of the originals in `order`."""
        if self.space.pair:  # each reconstruction's features already compare with its original's
            return np.zeros((len(order), 0), np.float32)
        if not len(order):
            return np.zeros((0, 1), np.float32)
        cache = reference_dir(self.record, self.space, self.run_dir)
        features = np.stack([np.load(stored_reference(self.run_dir, self.space.name, cache, shas[i])) for i in order])
        if self.space.truth and (self.run_dir / TRUTH).exists():
            features = np.concatenate([features.astype(np.float64), truth_columns(self.run_dir, order)], 1)
        return features

    def reference(self, shas: dict[int, str], order):
        """What a set is compared with: the originals' features, their statistics prepared once for all settings."""
        return FIDReference(self.originals(shas, order))

    def subset(self, reference, positions: np.ndarray):
        """The reference of a setting whose failed rows left only the images at `positions`."""
        return FIDReference(reference.features[positions])

    def table(self, timings: Timings | None = None) -> pd.DataFrame:
        """The space's set metrics per (codec, setting) from the stored features, in float64; for a codec decoding
        K samples per bitstream, per sample's set, reported as the mean over the K sets with `<metric>_sample_std`."""
        timings = timings or Timings()
        functions = list(dict.fromkeys(m.fn for m in registry.in_space(self.space.name)
                                       if self.record.metric_state(m.column).get("status") == "ok"))
        shas = image_shas(self.run_dir)
        order = np.asarray(sorted(shas))
        reference = self.reference(shas, order)
        options = self.options()
        out = []
        keys = [(codec.label, s, codec.samples) for codec in self.record.codecs for s in range(len(codec.settings))]
        names = ", ".join(m.short for m in registry.in_space(self.space.name) if m.fn in functions)
        for label, s, samples in bar(keys, desc=f"set metrics ({names})", unit="settings"):
            rows = [self._row(functions, options, label, s, k, order, reference, timings) for k in range(samples)]
            out.append(over_samples(rows, self.note))
        return pd.DataFrame(out)

    def _row(self, functions, options, label, s, sample, order, reference, timings) -> dict:
        row = {"codec": label, "setting_index": s, self.count: 0}
        found = self.features(label, s, sample)
        if found is None:
            row[self.note] = "the codec transmitted no text" if self.space.input == "text" else \
                "no successful reconstructions"
            return row
        idx, features = found
        notes = []
        if len(idx) < len(order):  # failed rows: against the originals of the images it reconstructed
            reference = self.subset(reference, np.searchsorted(order, idx))
            notes.append(self.partial.format(n=len(idx), total=len(order)))
        row[self.count] = len(idx)
        for target in functions:  # metrics that share a function (PRDC's four) are computed once
            metrics = [m for m in registry.in_space(self.space.name) if m.fn == target]
            with timings.stage(f"set metrics: {'/'.join(m.short for m in metrics)}"):
                values, note = columns_of(metrics, metrics[0].function()(features, reference, options))
            row.update(values)
            notes += [note] if note else []
        row[self.note] = "; ".join(notes)
        return row


TRUTH = "truth.parquet"  # the dataset's instance annotations in the preprocessed images' pixels, one row per object


def truth_table(dataset, preprocess: str) -> pd.DataFrame | None:
    """The dataset's annotated objects (MS-COCO's boxes), one row per object with its image's index, moved into the
    pixels of the image the codecs see: scaled as `preprocess` resizes it. None when the dataset has none, or when
    the preprocessing crops (CUB's bounding-box crop), which boxes would not survive."""
    from benchmark.data.preprocess import output_side

    side = output_side(preprocess)
    rows = []
    for record in dataset.records:
        if not record.objects:
            continue
        if record.bbox is not None or (side is None and preprocess != "none"):
            return None
        (width, height), orientation = _image_header(record.path)
        for x, y, w, h, category, iscrowd, area in record.objects:
            x1, y1, x2, y2, oriented_w, oriented_h = oriented_box(x, y, x + w, y + h, orientation, width, height)
            sx, sy = (side / oriented_w, side / oriented_h) if side else (1.0, 1.0)
            rows.append((record.index, x1 * sx, y1 * sy, x2 * sx, y2 * sy, category, iscrowd, area * sx * sy))
    return pd.DataFrame(rows, columns=["index", *TRUTH_FIELDS]) if rows else None


def oriented_box(x1: float, y1: float, x2: float, y2: float, orientation: int, width: int, height: int):
    """A box annotated on the stored pixels (width x height), moved as reading the image turns it by its EXIF
    orientation (benchmark.data.imageio applies it, as PIL's exif_transpose does); with the turned image's size."""
    def point(x, y):
        return {1: (x, y), 2: (width - x, y), 3: (width - x, height - y), 4: (x, height - y), 5: (y, x),
                6: (height - y, x), 7: (height - y, width - x), 8: (y, width - x)}.get(orientation, (x, y))

    (ax, ay), (bx, by) = point(x1, y1), point(x2, y2)
    size = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by), *size


def write_truth(run_dir: pathlib.Path, table: pd.DataFrame) -> None:
    write_checked(run_dir / TRUTH, table.to_parquet(index=False), key_parts=1)


def _image_header(path: str) -> tuple[tuple[int, int], int]:
    """(the stored pixels' width and height, the EXIF orientation), from the file's header."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size, im.getexif().get(0x0112, 1)


def truth_columns(run_dir: pathlib.Path, order) -> np.ndarray:
    """Each image's objects (in `order`) as one row of TRUTH_FIELDS x the most objects any image has, NaN-padded."""
    table = pd.read_parquet(checked(run_dir, [run_dir / TRUTH])[0])
    table = table[table["index"].isin(order)]
    per_image = {i: g[list(TRUTH_FIELDS)].to_numpy(np.float64) for i, g in table.groupby("index")}
    width = max([len(v) for v in per_image.values()], default=0) * len(TRUTH_FIELDS)
    out = np.full((len(order), max(width, len(TRUTH_FIELDS))), np.nan)
    for k, i in enumerate(order):
        if i in per_image:
            out[k, :per_image[i].size] = per_image[i].ravel()
    return out


def summary_columns(run_dir: pathlib.Path, record: RunRecord, summary: pd.DataFrame, timings: Timings) -> pd.DataFrame:
    """The summary with each active space's set metrics and its pass counts."""
    for space in active(record):
        summary = summary.merge(SpaceSets(run_dir, record, space).table(timings), on=["codec", "setting_index"],
                                how="left")
        counts = passes(run_dir, ledger(space))
        summary[f"{space.name}_passes_reference"] = counts["reference"]
        summary[f"{space.name}_passes_reconstruction"] = counts["reconstruction"]
    return summary
