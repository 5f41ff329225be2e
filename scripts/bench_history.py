"""How long `bench.py history` takes over many runs (issue 28 asks for seconds at 200 runs).

Makes N small runs once (sample:8, all its images; JPEG at four qualities, shifted by a step at every other run,
and WebP at three), into --runs (kept, so a second call only times), then times history's reading and
verdicts over all of them at the default 200 resamples, and the same with the plots.

    python scripts/bench_history.py [--n 200] [--runs /tmp/cmcbench-history-runs] [--bootstrap 200]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path[:0] = [str(pathlib.Path(__file__).resolve().parents[1])]

from benchmark.analysis import history  # noqa: E402
from benchmark.analysis.plots import history_plots  # noqa: E402
from benchmark.codecs.codec_spec import parse_codec_spec  # noqa: E402
from benchmark.run.runner import RunConfig, create_run, execute  # noqa: E402


def make_runs(root: pathlib.Path, n: int) -> None:
    have = {p.name for p in root.iterdir()} if root.is_dir() else set()
    start = time.perf_counter()
    for k in range(n):
        name = f"run-{k:03d}"
        if name in have:
            continue
        sweep = "20,40,60,80" if k % 2 == 0 else "21,41,61,81"
        config = RunConfig(dataset="sample:8", split="all", inception={"enabled": False}, caption_embedder="none",
                           image_metrics={"ms_ssim": False, "lpips": "none"},
                           codecs=[parse_codec_spec(f"jpeg quality={sweep}"),
                                   parse_codec_spec("webp quality=30,60,90")])
        execute(create_run(config, root, name, progress=False), jobs=1, progress=False)
    print(f"{n} runs in {root} ({time.perf_counter() - start:.0f} s to make the missing ones)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--runs", type=pathlib.Path, default=pathlib.Path("/tmp/cmcbench-history-runs"))
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args()
    make_runs(args.runs, args.n)
    start = time.perf_counter()
    result = history.build([args.runs], history.HistoryOptions(resamples=args.bootstrap))
    built = time.perf_counter() - start
    history_plots(result.table, result.anchor, args.runs.parent / "cmcbench-history-plots")
    total = time.perf_counter() - start
    marked = history.significant(result)
    print(f"history over {result.table.run_id.nunique()} runs, {result.table.codec.nunique()} codecs, "
          f"{args.bootstrap} resamples: {built:.1f} s to read and decide, {total:.1f} s with the plots; "
          f"{len(marked)} changes marked (none expected: the same codecs, sweeps shifted by a step)")


if __name__ == "__main__":
    main()
