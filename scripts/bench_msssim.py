#!/usr/bin/env python3
"""MS-SSIM per image: cmcbench's implementation against a tight C one and against pytorch-msssim.

The C yardstick (scripts/msssim_ref.c, the same float32 arithmetic, compiled here with -O3 -march=native)
is what one thread of this CPU can do; cmcbench's MS-SSIM is held to within 2x of it. Each Kodak image is
compared with its JPEG (quality 30) reconstruction; the three implementations run interleaved on one
thread, best of --repeat per image, and the script prints per-image times, the ratios and the largest
difference between the values.

    python scripts/bench_msssim.py [--dataset ../shared/datasets/kodak] [--repeat 5]
"""

from __future__ import annotations

import argparse
import ctypes
import io
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread for every implementation, as in the run's workers

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_common import DEFAULT_DATASET, image_folder  # noqa: E402
from metrics.msssim import ms_ssim  # noqa: E402


def compile_reference(build_dir: pathlib.Path):
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        sys.exit("error: no C compiler (cc, gcc or clang) to build the reference implementation.")
    lib = build_dir / "msssim_ref.so"
    subprocess.run([compiler, "-O3", "-march=native", "-shared", "-fPIC", "-o", str(lib), str(HERE / "msssim_ref.c"),
                    "-lm"], check=True)
    fn = ctypes.CDLL(str(lib)).ms_ssim_rgb8
    fn.restype = ctypes.c_double
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]

    def reference(a: np.ndarray, b: np.ndarray) -> float:
        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
        return fn(a.ctypes.data, b.ctypes.data, a.shape[0], a.shape[1])

    return reference, compiler


def pytorch_msssim_fn():
    try:
        import torch
        from pytorch_msssim import ms_ssim as package
    except ImportError:
        return None
    torch.set_num_threads(1)

    def run(a: np.ndarray, b: np.ndarray) -> float:
        x = torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1)[None]
        y = torch.from_numpy(b.astype(np.float32)).permute(2, 0, 1)[None]
        with torch.inference_mode():
            return float(package(x, y, data_range=255, size_average=True, win_size=11))

    return run


def best_time(fn, a, b, repeat: int) -> tuple[float, float]:
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn(a, b)
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    _, files = image_folder(args.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        reference, compiler = compile_reference(pathlib.Path(tmp))
        package = pytorch_msssim_fn()
        impls = {"C -O3": reference, "cmcbench": lambda a, b: ms_ssim(a, b)[0]}
        if package:
            impls["pytorch-msssim"] = package
        print(f"MS-SSIM, one thread, best of {args.repeat}; C reference built with {compiler} -O3 -march=native")
        print(f"{'image':14s} {'size':>9s} " + " ".join(f"{k:>15s}" for k in impls) + "   cmcbench/C")
        ratios, diffs, totals = [], {k: 0.0 for k in impls}, {k: 0.0 for k in impls}
        for path in files:
            img = np.asarray(Image.open(path).convert("RGB"))
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=30)
            rec = np.asarray(Image.open(buf).convert("RGB"))
            for fn in impls.values():  # warm up
                fn(img, rec)
            times, values = {}, {}
            for name, fn in impls.items():
                times[name], values[name] = best_time(fn, img, rec, args.repeat)
                totals[name] += times[name]
            for name in impls:
                diffs[name] = max(diffs[name], abs(values[name] - values.get("pytorch-msssim", values["C -O3"])))
            ratios.append(times["cmcbench"] / times["C -O3"])
            print(f"{pathlib.Path(path).name:14s} {img.shape[1]:>4d}x{img.shape[0]:<4d} "
                  + " ".join(f"{times[k] * 1000:12.1f} ms" for k in impls) + f"   {ratios[-1]:6.2f}x")
        n = len(files)
        print(f"{'mean':24s} " + " ".join(f"{totals[k] / n * 1000:12.1f} ms" for k in impls)
              + f"   {totals['cmcbench'] / totals['C -O3']:6.2f}x")
        print(f"cmcbench / C: median {np.median(ratios):.2f}x, worst {max(ratios):.2f}x (target: within 2x)")
        if package:
            print(f"pytorch-msssim / cmcbench: {totals['pytorch-msssim'] / totals['cmcbench']:.1f}x")
        against = "pytorch-msssim" if package else "the C reference"
        print("largest |value - " + against + "|: "
              + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items() if k != ("pytorch-msssim" if package else "C -O3")))


if __name__ == "__main__":
    main()
