"""Command line: `python bench.py` runs the default benchmark; subcommands run, plot and codecs."""

from __future__ import annotations

import argparse
import pathlib
import sys

from benchmark.codec import CodecUnavailable, available_codecs, load_codec_class, parse_codec_spec
from benchmark.imageio import DEFAULT_MAX_PIXELS
from metrics import registry

DEFAULT_CODECS = ["jpeg", "jpeg2000", "webp", "avif", "jpegxl", "cmc"]
EXIT_FAILED_ROWS = 3
EXIT_REGRESSION = 4
EXIT_NOT_COMPARABLE = 5

EPILOG = """\
codec specs: 'NAME [key=value ...]' where NAME is a built-in codec (see `bench.py codecs`), an installed
entry point (group cmcbench.codecs) or package.module:Class. The key named after the codec's rate
parameter sets its sweep, label= names it in results, anything else is a codec option, e.g.
  --codec "jpeg quality=10,30,50 subsampling=4:4:4 label=jpeg444"

exit status: 0 all rows succeeded; 1 error before or during the run; 3 the run completed but some rows
failed (their reasons are in the rows and printed at the end; --allow-failures makes this 0);
`compare` exits 4 when NEW is worse than BASE beyond tolerance and significantly, 5 when they cannot be
compared (different data, NEW lacking part of BASE, or nothing in common).
"""


def reference_option(p) -> None:
    p.add_argument("--reference", action="append", default=[], metavar="FILE",
                   help="a published R-D curve to show beside the run (repeatable): CompressAI results JSON, or a "
                        "long CSV with columns codec, bpp, metric, value[, dataset, source]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench.py", description="cmcbench: benchmark semantic image codecs "
                                     "against JPEG, JPEG 2000 and CMC.", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="sweep codecs over a dataset (the default command)", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--dataset", default="sample", metavar="SPEC",
                     help="sample, sample:N (N generated images), folder:PATH or PATH, cub:PATH (AttnGAN layout), "
                          "coco:PATH (default: sample)")
    run.add_argument("--split", help="dataset split: sample test/train/all (default test); cub test/train "
                                     "(AttnGAN) or official-test/official-train; coco val2014/train2014")
    run.add_argument("--preprocess", default="auto",
                     help="none, cmc2021 (CUB bbox crop + 256x256, COCO 256x256) or resize-N; auto = cmc2021 "
                          "for cub and coco, none otherwise")
    run.add_argument("--codec", action="append", metavar="SPEC",
                     help=f"codec to run, repeatable (default: every available one of {', '.join(DEFAULT_CODECS)})")
    run.add_argument("--limit", type=int, help="use only the first N images of the split")
    run.add_argument("--jobs", "-j", type=int, help="worker processes for codec work (default: all cores)")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local (default): a process pool on this machine; ray: Ray tasks on a cluster "
                          "(--ray-address) or a local Ray with --jobs CPUs (pip install -e '.[ray]')")
    run.add_argument("--ray-address", metavar="ADDR", help="existing Ray cluster to join, e.g. ray://head:10001 or "
                                                           "auto (default: start a local one)")
    run.add_argument("--out", default="results", help="root folder for runs (default: results)")
    run.add_argument("--name", help="run id and folder name (default: UTC time and config hash)")
    run.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run; other run options are ignored; "
                                                         "refused if the code, packages, codecs or weights changed")
    run.add_argument("--resume-anyway", action="store_true",
                     help="with --resume: finish the run even though its provenance changed; the rows it adds "
                          "carry the new provenance, and config.json records the change")
    run.add_argument("--timeout", type=float, default=300.0, help="seconds one encode or decode may take (default 300)")
    run.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                     help="refuse larger images as decompression bombs (default %(default)s)")
    run.add_argument("--save-reconstructions", action="store_true",
                     help="also write every decoded image as PNG under RUN/outputs/<codec>/<setting>/ (a valid precomputed DIR)")
    run.add_argument("--metrics", choices=["inception", "none"], default="inception",
                     help="inception (default): also IS, FID, KID and IPD from torch-fidelity's InceptionV3; "
                          "none: bpp and PSNR only")
    run.add_argument("--inception-weights", metavar="PATH",
                     help="local InceptionV3 weights (torch-fidelity format); default: $CMCBENCH_INCEPTION_WEIGHTS, "
                          "else torch-fidelity's standard weights, downloaded once into the torch hub cache")
    run.add_argument("--inception-sha256", metavar="HEX", help="refuse weights whose sha256 differs "
                                                               "(default: $CMCBENCH_INCEPTION_SHA256)")
    run.add_argument("--device", default="auto", help="device for the networks: auto (CUDA when present), cpu, cuda")
    run.add_argument("--batch-size", type=int, default=32, help="Inception batch size (default 32)")
    run.add_argument("--isc-splits", type=int, default=10, help="Inception Score splits (default 10)")
    run.add_argument("--kid-subsets", type=int, default=100, help="KID subsets (default 100)")
    run.add_argument("--kid-subset-size", type=int, default=1000,
                     help="KID subset size, clipped to the number of images (default 1000)")
    run.add_argument("--caption-embedder", default="auto", metavar="MODEL",
                     help="sentence-transformers model (id or path) for caption_cosine, the transmitted caption's "
                          "similarity to the reference captions; auto (default) uses the packaged offline "
                          "all-MiniLM-L6-v2 when installed; none skips it")
    run.add_argument("--ms-ssim", action=argparse.BooleanOptionalAction, default=True,
                     help="MS-SSIM on RGB per image (pytorch-msssim; NaN for images under 161 px a side; default on)")
    run.add_argument("--lpips", default="auto", metavar="auto|none|PATH",
                     help="LPIPS (AlexNet, v0.1) per image: auto (default) uses torchvision's AlexNet weights from "
                          "$CMCBENCH_LPIPS_WEIGHTS or the torch hub cache, downloading them once; PATH a local "
                          "alexnet-owt-7be5be79.pth; none skips it")
    run.add_argument("--patch-fid", action="store_true",
                     help="also FID/256 (HiFiC): FID over 256x256 patches, plus a grid shifted by 128 px; for few "
                          "large images such as Kodak")
    run.add_argument("--add-metric", action="append", default=[], metavar="NAME",
                     help="also compute a metric that is off by default (repeatable): "
                          + ", ".join(m.column for m in registry.METRICS.values() if not m.default and m.column != "patch_fid"))
    run.add_argument("--save-bitstreams", action="store_true",
                     help="also write every bitstream under RUN/outputs/<codec>/<setting>/<image id>.bin")
    run.add_argument("--log-x", action="store_true", default=None,
                     help="log-scale bpp axis in the R-D plots (default: when rates span over 100x)")
    run.add_argument("--no-plots", action="store_true", help="skip the R-D plots")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--allow-failures", action="store_true", help="exit 0 even if some rows failed")

    plot = sub.add_parser("plot", help="draw R-D curves (PNG and SVG) for a finished run")
    plot.add_argument("run_dir", metavar="RUN_DIR")
    plot.add_argument("--log-x", action="store_true", default=None,
                      help="log-scale bpp axis (default: when rates span over 100x)")
    plot.add_argument("--metric", action="append", help="only these summary columns (default: every metric present)")
    plot.add_argument("--out", help="folder for the plots (default: RUN_DIR/plots)")
    reference_option(plot)

    export = sub.add_parser("export", help="write a run's per-setting means as published-curve files")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("out_dir", metavar="OUT_DIR")
    export.add_argument("--format", choices=["compressai"], default="compressai",
                        help="compressai (default): one CompressAI results JSON per codec")

    dec = sub.add_parser("decode", help="decode one bitstream file with a run's codec (its bytes and the run's "
                                        "declared side information only) and write the image as PNG")
    dec.add_argument("run_dir", metavar="RUN_DIR")
    dec.add_argument("codec", metavar="CODEC_LABEL")
    dec.add_argument("bitstream", metavar="FILE")
    dec.add_argument("-o", "--output", required=True, help="PNG to write")

    sub.add_parser("codecs", help="list codecs, their rate parameter, default sweep and availability")

    def bootstrap_options(p):
        p.add_argument("--bootstrap", type=int, default=200, metavar="N",
                       help="bootstrap resamples over images for the intervals (default 200; 0: no intervals)")
        p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
        p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")

    board = sub.add_parser("leaderboard", help="tables (Markdown, LaTeX, CSV, HTML): metrics at chosen rates, "
                                               "BD-rate and BD-metric against an anchor, every setting with intervals")
    board.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    board.add_argument("--anchor", help="codec label to compare against (default: jpeg)")
    board.add_argument("--rates", default="0.1,0.25,0.5,1", help="bpps for the at-rate table (default 0.1,0.25,0.5,1)")
    board.add_argument("--metric", action="append", help="only these metrics (repeatable; default: all present)")
    board.add_argument("--bd-method", default="akima", choices=["akima", "pchip", "cubic"],
                       help="interpolation for BD (default akima)")
    board.add_argument("--format", action="append", choices=["md", "tex", "csv", "html"],
                       help="files to write (repeatable; default all four); Markdown is also printed")
    board.add_argument("--out", help="folder for the tables (default: FIRST_RUN/leaderboard)")
    board.add_argument("--allow-mixed", action="store_true",
                       help="table runs of different datasets or preprocessing together (refused by default), "
                            "each codec labelled with its dataset")
    reference_option(board)
    bootstrap_options(board)

    comp = sub.add_parser("compare", help="per codec, setting and metric: NEW - BASE with a paired bootstrap "
                                          "interval; exit 4 if NEW is worse beyond tolerance")
    comp.add_argument("base", metavar="BASE_RUN")
    comp.add_argument("new", metavar="NEW_RUN")
    comp.add_argument("--tolerance", action="append", metavar="METRIC=VALUE",
                      help="allowed worsening at equal rate, absolute or relative with %%, e.g. fid=1.0 or bpp=1%% "
                           "(repeatable; defaults: " + " ".join(
                               f"{k}={str(m.tolerance).replace('%', '%%')}" for k, m in registry.METRICS.items()) + ")")
    comp.add_argument("--allow-missing", action="store_true",
                      help="compare even when NEW lacks codecs or settings that BASE has (refused by default)")
    comp.add_argument("--allow-different-data", action="store_true",
                      help="compare runs of different datasets or preprocessing on the images they share")
    comp.add_argument("--json", metavar="PATH", help="also write the comparison as JSON ('-' for stdout only)")
    comp.add_argument("--all", action="store_true", help="list unchanged metrics too")
    bootstrap_options(comp)

    rep = sub.add_parser("report", help="self-contained HTML report (and Markdown): R-D plots with intervals, "
                                        "leaderboard, visual comparison grid, provenance")
    rep.add_argument("run_dir", metavar="RUN_DIR")
    rep.add_argument("--out", help="folder (default: RUN_DIR/report)")
    rep.add_argument("--images", type=int, default=3, help="images in the comparison grid (default 3)")
    rep.add_argument("--grid-bpp", type=float, help="target rate of the grid (default: the anchor's lowest rate "
                                                    "on each image)")
    rep.add_argument("--anchor", help="anchor codec (default: jpeg)")
    rep.add_argument("--rates", default="0.1,0.25,0.5,1", help="bpps for the at-rate table")
    reference_option(rep)
    bootstrap_options(rep)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "plot":
            return cmd_plot(args)
        if args.command == "codecs":
            return cmd_codecs()
        if args.command == "decode":
            return cmd_decode(args)
        if args.command == "leaderboard":
            return cmd_leaderboard(args)
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "export":
            return cmd_export(args)
    except (ValueError, FileNotFoundError, FileExistsError, CodecUnavailable, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    build_parser().print_help()
    return 1


def _default_codec_specs() -> list:
    specs = []
    for name in DEFAULT_CODECS:
        try:
            load_codec_class(name).check_available()
        except CodecUnavailable as exc:
            print(f"note: skipping {name}: {exc}", file=sys.stderr)
            continue
        specs.append(parse_codec_spec(name))
    return specs


def cmd_run(args) -> int:
    from benchmark.results import read_config
    from benchmark.runner import RunConfig, create_run, execute

    if args.resume:
        run_dir = pathlib.Path(args.resume)
        if not (run_dir / "config.json").exists():
            raise FileNotFoundError(f"{run_dir} is not a cmcbench run (no config.json).")
        print(f"Resuming {run_dir}")
    else:
        kind = args.dataset.partition(":")[0]
        preprocess = args.preprocess if args.preprocess != "auto" else ("cmc2021" if kind in ("cub", "coco") else "none")
        specs = [parse_codec_spec(s) for s in args.codec] if args.codec else _default_codec_specs()
        for spec in specs:
            load_codec_class(spec.target).check_available()
        inception = {"enabled": args.metrics == "inception", "weights": args.inception_weights,
                     "sha256": args.inception_sha256, "device": args.device, "batch_size": args.batch_size,
                     "isc_splits": args.isc_splits, "kid_subsets": args.kid_subsets,
                     "kid_subset_size": args.kid_subset_size, "seed": 2020, "patch_fid": args.patch_fid}
        config = RunConfig(dataset=args.dataset, split=args.split, preprocess=preprocess, limit=args.limit,
                           max_pixels=args.max_pixels, codecs=specs, inception=inception,
                           caption_embedder=args.caption_embedder, timeout=args.timeout,
                           image_metrics={"ms_ssim": args.ms_ssim, "lpips": args.lpips},
                           add_metrics=[registry.get(m).column for m in args.add_metric],
                           save_reconstructions=args.save_reconstructions, save_bitstreams=args.save_bitstreams)
        run_dir = create_run(config, args.out, args.name, progress=not args.no_progress)
        print(f"Run {run_dir.name}: {args.dataset}, codecs {', '.join(s.label for s in specs)}")
        for codec in read_config(run_dir)["codecs"]:
            for note in codec.get("notes", []):
                print(f"note: {codec['label']}: {note}", file=sys.stderr)
    outcome = execute(run_dir, jobs=args.jobs, progress=not args.no_progress, executor=args.executor,
                      ray_address=args.ray_address, resume=bool(args.resume), resume_anyway=args.resume_anyway,
                      isolate=True)
    _print_summary(run_dir)
    stage = outcome.inception
    if stage["status"] == "ok":
        print(f"Inception passes: {outcome.passes['reference']} originals + {outcome.passes['reconstruction']} "
              f"reconstructions (weights sha256 {stage['weights_sha256'][:12]}, reference features cached in "
              f"{stage['reference_dir']})")
    elif stage["status"] == "unavailable":
        print(f"IS, FID, KID and IPD are unavailable (left empty, not zero): {stage['reason']}")
    for name, state in read_config(run_dir).get("image_metrics", {}).items():
        if state["status"] == "unavailable":
            print(f"{name.upper().replace('_', '-')} is unavailable (left empty, not zero): {state['reason']}")
    if not args.no_plots:
        from benchmark.plots import rd_plots
        from benchmark.results import load_run

        _, summary = load_run(run_dir)
        plots = rd_plots(summary, run_dir / "plots", log_x=args.log_x)
        if plots:
            print(f"R-D plots:   {run_dir / 'plots'} ({', '.join(sorted({p.stem for p in plots}))})")
        else:
            print("R-D plots:   none (no setting has a successful row)")
    print(f"Results:     {run_dir / 'images'} (per image), {run_dir / 'summary.parquet'} (per setting)")
    print(f"Load them:   from benchmark.results import load_run; images, summary = load_run({str(run_dir)!r})")
    print(f"Rows: {outcome.n_rows}, failed: {outcome.n_failed}, time: {outcome.seconds:.1f} s")
    if outcome.n_failed:
        print("Failed rows by reason:")
        for reason, count in sorted(outcome.failed_reasons.items(), key=lambda kv: -kv[1])[:20]:
            print(f"  {count:6d}  {reason}")
        return 0 if args.allow_failures else EXIT_FAILED_ROWS
    return 0


def _print_summary(run_dir: pathlib.Path) -> None:
    import pandas as pd

    summary = pd.read_parquet(run_dir / "summary.parquet")
    if "rate_n_matched" in summary:
        for row in summary[summary.rate_n_matched.notna()].itertuples():
            print(f"rate matching {row.codec} target {row.setting_label} bpp: {int(row.rate_n_matched)} of "
                  f"{int(row.n_ok)} images within tolerance ({row.rate_match_counts}); mean achieved "
                  f"{row.bpp:.4g} bpp" + ("" if row.rate_n_matched == row.n_ok else " - NOT the target"))
    cols = [c for c in ["codec", "setting_label", "n_ok", "n_failed", "bpp", "psnr", "ms_ssim", "lpips",
                        "inception_score", "fid", "kid", "ipd"] if c in summary.columns]
    with pd.option_context("display.max_rows", 200, "display.width", 160, "display.float_format", "{:.4f}".format):
        print(summary[cols].rename(columns={"setting_label": "setting"}).to_string(index=False))


def cmd_plot(args) -> int:
    from benchmark.plots import rd_plots
    from benchmark.results import load_run

    from benchmark.leaderboard import with_references
    from benchmark.references import load_references

    run_dir = _check_run(args.run_dir)
    _, summary = load_run(run_dir)
    if summary.empty:
        raise ValueError(f"{run_dir} has no summary rows yet.")
    for m in args.metric or []:
        registry.get(m)
    refs, warnings = load_references(args.reference, sorted(set(summary.dataset.dropna().astype(str))))
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    plots = rd_plots(with_references(summary, refs), args.out or run_dir / "plots", log_x=args.log_x,
                     metrics=args.metric)
    for p in plots:
        print(p)
    if not plots:
        failed = int(summary.n_failed.sum()) if "n_failed" in summary else 0
        print(f"No plots: no setting has a value to plot ({failed} failed rows; see `python bench.py report "
              f"{run_dir}` for their reasons).", file=sys.stderr)
    return 0


def cmd_decode(args) -> int:
    import json

    import numpy as np
    from PIL import Image

    from benchmark.config import RunConfig, codec_context

    info = json.loads((pathlib.Path(args.run_dir) / "config.json").read_text())
    config = RunConfig.from_json(info["config"])
    spec = next((c for c in config.codecs if c.label == args.codec), None)
    if spec is not None and spec.codec_class().produced_outside:
        raise ValueError(f"{args.codec} was produced outside cmcbench (precomputed): there is no decoder to run.")
    if spec is None:
        raise ValueError(f"Run has no codec labelled {args.codec!r}: {', '.join(c.label for c in config.codecs)}.")
    decoder = spec.build()
    decoder.setup(codec_context(config, info["dataset"]["split"]))
    declared = next(c for c in info["codecs"] if c["label"] == args.codec)["side_information"]
    if decoder.side_information() != declared:
        raise RuntimeError("The side information rebuilt here differs from the one the run declared.")
    image = decoder.decode(pathlib.Path(args.bitstream).read_bytes())
    Image.fromarray(np.asarray(image)).save(args.output)
    print(args.output)
    return 0


def cmd_codecs() -> int:
    for name in available_codecs():
        try:
            cls = load_codec_class(name)
            cls.check_available()
            status = "available"
        except Exception as exc:  # noqa: BLE001 - report, do not fail the listing
            status = f"unavailable: {exc}"
            cls = None
        if cls is not None:
            sweep = ",".join(str(v) for v in cls.default_sweep)
            opts = " ".join(f"{k}={v}" for k, v in cls.defaults.items())
            print(f"{name:16s} {cls.rate_parameter}={sweep}\n{'':16s} options: {opts or '-'}; {status}")
        else:
            print(f"{name:16s} {status}")
    return 0


def _rates(text: str) -> list[float]:
    try:
        rates = [float(v) for v in text.split(",") if v]
    except ValueError:
        raise ValueError(f"--rates must be comma-separated bpps, not {text!r}.") from None
    if not rates or any(r <= 0 for r in rates):
        raise ValueError(f"--rates must be positive bpps, not {text!r}.")
    return rates


def _check_run(path: str) -> pathlib.Path:
    run_dir = pathlib.Path(path)
    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{run_dir} is not a cmcbench run (no config.json).")
    return run_dir


def cmd_leaderboard(args) -> int:
    from benchmark import leaderboard

    run_dirs = [_check_run(p) for p in args.run_dirs]
    board = leaderboard.build(run_dirs, anchor=args.anchor, rates=_rates(args.rates), metrics=args.metric,
                              resamples=args.bootstrap, seed=args.seed, level=args.level, bd_method=args.bd_method,
                              references=args.reference, allow_mixed=args.allow_mixed)
    print(leaderboard.render(board, "md"))
    written = leaderboard.write(board, args.out or run_dirs[0] / "leaderboard", args.format or leaderboard.FORMATS)
    print("Written: " + ", ".join(str(p) for p in written))
    return 0


def cmd_compare(args) -> int:
    from benchmark import compare

    base, new = _check_run(args.base), _check_run(args.new)
    tolerances = compare.parse_tolerances(args.tolerance)
    try:
        result = compare.compare_runs(base, new, tolerances, args.bootstrap, args.seed, args.level,
                                      allow_missing=args.allow_missing, allow_different_data=args.allow_different_data)
    except compare.NotComparable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOT_COMPARABLE
    if args.json == "-":
        print(compare.dumps(result))
    else:
        print(compare.render_text(result, args.all))
        if args.json:
            pathlib.Path(args.json).write_text(compare.dumps(result))
    return EXIT_REGRESSION if len(result.regressions) else 0


def cmd_report(args) -> int:
    from benchmark.report import build_report

    run_dir = _check_run(args.run_dir)
    html_path, md_path = build_report(run_dir, args.out, n_images=args.images, target_bpp=args.grid_bpp,
                                      resamples=args.bootstrap, seed=args.seed, anchor=args.anchor,
                                      rates=_rates(args.rates), references=args.reference)
    print(f"Report: {html_path} (self-contained), {md_path}")
    return 0


def cmd_export(args) -> int:
    from benchmark.references import export_compressai

    run_dir = _check_run(args.run_dir)
    for path in export_compressai(run_dir, args.out_dir):
        print(path)
    return 0
