"""MS-SSIM on RGB (Wang et al. 2003 with the usual 5 scales and 11-px Gaussian window), as pytorch-msssim.

The arithmetic is pytorch-msssim's with its defaults, which CompressAI reports: float32 on 8-bit RGB with
data range 255; an 11-tap Gaussian (sigma 1.5) applied separably as a valid convolution to x, y, x^2, y^2
and xy; K = (0.01, 0.03); 2x2 average pooling padded by H % 2 and W % 2 on both sides, the zeros counted;
negative contrast terms clipped to 0; the five scales weighted 0.0448 .. 0.1333 per channel; the three
channels averaged.

Both this and pytorch-msssim compute in float32, whose round-off in E[x^2] - mu^2 (terms near 65,025)
shows on flat, bright areas: against the float64 evaluation of the same formula, pytorch-msssim is up to
2.1e-6 off on Kodak (JPEG q30) and this implementation up to 6e-6, so the two agree within 1e-5 (largest
6.6e-6 on Kodak; within 1e-6 on the test images, tests/test_image_metrics.py), 50 times below the 4
decimals reported and the 5e-4 `compare` tolerance.

It is computed plane by plane with OpenCV's separable filter and element-wise operations in reused
buffers, because pytorch-msssim's grouped convolutions made MS-SSIM most of a JPEG sweep's time: one
768 x 512 image takes under 2x the time of a tight C implementation of the same arithmetic and about a
fifth of pytorch-msssim's (scripts/bench_msssim.py).

Five scales with an 11-px window need both sides larger than (11 - 1) x 2^4 = 160 px; for a smaller image
MS-SSIM is undefined, so it is NaN with a note, never a value from fewer scales that would not be comparable.
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from metrics.spec import MetricInfo, Stage

WIN_SIZE = 11
SCALES = 5
MIN_SIDE = (WIN_SIZE - 1) * 2 ** (SCALES - 1) + 1  # 161
WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
K1, K2 = 0.01, 0.03
DATA_RANGE = 255.0
C1 = (K1 * DATA_RANGE) ** 2
C2 = (K2 * DATA_RANGE) ** 2


@functools.lru_cache(maxsize=1)
def _cv2():
    """OpenCV, on one thread: one image's filtering is faster so (0.74 against 1.0 ms per 768 x 512 plane
    measured here), and the run's workers already take one core each."""
    import cv2

    cv2.setNumThreads(1)
    return cv2


# pytorch-msssim's 11-tap Gaussian (sigma 1.5) as its `_fspecial_gauss_1d` rounds it to float32, bit for bit.
# The rounding matters: E[x^2] - mu^2 cancels terms near 65,025, so another float32 rounding of the same
# Gaussian (3e-8 apart) moves MS-SSIM by 1e-6. tests/test_image_metrics.py checks these against the package.
PYTORCH_MSSSIM_WINDOW = (0.0010283803567290306, 0.0075987582094967365, 0.036000773310661316, 0.10936068743467331,
                         0.21300552785396576, 0.26601171493530273, 0.21300552785396576, 0.10936068743467331,
                         0.036000773310661316, 0.0075987582094967365, 0.0010283803567290306)


def gaussian_window() -> np.ndarray:
    return np.array(PYTORCH_MSSSIM_WINDOW, np.float32)


class _Workspace:
    """Float32 buffers for one plane shape, reused across calls: allocating ~40 MB of temporaries per image
    let the allocator hand the memory back and fault it in again each time, which doubled the time."""

    NAMES = ("x", "y", "product", "mu12", "mu1", "mu2", "e11", "e22", "e12")

    def __init__(self, shape: tuple[int, ...]):
        for name in self.NAMES:
            setattr(self, name, np.empty(shape, np.float32))


_local = threading.local()


def _workspace(shape: tuple[int, ...]) -> _Workspace:
    """This thread's workspace for `shape`, keeping those of one plane's five scales."""
    cache = _local.__dict__.setdefault("workspaces", {})
    if shape not in cache:
        if len(cache) >= SCALES:
            cache.pop(next(iter(cache)))
        cache[shape] = _Workspace(shape)
    return cache[shape]


def ssim_and_cs(ws: _Workspace, window: np.ndarray, with_ssim: bool = True) -> tuple[float | None, float]:
    """Means of the SSIM map and of the contrast-structure map of the float32 planes `ws.x` and `ws.y` over
    the valid region. The maps are computed at full size in the workspace and cropped for
    the means; the SSIM map only `with_ssim` (MS-SSIM uses it at the coarsest scale alone). Variances are
    formed before they are summed, as pytorch-msssim does: E[x^2] + E[y^2] first
    would round at 130,050 before the cancellation."""
    cv2 = _cv2()

    def blur(src, dst):
        cv2.sepFilter2D(src, -1, window, window, dst=dst, borderType=cv2.BORDER_CONSTANT)

    x, y, p = ws.x, ws.y, ws.product
    blur(x, ws.mu1)
    blur(y, ws.mu2)
    for a, b, out in ((x, x, ws.e11), (y, y, ws.e22), (x, y, ws.e12)):
        blur(cv2.multiply(a, b, dst=p), out)
    mu12 = cv2.multiply(ws.mu1, ws.mu2, dst=ws.mu12)
    mu11, mu22 = cv2.multiply(ws.mu1, ws.mu1, dst=ws.mu1), cv2.multiply(ws.mu2, ws.mu2, dst=ws.mu2)
    num = cv2.addWeighted(cv2.subtract(ws.e12, mu12, dst=ws.e12), 2, mu12, 0, C2, dst=ws.e12)  # 2 sigma12 + C2
    den = cv2.addWeighted(cv2.subtract(ws.e11, mu11, dst=ws.e11), 1, cv2.subtract(ws.e22, mu22, dst=ws.e22), 1, C2,
                          dst=ws.e11)  # sigma1^2 + sigma2^2 + C2
    cs = cv2.divide(num, den, dst=ws.e12)
    m = len(window) // 2
    valid = (slice(m, -m), slice(m, -m))
    n = (x.shape[0] - 2 * m) * (x.shape[1] - 2 * m)
    cs_mean = cv2.sumElems(cs[valid])[0] / n
    if not with_ssim:
        return None, cs_mean
    luminance = cv2.divide(cv2.addWeighted(mu12, 2, mu12, 0, C1, dst=mu12),
                           cv2.addWeighted(mu11, 1, mu22, 1, C1, dst=mu11), dst=mu12)
    ssim = cv2.multiply(luminance, cs, dst=mu12)
    return cv2.sumElems(ssim[valid])[0] / n, cs_mean


def average_pool(image: np.ndarray, out: np.ndarray) -> None:
    """torch's avg_pool2d(kernel 2, padding H % 2 and W % 2) into `out`: zeros padded on both sides of an odd
    side and counted in the mean, the last row or column of the padded image dropped."""
    cv2 = _cv2()
    ph, pw = image.shape[0] % 2, image.shape[1] % 2
    if ph or pw:
        image = cv2.copyMakeBorder(image, ph, ph, pw, pw, cv2.BORDER_CONSTANT, value=0)
    h, w = out.shape[:2]
    cv2.resize(image[:2 * h, :2 * w], (w, h), dst=out, interpolation=cv2.INTER_AREA)


def pooled_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0] // 2 + shape[0] % 2, shape[1] // 2 + shape[1] % 2, *shape[2:])


def ms_ssim(reference: np.ndarray, reconstruction: np.ndarray) -> tuple[float, str]:
    """(MS-SSIM in [0, 1], note) of two H x W x 3 uint8 images; NaN with the reason when too small."""
    h, w = reference.shape[:2]
    if min(h, w) < MIN_SIDE:
        return float("nan"), f"ms_ssim unavailable: {w}x{h} is smaller than its {MIN_SIDE}-px minimum side"
    window = gaussian_window()
    planes = zip(_cv2().split(reference), _cv2().split(reconstruction))
    return float(np.mean([ms_ssim_plane(a, b, window) for a, b in planes])), ""


def ms_ssim_plane(reference: np.ndarray, reconstruction: np.ndarray, window: np.ndarray) -> float:
    """MS-SSIM of one 8-bit channel: contrast-structure at the four finer scales, SSIM at the coarsest."""
    ws = _workspace(reference.shape)
    np.copyto(ws.x, reference, casting="unsafe")
    np.copyto(ws.y, reconstruction, casting="unsafe")
    value = 1.0
    for level, weight in enumerate(WEIGHTS):
        if level == len(WEIGHTS) - 1:
            return value * max(ssim_and_cs(ws, window)[0], 0.0) ** weight
        value *= max(ssim_and_cs(ws, window, with_ssim=False)[1], 0.0) ** weight
        smaller = _workspace(pooled_shape(ws.x.shape))
        average_pool(ws.x, smaller.x)
        average_pool(ws.y, smaller.y)
        ws = smaller
    raise AssertionError("unreachable")


def _version(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:  # OpenCV from another distribution (opencv-python, a system build)
        import cv2

        return f"cv2 {cv2.__version__}"


def resolve(choice: bool, cache_root=None, progress: bool = False) -> dict:
    """--ms-ssim as config.json records it: the implementation and its settings, or why it is unavailable."""
    import importlib.util

    if importlib.util.find_spec("cv2") is None:
        return {"status": "unavailable", "reason": "MS-SSIM needs OpenCV: pip install opencv-python-headless"}
    return {"status": "ok", "implementation": "cmcbench metrics.msssim (pytorch-msssim's arithmetic) on "
                                              f"opencv-python-headless {_version('opencv-python-headless')}",
            "data_range": int(DATA_RANGE), "win_size": WIN_SIZE, "scales": SCALES}


SPECS = [
    Stage("ms_ssim", True, "", "MS-SSIM on RGB per image (pytorch-msssim's arithmetic; NaN for images under 161 px a "
          "side; default on, off with --metrics none)", "metrics.msssim:resolve", off=False, label="MS-SSIM",
          home="image_metrics", hashed="flag", off_with_metrics_none=True, toggle=True),
    MetricInfo("ms_ssim", "MS-SSIM (RGB)", True, "pixels", "MS-SSIM", needs=("pixels",), state="image_metrics.ms_ssim",
               tolerance=5e-4, fn="metrics.msssim:ms_ssim"),
]
