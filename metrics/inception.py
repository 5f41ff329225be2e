"""torch-fidelity's InceptionV3 ('inception-v3-compat'): one forward pass per image gives the 2048-d pool3
features (FID, KID, IPD) and the 1008 unbiased logits (Inception Score).

The logits are torch-fidelity's 'logits_unbiased' (pool3 times the fc layer's weight, no bias), computed here
from the pool features in float64, one product per image: the network's own float32 batch product rounds
differently for different batch shapes (up to 5e-6 on a logit), which made a set's Inception Score depend on
which other images shared its batches. An image's logits are now a function of its pool features alone.

Images go in as uint8 RGB, as torch-fidelity expects; its TensorFlow-compatible bilinear resize to 299
happens inside the model. Weights: a local file (`--inception-weights`, or CMCBENCH_INCEPTION_WEIGHTS),
else torch-fidelity's standard weights fetched once into the torch hub cache.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from metrics import defaults, download
from metrics.download import ENV_OFFLINE, file_digest, hub_dir  # noqa: F401 - ENV_OFFLINE and hub_dir re-exported
from metrics.fid import MIN_SAMPLES, FIDReference
from metrics.inception_score import inception_score
from metrics.kid import kid, uses_subsets
from metrics.spec import FeatureSpace, Option

FEATURE_DIM = 2048
LOGITS_DIM = 1008
EXTRACTOR_NAME = "inception-v3-compat"
ENV_WEIGHTS = "CMCBENCH_INCEPTION_WEIGHTS"
ENV_SHA256 = "CMCBENCH_INCEPTION_SHA256"
# Below this many images per split the Inception Score is noted: IS of a split is at most its number of
# images (exp of a mutual information bounded by log n), so small splits cap and bias it low.
ISC_MIN_PER_SPLIT = 500
# The space of the run's Inception stage (config.json's `inception`): not in the registry's spaces, because that
# stage (benchmark.run.perceptual) stores more than a space's features (IPD, logits, patches); its set metrics (IS,
# FID, KID in `whole_image_metrics`, patch FID) name it as their space, and the one set-metric evaluator computes them.
SPACE = FeatureSpace("inception", "Inception", "inception", "metrics.inception:extractor")
STANDARD_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"


class InceptionUnavailable(RuntimeError):
    """The Inception metrics cannot be computed here; the message says how to fix that."""


def file_sha256(path: str | os.PathLike) -> str:
    return file_digest(path)


def resolve_weights(path: str | None = None, expected_sha256: str | None = None, progress: bool = True) -> tuple[str, str]:
    """Return (local path, sha256) of the weights, downloading the standard ones if needed and possible."""
    path = path or os.environ.get(ENV_WEIGHTS) or None
    expected_sha256 = (expected_sha256 or os.environ.get(ENV_SHA256) or "").lower() or None
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torch_fidelity") is None:
        raise InceptionUnavailable("the Inception metrics need torch and torch-fidelity: pip install -e '.[inception]'")
    if path is None:
        try:
            path = download.hub_download(STANDARD_URL, "6726825d", progress)
        except OSError as exc:
            raise InceptionUnavailable(
                f"no Inception weights: {exc}. Download that file on a machine with internet and either put it "
                f"there or pass --inception-weights PATH (or set {ENV_WEIGHTS}).") from None
    elif not os.path.isfile(path):
        raise InceptionUnavailable(f"Inception weights file {path!r} does not exist.")
    digest = file_sha256(path)
    if expected_sha256 and digest != expected_sha256:
        raise InceptionUnavailable(f"Inception weights {path!r} have sha256 {digest}, expected {expected_sha256}.")
    if path.endswith(STANDARD_URL.rsplit("/", 1)[1]) and not digest.startswith("6726825d"):
        raise InceptionUnavailable(f"Inception weights {path!r} are corrupt (sha256 {digest[:8]}..., expected "
                                   "6726825d...): delete the file and run again.")
    return path, digest


def pick_device(device: str = defaults.DEVICE) -> str:
    return defaults.pick_device(device, InceptionUnavailable)


class InceptionExtractor:
    """Batched feature extraction that counts every image it sends through the network."""

    def __init__(self, weights_path: str, weights_sha256: str, device: str = defaults.DEVICE,
                 batch_size: int = defaults.BATCH_SIZE):
        import torch
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.torch = torch
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.weights_sha256 = weights_sha256
        self.key = f"{EXTRACTOR_NAME}-{weights_sha256[:16]}"
        self.model = FeatureExtractorInceptionV3(EXTRACTOR_NAME, ["2048"],
                                                 feature_extractor_weights_path=weights_path).to(self.device).eval()
        self.fc_weight = self.model.fc.weight.detach().cpu().double().numpy()  # 1008 x 2048
        self.passes = 0

    def forward(self, batch) -> tuple[np.ndarray, np.ndarray]:
        """One uint8 N x 3 x H x W batch through the network."""
        with self.torch.inference_mode(), at_least_two_threads(self.torch):
            (pool,) = self.model(batch.to(self.device, non_blocking=True))
        self.passes += len(batch)
        pool = pool.float().cpu().numpy()
        return pool, unbiased_logits(pool, self.fc_weight).astype(np.float32)

    def __call__(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Features of H x W x 3 uint8 images, in input order (batches group images of equal size)."""
        pool = np.empty((len(images), FEATURE_DIM), np.float32)
        logits = np.empty((len(images), LOGITS_DIM), np.float32)
        for part, batch in uint8_batches(self.torch, images, self.batch_size):
            pool[part], logits[part] = self.forward(batch)
        return pool, logits


def extractor(state: dict, device: str, batch_size: int) -> InceptionExtractor:
    """The run's InceptionExtractor, from what its `inception` entry resolved."""
    return InceptionExtractor(state["weights_path"], state["weights_sha256"], device, batch_size)


@contextlib.contextmanager
def at_least_two_threads(torch):
    """Run the network on two or more CPU threads. PyTorch picks each convolution's kernel by batch size and thread
    count: on one thread (OMP_NUM_THREADS=1, a one-core machine) a 1x1 convolution of fewer than 16 images takes its
    native kernel and a larger batch oneDNN, whose sums round differently, so an image's features would depend on
    the batch it shared (a resumed run's tail, a set's last batch). From two threads on, every batch takes oneDNN
    and each image gets the same features (tests/test_perceptual.py checks batches of 1, 7 and 16)."""
    threads = torch.get_num_threads()
    if threads > 1:
        yield
        return
    torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def unbiased_logits(pool: np.ndarray, fc_weight: np.ndarray) -> np.ndarray:
    """torch-fidelity's 'logits_unbiased' (pool @ fc.weight.T) in float64, one matrix-vector product per image
    whatever the batch: a batched product's rounding depends on its shape, a fixed-shape product's does not."""
    pool = np.asarray(pool, np.float64)
    logits = np.empty((len(pool), len(fc_weight)), np.float64)
    for i, features in enumerate(pool):
        logits[i] = fc_weight @ features
    return logits


def uint8_batches(torch, images: list[np.ndarray], batch_size: int):
    """(indices, N x 3 x H x W uint8 tensor) batches of at most `batch_size` images of one size each."""
    by_shape: dict[tuple, list[int]] = defaultdict(list)
    for i, im in enumerate(images):
        by_shape[im.shape].append(i)
    for idx in by_shape.values():
        for start in range(0, len(idx), batch_size):
            part = idx[start:start + batch_size]
            yield part, torch.from_numpy(np.stack([images[i] for i in part])).permute(0, 3, 1, 2)


@dataclass
class InceptionSet:
    """A set's features in Inception's space: pool features (FID, KID), unbiased logits (IS), and the FID/256
    patches' pool features (None unless the run computes patch FID)."""

    pool: np.ndarray
    logits: np.ndarray
    patches: np.ndarray | None = None


@dataclass
class InceptionReference:
    """The originals' side of a set's comparison: their pool features (their statistics prepared once for every
    setting of the same images) and their patches' (None unless the run computes patch FID)."""

    pool: FIDReference
    patches: np.ndarray | None = None


def whole_image_metrics(features: InceptionSet, reference: InceptionReference, options: dict) -> tuple[dict, str]:
    """IS, FID and KID over whole images (one function: they share the set and its notes), with the notes their
    counts need; `options` are the run's Inception options (splits, KID subsets, seed; none without whole_image_fid,
    as a protocol that reports FID over patches only asks)."""
    if not options.get("whole_image_fid", True):
        return {}, ""
    pool, ref_pool = features.pool, reference.pool.features
    n, notes = len(pool), []
    row: dict = {}
    splits = options["isc_splits"]
    if n >= splits:
        row["inception_score"], row["inception_score_std"] = inception_score(features.logits, splits, options["seed"])
        if n / splits < ISC_MIN_PER_SPLIT:
            notes.append(f"IS from {n / splits:.3g} images per split (< {ISC_MIN_PER_SPLIT}): a split's IS cannot "
                         "exceed its number of images, so it is biased low; compare only at equal N and splits")
    else:
        notes.append(f"IS needs at least {splits} images (has {n})")
    if n >= 2 and len(ref_pool) >= 2:
        row["fid"] = reference.pool.distance(pool)
        row["kid"], row["kid_std"] = kid(pool, ref_pool, options["kid_subsets"], options["kid_subset_size"],
                                         options["seed"])
        if not uses_subsets(n, len(ref_pool), options["kid_subset_size"]):
            notes.append(f"KID over all {min(n, len(ref_pool))} images once (subset size "
                         f"{options['kid_subset_size']} is not smaller than the set): no subset spread, kid_std left "
                         "empty")
        if min(n, len(ref_pool)) < MIN_SAMPLES:
            notes.append(f"FID from {min(n, len(ref_pool))} < {MIN_SAMPLES} samples: biased, compare only at "
                         "equal sample counts")
    else:
        notes.append("FID and KID need at least 2 images per set")
    return row, "; ".join(notes)


SPECS = [  # the Inception stage's weights; its set metrics are declared in fid.py, inception_score.py, kid.py
    Option("--inception-weights", "inception.weights", None, metavar="PATH", file=True,
           help=f"local InceptionV3 weights (torch-fidelity format); default: ${ENV_WEIGHTS}, else torch-fidelity's "
                "standard weights, downloaded once into the torch hub cache"),
    Option("--inception-sha256", "inception.sha256", None, metavar="HEX",
           help=f"refuse weights whose sha256 differs (default: ${ENV_SHA256})"),
]
