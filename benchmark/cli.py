"""Command line: `python bench.py` runs the default benchmark; subcommands run, plot and codecs."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import shlex
import shutil
import sys

from benchmark import command
from benchmark.codecs.codec import CodecUnavailable

from benchmark.codecs.codec_spec import available_codecs, load_codec_class, parse_codec_spec
from benchmark.data.imageio import DEFAULT_MAX_PIXELS
from metrics import defaults, registry
from metrics.suggest import did_you_mean

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


EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process that SIGTERM ended


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, `kill PID`), handled as Ctrl-C is: finished work kept, workers stopped."""


STOPPED: list[int] = []  # the stop signals this process's command received


def _on_sigterm(signum, frame):
    STOPPED.append(signum)
    raise Terminated()


def _on_sigint(signum, frame):
    STOPPED.append(signum)
    raise KeyboardInterrupt()


def _stop_where_ignored(previous):
    """sys.unraisablehook while a command runs: a stop signal whose KeyboardInterrupt was raised where Python
    ignores exceptions (an at-fork callback, a finalizer) was printed as a traceback and then lost, so the command
    went on; it is delivered again instead, to the code that runs next."""
    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and STOPPED:
            import threading

            # sent again once this hook has returned (os.kill and signal.raise_signal would run the handler in it)
            again = threading.Timer(0.05, os.kill, (os.getpid(), STOPPED.pop()))
            again.daemon = True
            again.start()
        else:
            previous(unraisable)

    return hook


def _interrupted(terminated: bool) -> int:
    print("\nTerminated." if terminated else "\nInterrupted.", file=sys.stderr)
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def os_error_sentence(exc: OSError) -> str:
    """A full disk, a read-only folder or a permission error as one sentence naming the path."""
    import errno

    where = exc.filename or "a file"
    name = os.path.basename(str(where))
    if name.startswith(".") and name.endswith(".tmp"):  # a file being written whole: name where it was going
        where = os.path.join(os.path.dirname(str(where)), name[1:].rsplit(".", 2)[0])
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device while writing {where}"
    if exc.errno == errno.EROFS:
        return f"{where} is on a read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied writing {where}"
    if exc.errno == errno.EEXIST:  # mkdir(exist_ok=True) over a file: --out FILE
        return f"{where} is a file where a folder is needed"
    if exc.errno == errno.ENOENT:
        return f"no such file or folder: {where}"
    return f"{exc.strerror or exc} ({where})"


class Parser(argparse.ArgumentParser):
    """argparse, with a mistake reported in one line (the usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, not {text!r}")
    return value


def path(text: str) -> str:
    """A path option: `~` is expanded here, so every path the user gives works as in a shell."""
    return os.path.expanduser(text)


def stage_option(parser: argparse.ArgumentParser, stage: registry.Stage) -> None:
    """A metric file's network option, as its Stage declares it."""
    if stage.toggle:
        parser.add_argument(stage.flag, action=argparse.BooleanOptionalAction, default=stage.cli_default,
                            help=stage.help)
        return
    parser.add_argument(stage.flag, default=stage.cli_default, metavar=stage.metavar,
                        type=path if stage.file_choice else None, help=stage.help)


RATES = ",".join(f"{r:g}" for r in defaults.RATES)  # the at-rate table's bpps as the command line writes them


def figure_size(text: str) -> tuple[float, float]:
    """'3.5,2.6' (or '3.5x2.6') -> (3.5, 2.6) inches."""
    try:
        width, height = (float(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size W,H in inches, e.g. 3.5,2.6") from None
    if not (0 < width <= 50 and 0 < height <= 50):
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be in (0, 50] inches")
    return width, height


def reference_option(p) -> None:
    p.add_argument("--reference", action="append", default=[], metavar="FILE", type=path,
                   help="a published R-D curve to show beside the run (repeatable): CompressAI results JSON, or a "
                        "long CSV with columns codec, bpp, metric, value[, dataset, source]")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cmcbench" if command() == "cmcbench" else "bench.py",
                    description="cmcbench: benchmark semantic image codecs against JPEG, JPEG 2000 and CMC.",
                    epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", parser_class=Parser)

    run = sub.add_parser("run", help="sweep codecs over a dataset (the default command)", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    # the help in sections; the parser is the same whatever section an option is listed in
    # three-letter names keep each option's continuation lines where run.add_argument put them
    src = run.add_argument_group("what to evaluate")
    cod = run.add_argument_group("codecs")
    met = run.add_argument_group("metrics and their networks")
    exe = run.add_argument_group("execution and resuming")
    out = run.add_argument_group("output")
    src.add_argument("--dataset", default="sample", metavar="SPEC",
                     help="a named dataset (kodak, clic2020-professional-valid, div2k-valid, coco2014-val, "
                          "cub-200-2011, ...: `bench.py datasets list`), sample, sample:N (N generated images), "
                          "folder:PATH or PATH, cub:PATH (AttnGAN layout), coco:PATH (default: sample)")
    src.add_argument("--data-root", type=path, metavar="DIR",
                     help="where named datasets live (default: $CMCBENCH_DATA, else ~/.cache/cmcbench/datasets)")
    src.add_argument("--allow-modified-dataset", action="store_true",
                     help="run on a named dataset whose unpacked files differ from those its fetch wrote (each "
                          "difference is recorded with the run); without it such a dataset is refused")
    src.add_argument("--image-list", type=path, metavar="FILE",
                     help="evaluate only the images this file lists (one id or relative path per line), e.g. an "
                          "MS-COCO 30k list; its sha256 is recorded with the run")
    src.add_argument("--protocol", metavar="NAME",
                     help="a paper's evaluation protocol: cmc2021, hific, perco, cmc-bench (TOPIQ through pyiqa), "
                          "semantic (task agreement, zero-shot, retrieval from text); sets "
                          "the preprocessing, the FID protocol and the metrics it scores with, recorded with the run")
    src.add_argument("--split", help="dataset split: sample test/train/all (default test); cub test/train "
                                     "(AttnGAN) or official-test/official-train; coco val2014/train2014/val2017/train2017")
    src.add_argument("--preprocess", default="auto",
                     help="none, cmc2021 (CUB bbox crop + 256x256, COCO 256x256) or resize-N; auto = cmc2021 "
                          "for cub and coco, none otherwise")
    cod.add_argument("--codec", action="append", metavar="SPEC",
                     help=f"codec to run, repeatable (default: every available one of {', '.join(DEFAULT_CODECS)})")
    src.add_argument("--limit", type=positive_int, help="use only the first N images of the split")
    exe.add_argument("--jobs", "-j", type=positive_int, help="worker processes for codec work (default: all cores)")
    exe.add_argument("--max-pending", type=positive_int, metavar="IMAGES",
                     help="most images whose pixels wait for the network stages (Inception, DINOv2, CLIP) or are on "
                          "their way from codec work; the workers pause at the bound (default: what fits in "
                          f"{100 * defaults.PENDING_MEMORY_SHARE:g}%% of this machine's memory)")
    exe.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local (default): a process pool on this machine; ray: Ray tasks on a cluster "
                          "(--ray-address) or a local Ray with --jobs CPUs (pip install -e '.[ray]')")
    exe.add_argument("--ray-address", metavar="ADDR", help="existing Ray cluster to join, e.g. ray://head:10001 or "
                                                           "auto (default: start a local one)")
    out.add_argument("--out", default="results", type=path, help="root folder for runs (default: results)")
    out.add_argument("--name", help="run id and folder name (default: UTC time and config hash)")
    exe.add_argument("--resume", metavar="RUN_DIR", type=path,
                     help="finish an interrupted run with the options it was started with (giving others is an error); "
                          "refused if the code, packages, codecs or weights changed")
    exe.add_argument("--redo-damaged", action="store_true",
                     help="with --resume: redo the tasks whose shards or feature files fail their checksum (changed, "
                          "truncated or zeroed on disk) instead of stopping at the first")
    exe.add_argument("--resume-anyway", action="store_true",
                     help="with --resume: finish the run even though its provenance changed; the rows it adds "
                          "carry the new provenance, and config.json records the change")
    cod.add_argument("--timeout", type=positive_float, default=defaults.TIMEOUT_S,
                     help=f"seconds one encode or decode may take (default {defaults.TIMEOUT_S:g})")
    src.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                     help="refuse larger images as decompression bombs (default %(default)s)")
    out.add_argument("--save-reconstructions", action="store_true",
                     help="also write every decoded image as PNG under RUN/outputs/<codec>/<setting>/ (a valid precomputed DIR)")
    met.add_argument("--metrics", choices=["inception", "none"], default="inception",
                     help="inception (default): also IS, FID, KID and IPD from torch-fidelity's InceptionV3; "
                          "none: bpp and PSNR only (MS-SSIM, LPIPS and caption similarity off too, unless their own "
                          "flags ask for them)")
    met.add_argument("--device", default=defaults.DEVICE,
                     help="device for the networks: auto (CUDA when present), cpu, cuda")
    met.add_argument("--batch-size", type=positive_int, default=defaults.BATCH_SIZE,
                     help=f"Inception batch size (default {defaults.BATCH_SIZE})")
    cod.add_argument("--codec-batch", type=positive_int, default=None, metavar="N",
                     help="images per batched encode/decode call, for codecs with the batch protocol (default: each "
                          "codec's own, e.g. 8 for model-backed CMC); execution only: the rows do not depend on it")
    for stage in registry.STAGES.values():  # MS-SSIM, LPIPS, DISTS, LPIPS-VGG, CLIP: each declared in its metric file
        if stage.home == "image_metrics":
            stage_option(met, stage)
    for option in registry.OPTIONS.values():  # a metric file's further options (KID's, pyiqa's), declared there
        if option.switch:
            met.add_argument(option.flag, action="store_true", help=option.help)
            continue
        met.add_argument(option.flag, default=option.cli_default, metavar=option.metavar, help=option.help,
                         action="append" if option.append else "store", type=positive_int if option.positive
                         else int if option.integer else path if option.file or option.path else None)
    for stage in registry.STAGES.values():  # each metric file's own network option, declared in its file
        if not stage.home:
            stage_option(met, stage)
    met.add_argument("--add-metric", action="append", default=[], metavar="NAME",
                     help="also compute a metric that is off by default (repeatable): "
                          + ", ".join(m.column for m in registry.METRICS.values() if not m.default and m.column != "patch_fid")
                          + "; or a group of them: " + ", ".join(registry.groups()))
    out.add_argument("--save-bitstreams", action="store_true",
                     help="also write every bitstream under RUN/outputs/<codec>/<setting>/<image id>.bin")
    out.add_argument("--log-x", action="store_true", default=None,
                     help="log-scale bpp axis in the R-D plots (default: when the largest rate is at least 10x the smallest)")
    out.add_argument("--no-plots", action="store_true", help="skip the R-D plots")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    out.add_argument("--verbose", "-v", action="store_true",
                     help="show libraries' own progress bars, warnings and log messages (hidden by default)")
    out.add_argument("--allow-failures", action="store_true", help="exit 0 even if some rows failed")
    out.add_argument("--track", action="append", default=[], metavar="TRACKER",
                     help="also send the finished run to an experiment tracker (repeatable): mlflow[:URI] (default: a "
                          "SQLite store in OUT/mlflow), tensorboard[:DIR] (default OUT/tensorboard/RUN), wandb[:PROJECT] "
                          "(offline, files in OUT/wandb); each needs its extra, e.g. pip install -e '.[mlflow]'")

    plot = sub.add_parser("plot", help="draw R-D curves (PNG, SVG and PDF) of one or more runs")
    plot.add_argument("run_dirs", metavar="RUN_DIR", type=path, nargs="+",
                      help="runs whose curves share the figures (a codec in several is labelled with its run)")
    plot.add_argument("--log-x", action="store_true", default=None,
                      help="log-scale bpp axis (default: when the largest rate is at least 10x the smallest)")
    plot.add_argument("--metric", action="append", help="only these summary columns (default: every metric present)")
    plot.add_argument("--out", type=path, help="folder for the plots (default: RUN_DIR/plots; needed for several "
                                               "runs)")
    plot.add_argument("--style", choices=["screen", "paper"], default="screen",
                      help="screen (default): wide, legend beside the axes; paper: one column of a two-column paper "
                           "(3.5 in, 8 pt, legend below, fonts embedded in the PDF)")
    plot.add_argument("--title", help="the figure title instead of the generated one ('' for none)")
    plot.add_argument("--size", type=figure_size, metavar="W,H", help="figure size in inches, e.g. 3.5,2.6")
    plot.add_argument("--font-size", type=float, metavar="PT", help="text size in points")
    plot.add_argument("--allow-mixed", action="store_true",
                      help="plot runs of different datasets or preprocessing together, each codec labelled with its "
                           "dataset")
    reference_option(plot)

    export = sub.add_parser("export", help="write a run's per-setting means as published-curve files")
    export.add_argument("run_dir", metavar="RUN_DIR", type=path)
    export.add_argument("out_dir", metavar="OUT_DIR", type=path)
    export.add_argument("--format", choices=["compressai", "metrics"], default="compressai",
                        help="compressai (default): one CompressAI results JSON per codec; metrics: the flat "
                             "metrics.json and long-form rd.csv that DVC, MLflow and CI read (a run writes them too)")
    export.add_argument("--anchor", help="with --format metrics: the codec BD-rates are against (default: jpeg)")

    dec = sub.add_parser("decode", help="decode one bitstream file with a run's codec (its bytes and the run's "
                                        "declared side information only) and write the image as PNG")
    dec.add_argument("run_dir", metavar="RUN_DIR", type=path)
    dec.add_argument("codec", metavar="CODEC_LABEL")
    dec.add_argument("bitstream", metavar="FILE", type=path)
    dec.add_argument("-o", "--output", required=True, type=path,
                     help="the decoded image: a .png file (or .ppm, .bmp, .tif: lossless); its folder is made")

    sub.add_parser("codecs", help="list codecs, their rate parameter, default sweep and availability")
    data = sub.add_parser("datasets", help="named datasets: list them, fetch one (download, verify, unpack), or "
                                           "draw an image list")
    data_sub = data.add_subparsers(dest="datasets_command", parser_class=Parser)
    for name, text in (("list", "name, images, size on disk, present or not, where, how it is checked"),
                       ("fetch", "download (resuming a partial file), verify the checksum, unpack"),
                       ("image-list", "write a seeded random image list, e.g. MS-COCO 30k from coco2014-val")):
        cmd = data_sub.add_parser(name, help=text)
        cmd.add_argument("--data-root", "--root", dest="data_root", type=path, metavar="DIR",
                         help="where named datasets live (default: $CMCBENCH_DATA, else ~/.cache/cmcbench/datasets)")
        if name != "list":
            cmd.add_argument("name", help="a named dataset (bench.py datasets list)")
        if name == "fetch":
            cmd.add_argument("--no-progress", action="store_true", help="no progress bar")
        if name == "image-list":
            cmd.add_argument("--draw", type=positive_int, default=30000, help="images to draw (default 30000)")
            cmd.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
            cmd.add_argument("--out", type=path, required=True, help="the list file to write")

    def bootstrap_options(p):
        p.add_argument("--bootstrap", type=non_negative_int, default=defaults.BOOTSTRAP_RESAMPLES, metavar="N",
                       help="bootstrap resamples over images for the intervals (default "
                            f"{defaults.BOOTSTRAP_RESAMPLES}; 0: no intervals)")
        p.add_argument("--seed", type=int, default=defaults.BOOTSTRAP_SEED,
                       help=f"bootstrap seed (default {defaults.BOOTSTRAP_SEED})")
        p.add_argument("--level", type=float, default=defaults.BOOTSTRAP_LEVEL,
                       help=f"interval level (default {defaults.BOOTSTRAP_LEVEL})")

    board = sub.add_parser("leaderboard", help="tables (Markdown, LaTeX, CSV, HTML): metrics at chosen rates, "
                                               "BD-rate and BD-metric against an anchor, every setting with intervals")
    board.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", type=path)
    board.add_argument("--anchor", help="codec label to compare against (default: jpeg)")
    board.add_argument("--rates", default=RATES, help=f"bpps for the at-rate table (default {RATES})")
    board.add_argument("--metric", action="append", help="only these metrics (repeatable; default: all present)")
    board.add_argument("--bd-method", default="akima", choices=["akima", "pchip", "cubic"],
                       help="interpolation for BD (default akima)")
    board.add_argument("--format", action="append", choices=["md", "tex", "csv", "html"],
                       help="files to write (repeatable; default all four); Markdown is also printed")
    board.add_argument("--out", type=path, help="folder for the tables (default: FIRST_RUN/leaderboard)")
    board.add_argument("--allow-mixed", action="store_true",
                       help="table runs of different datasets or preprocessing together (refused by default), "
                            "each codec labelled with its dataset")
    reference_option(board)
    bootstrap_options(board)

    comp = sub.add_parser("compare", help="per codec, setting and metric: NEW - BASE with a paired bootstrap "
                                          "interval; exit 4 if NEW is worse beyond tolerance")
    comp.add_argument("base", metavar="BASE_RUN", type=path)
    comp.add_argument("new", metavar="NEW_RUN", type=path)
    comp.add_argument("--tolerance", action="append", metavar="METRIC=VALUE",
                      help="allowed worsening at equal rate, absolute or relative with %%, e.g. fid=1.0 or bpp=1%% "
                           "(repeatable; defaults: " + " ".join(
                               f"{k}={str(m.tolerance).replace('%', '%%')}" for k, m in registry.METRICS.items()) + ")")
    comp.add_argument("--allow-missing", action="store_true",
                      help="compare even when NEW lacks codecs or settings that BASE has (refused by default)")
    comp.add_argument("--allow-different-data", action="store_true",
                      help="compare runs of different datasets or preprocessing on the images they share")
    comp.add_argument("--json", metavar="PATH", type=path, help="also write the comparison as JSON ('-' for stdout only)")
    comp.add_argument("--all", action="store_true", help="list unchanged metrics too")
    comp.add_argument("--bd-method", default="akima", choices=["akima", "pchip", "cubic"],
                      help="interpolation for the BD numbers the verdict rests on (default akima; recorded with each); "
                           "the others' disagreement is part of the curve-fit error either way")
    bootstrap_options(comp)

    track = sub.add_parser("track", help="send a finished run to MLflow, TensorBoard or W&B")
    track.add_argument("run_dir", metavar="RUN_DIR", type=path)
    track.add_argument("--to", action="append", required=True, metavar="TRACKER",
                       help="mlflow[:URI], tensorboard[:DIR] or wandb[:PROJECT] (repeatable; defaults beside the run)")

    hist = sub.add_parser("history", help="a model's quality across commits: runs of one dataset in commit order, "
                                          "BD-rate against an anchor with intervals, the commits where it changed")
    hist.add_argument("runs", metavar="RUN_OR_DIR", nargs="+", type=path,
                      help="runs, or folders of runs (e.g. results/), of one dataset and protocol")
    hist.add_argument("--anchor-run", metavar="RUN", help="BD-rate of each codec against the same codec in this run "
                                                          "(folder or run id; default: the oldest run shown)")
    hist.add_argument("--anchor", metavar="CODEC", help="BD-rate against this codec in each run instead (e.g. jpeg)")
    hist.add_argument("--codec", action="append", default=[], help="only these codec labels (repeatable)")
    hist.add_argument("--metric", action="append", help="metrics to follow (repeatable; default psnr)")
    hist.add_argument("--since", metavar="DATE|SHA", help="runs from this commit date (YYYY-MM-DD) or commit on")
    hist.add_argument("--bd-method", default="akima", choices=["akima", "pchip", "cubic"],
                      help="interpolation for BD (default akima)")
    hist.add_argument("--tolerance", action="append", metavar="METRIC=VALUE", help="as for compare")
    hist.add_argument("--out", type=path, default="history",
                      help="folder for history.csv and a plot per metric (default: ./history)")
    bootstrap_options(hist)

    rep = sub.add_parser("report", help="self-contained HTML report (and Markdown): R-D plots with intervals, "
                                        "leaderboard, visual comparison grid, provenance")
    rep.add_argument("run_dir", metavar="RUN_DIR", type=path)
    rep.add_argument("--out", type=path, help="folder (default: RUN_DIR/report)")
    rep.add_argument("--images", type=non_negative_int, default=3, help="images in the comparison grid (default 3)")
    rep.add_argument("--grid-bpp", type=positive_float, help="target rate of the grid (default: the anchor's lowest rate "
                                                    "on each image)")
    rep.add_argument("--anchor", help="anchor codec (default: jpeg)")
    rep.add_argument("--rates", default=RATES, help=f"bpps for the at-rate table (default {RATES})")
    reference_option(rep)
    bootstrap_options(rep)
    return parser


# Options that shape a run; with --resume the run's own recorded values are used, so giving any is a mistake.
RUN_SHAPING = ("dataset", "data_root", "image_list", "protocol", "split", "preprocess", "codec", "limit",
               "max_pixels", "save_reconstructions", "metrics", "batch_size", "add_metric", "save_bitstreams", "name",
               "timeout",
               "codec_batch", "allow_modified_dataset", *registry.STAGES, *(o.dest for o in registry.OPTIONS.values()))


def option_entries(args, protocol=None) -> dict:
    """The parts of the run's configuration that metric files' options fill, each Option naming its place: 'iqa'
    (RunConfig.iqa) or 'entry.key' ({entry: {key: value}}); with a protocol, as it joins them. Checked: one
    sentence for a value that can never work."""
    given = {o.dest: getattr(args, o.dest) for o in registry.OPTIONS.values()}
    given = protocol.given(given) if protocol else given
    out: dict = {}
    for option in registry.OPTIONS.values():
        value = option.configured(given[option.dest], out)
        entry, dot, key = option.config.partition(".")
        if dot:
            out.setdefault(entry, {})[key] = value
        else:
            out[entry] = value
    return out


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """The command line, read; an option the subcommand does not know is named with the subcommand, its --help and
    the closest option it has ('bench.py export: unrecognized arguments: --ouput'), not as the top level's."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = parser  # the (sub)command the mistake was made in: 'datasets fetch', not 'datasets'
        while action := next((a for a in sub._actions if isinstance(a, argparse._SubParsersAction)
                              and getattr(args, a.dest, None) in a.choices), None):
            sub = action.choices[getattr(args, action.dest)]
        # its options, and its positional arguments as a flag would spell them ('out-dir' for OUT_DIR), without
        # the dashes every flag shares
        known = {flag[2:]: repr(flag) for action in sub._actions for flag in action.option_strings if flag[:2] == "--"}
        known.update({a.dest.replace("_", "-"): f"{a.metavar or a.dest.upper()} (given without a flag)"
                      for a in sub._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)})
        close = did_you_mean(extra[0].partition("=")[0][2:], known, known).strip() if extra[0][:2] == "--" else ""
        sub.error(f"unrecognized arguments: {' '.join(extra)}{'; ' + close if close else ''}")
    return args


def main(argv: list[str] | None = None) -> int:
    from benchmark.run import console

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]
    args = parse_arguments(argv)
    console.quiet_third_party(getattr(args, "verbose", False))
    if getattr(args, "no_progress", False):
        console.disable_progress()
    commands = {"run": cmd_run, "plot": cmd_plot, "codecs": lambda _: cmd_codecs(), "decode": cmd_decode,
                "leaderboard": cmd_leaderboard, "compare": cmd_compare, "report": cmd_report, "export": cmd_export,
                "datasets": cmd_datasets, "history": cmd_history, "track": cmd_track}
    if args.command not in commands:
        build_parser().print_help()
        return 1
    import signal
    import threading

    in_main = threading.current_thread() is threading.main_thread()
    previous = (signal.signal(signal.SIGTERM, _on_sigterm), signal.getsignal(signal.SIGINT)) if in_main else None
    if in_main and previous[1] is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _on_sigint)  # Ctrl-C is KeyboardInterrupt from here on
    STOPPED.clear()
    unraisable = sys.unraisablehook
    if in_main:
        sys.unraisablehook = _stop_where_ignored(unraisable)
    try:
        if not 0 < getattr(args, "level", 0.5) < 1:  # the bootstrap's confidence level, told before any resample
            raise ValueError(f"--level {args.level:g}: a confidence level lies between 0 and 1, e.g. 0.95.")
        return commands[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError, CodecUnavailable, RuntimeError, ImportError) as exc:
        if STOPPED:  # an error a stop caused (Ctrl-C inside a library's import: 'initialization failed') is the stop
            return _interrupted(STOPPED[0] == signal.SIGTERM)
        # the system's own ('[Errno 17] File exists: ...') as a sentence; our own messages as they are
        said = f"{os_error_sentence(exc)}." if isinstance(exc, OSError) and exc.errno and exc.filename else exc
        print(f"error: {said}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `bench.py ... | head`: the reader left; say so once, not as a file error
        with contextlib.suppress(OSError, ValueError):  # nothing more goes to the closed pipe, at exit either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("error: the output was closed before it was all written (a pipe into head?).", file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk, a read-only or unwritable folder
        if STOPPED:
            return _interrupted(STOPPED[0] == signal.SIGTERM)
        print(f"error: {os_error_sentence(exc)}.", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        return _interrupted(isinstance(exc, Terminated))
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])
            sys.unraisablehook = unraisable


def _default_codec_specs(dataset: str) -> list:
    """Every built-in default codec that can run here and on this dataset; the others skipped with one note."""
    specs = []
    for name in DEFAULT_CODECS:
        cls = load_codec_class(name)
        try:
            cls.check_available()
        except CodecUnavailable as exc:
            print(f"note: skipping {name}: {exc}", file=sys.stderr)
            continue
        reason = cls.applicable({"dataset": dataset})
        if reason:
            print(f"note: skipping {name}: {reason}", file=sys.stderr)
            continue
        specs.append(parse_codec_spec(name))
    return specs


def _check_before_work(args) -> dict:
    """What can be checked from the arguments alone, before any file is written (one sentence each). Returns the
    parts of the run's configuration that metric files' options fill (`option_entries`)."""
    defaults = build_parser().parse_args(["run"])
    given = [name for name in RUN_SHAPING if getattr(args, name) != getattr(defaults, name)]
    if args.resume and given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        raise ValueError(f"--resume finishes a run with the options it was started with; drop {flags} (or start a "
                         "new run without --resume).")
    if args.resume_anyway and not args.resume:
        raise ValueError("--resume-anyway goes with --resume RUN_DIR.")
    if args.redo_damaged and not args.resume:
        raise ValueError("--redo-damaged goes with --resume RUN_DIR.")
    if args.executor == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ValueError("--executor ray needs Ray: pip install -e '.[ray]'.")
    for flag, value in [(s.flag, getattr(args, s.name)) for s in registry.STAGES.values()
                        if s.file_choice and getattr(args, s.name) not in ("auto", s.off)]:
        if value and not os.path.isfile(value):
            raise ValueError(f"{flag} {value}: no such file.")
    for name in args.add_metric:
        registry.expand(name)
    from benchmark.analysis.trackers import parse_target

    for target in args.track:
        parse_target(target)  # a tracker that is not installed is told before any work
    _check_device(args.device)
    per_image_metric_defaults(args)
    from benchmark.run import protocols

    return option_entries(args, protocols.get(args.protocol) if args.protocol else None)


def _check_device(device: str) -> None:
    """auto, cpu, cuda, cuda:N or mps; a GPU asked for by name must be there (told now, not mid-run)."""
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device):
        raise ValueError(f"--device {device!r}: use auto, cpu, cuda, cuda:N or mps.")
    if device in ("auto", "cpu"):
        return
    import torch

    if device.startswith("cuda") and (not torch.cuda.is_available() or
                                      int((device.split(":") + ["0"])[1]) >= torch.cuda.device_count()):
        raise ValueError(f"--device {device}: no such CUDA device here ({torch.cuda.device_count()} visible); use "
                         "--device auto or cpu.")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: MPS is not available here; use --device auto or cpu.")


def per_image_metric_defaults(args) -> None:
    """MS-SSIM, LPIPS and caption similarity are on by default and off with --metrics none ("bpp and PSNR only"),
    unless their own flags say otherwise; filled in after --resume has compared the flags with the defaults."""
    off = args.metrics == "none"
    for dest, entry in [*((s.name, s) for s in registry.STAGES.values()), *((o.dest, o) for o in
                                                                              registry.OPTIONS.values())]:
        if entry.off_with_metrics_none and getattr(args, dest) is None:
            setattr(args, dest, entry.off if off else entry.default)


def cmd_run(args) -> int:
    from benchmark.run.record import read_record
    from benchmark.run.runner import RunConfig, create_run, execute

    entries = _check_before_work(args)
    created_here = False
    if args.resume:
        run_dir = pathlib.Path(args.resume)
        if not (run_dir / "config.json").exists():
            raise FileNotFoundError(f"{run_dir} is not a cmcbench run (no config.json).")
        print(f"Resuming {run_dir}")
    else:
        from benchmark.run import protocols
        from benchmark.data.datasets import open_dataset

        protocol = protocols.get(args.protocol) if args.protocol else None
        if protocol and args.preprocess != "auto" and args.preprocess != protocol.preprocess:
            raise ValueError(f"--protocol {protocol.name} preprocesses with {protocol.preprocess}; drop --preprocess "
                             f"{args.preprocess} (or the protocol).")
        # a wrong path, name, split or image list is told before anything else
        dataset = open_dataset(args.dataset, args.split, args.data_root, args.image_list,
                               args.allow_modified_dataset)
        kind = dataset.kind
        chosen = protocol.preprocess if protocol else args.preprocess
        preprocess = chosen if chosen != "auto" else ("cmc2021" if kind in ("cub", "coco") else "none")
        specs = [parse_codec_spec(s) for s in args.codec] if args.codec else _default_codec_specs(
            f"{dataset.kind}:{dataset.root}" if dataset.named else args.dataset)
        inception = {"enabled": args.metrics == "inception", "device": args.device, "batch_size": args.batch_size,
                     **entries.pop("inception"), "seed": defaults.SEED,
                     **(protocol.inception_options() if protocol else {})}
        clip, stages, added = protocol.options(args, kind) if protocol else (args.clip, {}, [])
        stages.update({s.name: getattr(args, s.name) for s in registry.STAGES.values()
                       if not s.home and getattr(args, s.name) != s.default})
        config = RunConfig(dataset=args.dataset, split=args.split, preprocess=preprocess, limit=args.limit,
                           image_list=args.image_list, protocol=args.protocol, data_root=args.data_root,
                           allow_modified_dataset=args.allow_modified_dataset,
                           max_pixels=args.max_pixels, codecs=specs, inception=inception,
                           timeout=args.timeout, codec_batch=args.codec_batch,
                           image_metrics={**{s.name: getattr(args, s.name) for s in registry.STAGES.values()
                                             if s.home == "image_metrics"}, "clip": clip},
                           **entries, stages=stages,  # Inception's options popped, pyiqa's and others' here
                           add_metrics=list(dict.fromkeys(c for m in [*args.add_metric, *added]
                                                          for c in registry.expand(m))),
                           save_reconstructions=args.save_reconstructions, save_bitstreams=args.save_bitstreams)
        run_dir = create_run(config, args.out, args.name, progress=not args.no_progress, dataset=dataset)
        created_here = True
        record = read_record(run_dir)
        n = record.dataset.n_images
        print(f"Run {run_dir.name}: {record.dataset.name} ({record.dataset.split}, {n} image{'' if n == 1 else 's'}), "
              f"codecs {', '.join(s.label for s in specs)}")
        for note in dataset.notes:  # images without captions, an image list's repeats, ...
            print(f"note: {note}", file=sys.stderr)
        for codec in record.codecs:
            for note in codec.notes:
                print(f"note: {codec.label}: {note}", file=sys.stderr)
    try:
        outcome = execute(run_dir, jobs=args.jobs, progress=not args.no_progress, executor=args.executor,
                          ray_address=args.ray_address, resume=bool(args.resume), resume_anyway=args.resume_anyway,
                          isolate=True, redo_damaged=args.redo_damaged, max_pending=args.max_pending)
        _print_summary(run_dir)
        return _end_of_run(args, run_dir, outcome)
    except KeyboardInterrupt as exc:  # during the work, the summary or the plots: the resume command finishes it
        return _stopped(run_dir, created_here, "Terminated" if isinstance(exc, Terminated) else "Interrupted",
                        EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED)
    except Exception as exc:
        done = _finished_work(run_dir)
        if created_here and not done:
            shutil.rmtree(run_dir, ignore_errors=True)  # a failed start leaves no folder behind
        elif isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            raise RuntimeError(f"{os_error_sentence(exc)}; {done} finished shards are kept in {run_dir}: free space "
                               f"(or fix the permissions), then finish the run with: {command()} run --resume "
                               f"{run_dir}") from exc
        raise


def _finished_work(run_dir: pathlib.Path) -> int:
    from benchmark.run.results import shard_files

    return len(shard_files(run_dir, verify=False)) if run_dir.exists() else 0


def _stopped(run_dir: pathlib.Path, created_here: bool, what: str, code: int = EXIT_INTERRUPTED) -> int:
    from benchmark.run.run_folder import resume_command

    done = _finished_work(run_dir)
    if not done and created_here:
        shutil.rmtree(run_dir, ignore_errors=True)
        print(f"\n{what} before any work finished; nothing was kept ({run_dir} removed).", file=sys.stderr)
    else:
        print(f"\n{what}: {done} finished shards are kept in {run_dir}. Finish the run with:\n"
              f"  {resume_command(run_dir)}", file=sys.stderr)
    return code


SHOWN_REASONS = 20  # failure groups printed after a run; a count says how many more there are


def _end_of_run(args, run_dir: pathlib.Path, outcome) -> int:
    from benchmark.run.locations import located
    from benchmark.run.record import read_record

    stage = outcome.inception
    lines = []
    if stage["status"] == "ok":
        lines.append(f"Inception:   {outcome.passes['reference']} originals + {outcome.passes['reconstruction']} "
                     f"reconstructions through the network (weights sha256 {stage['weights_sha256'][:12]}; originals' "
                     f"features cached in {located(stage['reference_dir'], run_dir)})")
    elif stage["status"] == "unavailable":
        lines.append(f"Unavailable: IS, FID, KID, IPD (left empty, not zero): {stage['reason']}")
    record = read_record(run_dir)
    from benchmark.run import feature_stage
    from benchmark.run.feature_store import passes
    from metrics import registry

    for space in feature_stage.active(record):
        n, state = passes(run_dir, feature_stage.ledger(space)), record.stage(space.state)
        sha = f" (weights sha256 {state['weights_sha256'][:12]})" if state.get("weights_sha256") else ""
        lines.append(f"{space.label + ':':<12} {n['reference']} originals + {n['reconstruction']} reconstructions "
                     f"through {state.get('model', space.label)}{sha}")
    for space in registry.SPACES.values():  # a space with a config.json entry of its own (DINOv2's)
        state = {} if space.state in registry.STAGES or "." in space.state else record.stage(space.state)
        if state.get("status") == "unavailable":
            names = ", ".join(m.short for m in registry.in_space(space.name))
            lines.append(f"Unavailable: {names} (left empty, not zero): {state['reason']}")
    for stage in registry.STAGES.values():
        if record.stage(stage.name).get("status") == "unavailable":
            names = ", ".join(m.short for m in registry.METRICS.values() if m.state == stage.name)
            lines.append(f"Unavailable: {names} (left empty, not zero): {record.stage(stage.name)['reason']}")
    for name, state in [*record.image_metrics.items(), *record.iqa.items()]:
        if state["status"] == "unavailable":
            lines.append(f"Unavailable: {name.upper().replace('_', '-')} (left empty, not zero): {state['reason']}")
    lines += _no_bitstreams_saved(run_dir, record)
    if not args.no_plots:
        import time

        from benchmark.run import timings
        from benchmark.analysis.plots import metric_gaps, rd_plots, scored_rates
        from benchmark.run.results import load_summary

        start = time.perf_counter()
        summary = load_summary(run_dir)
        plots = rd_plots(summary, run_dir / "plots", log_x=args.log_x, gaps=metric_gaps([run_dir]),
                         scored=scored_rates([run_dir]))
        timings.add_to_last(run_dir, "plots", time.perf_counter() - start)
        lines.append(f"Plots:       {run_dir / 'plots'} ({', '.join(sorted({p.stem for p in plots}))})" if plots else
                     "Plots:       none (no setting has a successful row)")
    from benchmark.analysis import tracker_files

    written = tracker_files.write(run_dir)
    lines.append(f"Trackers:    {', '.join(map(str, written))} (dvc metrics diff; dvc plots diff -x bpp -y psnr)")
    lines.append(f"Results:     {run_dir / 'images'} (per image), {run_dir / 'summary.parquet'} (per setting); "
                 f"load_run({str(run_dir)!r}) in benchmark.results")
    lines.append(f"Next:        {command()} report {shlex.quote(str(run_dir))}   |   {command()} leaderboard "
                 f"{shlex.quote(str(run_dir))}")
    lines.append(f"Rows:        {outcome.n_rows}, {outcome.n_failed} failed, {outcome.seconds:.1f} s")
    print("\n".join(lines))
    tracked = _send_to_trackers(run_dir, args.track)
    if outcome.n_failed:
        print("Failed rows by codec and reason (the first image it failed on in brackets):")
        groups = sorted(outcome.failed_reasons.items(), key=lambda kv: (-kv[1][0], kv[0]))
        for (codec, reason), (count, image) in groups[:SHOWN_REASONS]:
            print(f"  {count:6d}  {codec}: {reason} ({image})")
        if len(groups) > SHOWN_REASONS:
            rest = groups[SHOWN_REASONS:]
            print(f"  ... and {len(rest)} more reasons ({sum(c for _, (c, _) in rest)} rows): the status and error "
                  f"columns of {run_dir / 'images'} hold every row's")
        return 0 if args.allow_failures else EXIT_FAILED_ROWS
    return 0 if tracked else 1


def _send_to_trackers(run_dir: pathlib.Path, targets: list[str]) -> bool:
    """Each tracker in turn; a failure is one sentence (the run is safe on disk, and how to send it again)."""
    from benchmark.analysis import trackers

    ok = True
    for text in targets:
        try:
            print(f"Tracked:     {trackers.send(run_dir, trackers.parse_target(text))}")
        except Exception as exc:  # noqa: BLE001 - the run is finished; say what failed and how to retry
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"error: the run is finished in {run_dir}, but sending it to {text} failed: {detail}; send it again "
                  f"with: {command()} track {shlex.quote(str(run_dir))} --to {shlex.quote(text)}", file=sys.stderr)
            ok = False
    return ok


def cmd_track(args) -> int:
    from benchmark.analysis.trackers import parse_target
    from benchmark.run.results import load_summary

    run_dir = _check_run(args.run_dir)
    for text in args.to:
        parse_target(text, "--to")
    load_summary(run_dir)  # a damaged or out-of-date run is named as such, not as a tracker that failed
    _refuse_unfinished(run_dir, "Not sent")
    return 0 if _send_to_trackers(run_dir, args.to) else 1


def _print_summary(run_dir: pathlib.Path) -> None:
    import pandas as pd

    from benchmark.run.results import per_image_gaps, read_summary, space_notes

    summary = read_summary(run_dir)
    if "rate_n_matched" in summary:
        for row in summary[summary.rate_n_matched.notna()].itertuples():
            print(f"rate matching {row.codec} target {row.setting_label} bpp: {int(row.rate_n_matched)} of "
                  f"{int(row.n_ok)} images within tolerance ({row.rate_match_counts}); mean achieved "
                  f"{row.bpp:.4g} bpp" + ("" if row.rate_n_matched == row.n_ok else " - NOT the target"))
    metrics = [m for m in registry.quality_metrics() if m in summary and summary[m].notna().any()]
    cols = ["codec", "setting_label", "n_ok", "n_failed", "bpp"] + [m for m in metrics if m != "bpp"]
    shown = summary[[c for c in dict.fromkeys(cols) if c in summary]].rename(
        columns={"setting_label": "setting", **{m: registry.METRICS[m].short or m for m in metrics if m in registry.METRICS}})
    with pd.option_context("display.max_rows", 200, "display.width", 200, "display.float_format", "{:.4f}".format):
        print(shown.to_string(index=False, na_rep="–"))
    text_only = [registry.METRICS[m].short or m for m in metrics if "transmitted text" in registry.METRICS[m].needs
                 and summary[m].isna().any()]
    if text_only:  # a value no codec could have, not one that failed
        print(f"–: {' and '.join(text_only)} {'is' if len(text_only) == 1 else 'are'} measured only for codecs that "
              "transmit text (a caption).")
    for note in space_notes(summary):  # what set metrics rest on: 'FID from 4 < 2048 samples: biased, ...'
        print(note)
    for gap in per_image_gaps(run_dir).values():  # images a metric could not score: 'ms_ssim has no value on ...'
        print(f"note: {gap}.")


def _why_missing(run_dir: pathlib.Path, metric: str) -> str:
    from benchmark.run.record import read_record
    from benchmark.run.results import per_image_gaps

    state = read_record(run_dir).metric_state(metric)
    if state.get("status") == "disabled":
        return "it was turned off for this run"
    if state.get("status") not in (None, "ok"):
        return state.get("reason", "")
    return per_image_gaps(run_dir).get(metric, "")  # it ran, but the rows say why they have no value


def _no_bitstreams_saved(run_dir: pathlib.Path, record) -> list[str]:
    """--save-bitstreams of a codec that produced rows but no bitstream bytes (a precomputed codec's bits.csv gives
    counts only): its folder is empty, which is said rather than left to be found."""
    from benchmark.run.results import OUTPUTS, run_summary, safe_name

    if not record.config.get("save_bitstreams"):
        return []
    summary = run_summary(run_dir)
    scored = set(summary.codec[summary.n_ok > 0]) if len(summary) else set()
    return [f"note: --save-bitstreams saved nothing for {c.label}: its rows have bit counts but it produced no "
            "bitstream to save" + (" (bits.csv gives counts only)" if c.target == "precomputed" else "") + "."
            for c in record.codecs if c.label in scored
            and not any((run_dir / OUTPUTS / safe_name(c.label)).rglob("*.bin"))]


def cmd_plot(args) -> int:
    from benchmark.analysis.leaderboard import load_summaries, unmeasured, with_references
    from benchmark.analysis.plots import PlotStyle, metric_gaps, plottable_metrics, rd_plots, scored_rates
    from benchmark.analysis.references import load_references
    from benchmark.run.results import unfinished

    run_dirs = [_check_run(p) for p in args.run_dirs]
    if len(run_dirs) > 1 and not args.out:
        raise ValueError(f"Plotting {len(run_dirs)} runs together needs --out FOLDER (the figures belong to no one "
                         "run).")
    summary = load_summaries(run_dirs, args.allow_mixed)
    if summary.empty:
        raise ValueError(f"{', '.join(map(str, run_dirs))}: no summary rows yet.")
    for m in args.metric or []:
        registry.measured(m)
        if m not in summary or not summary[m].notna().any():
            reasons = "; ".join(filter(None, (_why_missing(r, m) for r in run_dirs)))
            raise ValueError(f"{m} was not computed in {', '.join(map(str, run_dirs))}"
                             f"{': ' + reasons if reasons else ''}; plottable metrics there: "
                             f"{', '.join(plottable_metrics(summary)) or 'none'}.")

    refs, warnings = load_references(args.reference, summary)
    shown = args.metric or plottable_metrics(summary)  # below: curves that may still move, or that are not there
    for w in [*filter(None, map(unfinished, run_dirs)), *warnings, *unmeasured(run_dirs, shown)]:
        print(f"warning: {w}", file=sys.stderr)
    style = PlotStyle(paper=args.style == "paper", title=args.title, size=args.size, font_size=args.font_size)
    run_dir = run_dirs[0]
    plots = rd_plots(with_references(summary, refs), args.out or run_dir / "plots", log_x=args.log_x,
                     metrics=args.metric, style=style, gaps=metric_gaps(run_dirs), scored=scored_rates(run_dirs))
    for p in plots:
        print(p)
    if not plots:
        failed = int(summary.n_failed.sum()) if "n_failed" in summary else 0
        print(f"No plots: no setting has a value to plot ({failed} failed rows; see `{command()} report "
              f"{shlex.quote(str(run_dir))}` for their reasons).", file=sys.stderr)
    return 0


LOSSLESS_SUFFIXES = (".png", ".ppm", ".bmp", ".tif", ".tiff")


def cmd_decode(args) -> int:
    import numpy as np
    from PIL import Image

    from benchmark.run.config import RunConfig, codec_context
    from benchmark.run.record import read_record

    record = read_record(_check_run(args.run_dir))
    bitstream, output = pathlib.Path(args.bitstream), pathlib.Path(args.output)
    if not bitstream.is_file():
        raise ValueError(f"{bitstream} is a folder, not a bitstream file." if bitstream.is_dir()
                         else f"No bitstream file at {bitstream}.")
    if output.suffix.lower() not in LOSSLESS_SUFFIXES:  # Pillow would write x.jpg or x.webp lossy
        raise ValueError(f"-o {output}: the decoded image is written losslessly, as "
                         f"{', '.join(LOSSLESS_SUFFIXES)}; a lossy file would change what the codec decoded.")
    config = RunConfig.from_json(record.config)
    spec = next((c for c in config.codecs if c.label == args.codec), None)
    if spec is not None and spec.codec_class().produced_outside:
        raise ValueError(f"{args.codec} was produced outside cmcbench (precomputed): there is no decoder to run.")
    if spec is None:
        raise ValueError(f"Run has no codec labelled {args.codec!r}: {', '.join(c.label for c in config.codecs)}.")
    decoder = spec.build()
    decoder.setup(codec_context(config, record.dataset.split, record.dataset.to_json()))
    declared = record.codec(args.codec).side_information
    if decoder.side_information() != declared:
        raise RuntimeError("The side information rebuilt here differs from the one the run declared.")
    data = bitstream.read_bytes()
    try:
        image = np.asarray(decoder.decode(data))
    except Exception as exc:  # noqa: BLE001 - any decoder failure is one sentence about this file
        import re

        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        detail = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", detail)  # Pillow names its buffer
        raise ValueError(f"{args.bitstream} is not a valid {args.codec} bitstream ({len(data)} bytes): {detail}") from None
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{args.codec} decoded {args.bitstream} to an array of shape {image.shape} and type "
                         f"{image.dtype}, not an 8-bit RGB image.")
    output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(output)
    print(output)
    return 0


def cmd_datasets(args) -> int:
    from benchmark.data import named_datasets as nd

    root = nd.data_root(getattr(args, "data_root", None))  # `datasets` alone lists them, with no --data-root
    if args.datasets_command == "fetch":
        folder = nd.fetch(nd.get(args.name).name, root, progress=not args.no_progress)
        print(f"{args.name}: verified and unpacked in {folder}; run it with --dataset {args.name}"
              + (f" --data-root {root}" if args.data_root else ""))
        return 0
    if args.datasets_command == "image-list":
        from benchmark.data.datasets import draw_image_list, open_dataset

        try:
            dataset = open_dataset(args.name, None, args.data_root)
        except nd.DatasetMissing as exc:
            if exc.by_hand is None:
                raise
            raise nd.DatasetMissing(f"{exc.unless}, or draw from the folder as it is: {command()} datasets image-list "
                                    f"{shlex.quote(str(exc.by_hand))} --draw {args.draw} --seed {args.seed} --out "
                                    f"{shlex.quote(args.out)}.") from None
        ids = draw_image_list(dataset, args.draw, args.seed)
        pathlib.Path(args.out).write_text("".join(i + "\n" for i in ids))
        print(f"{len(ids)} images of {args.name} drawn with seed {args.seed} into {args.out}; use it with "
              f"--dataset {args.name} --image-list {args.out}")
        return 0
    from tabulate import tabulate

    rows, by_hand = [], []
    for entry in nd.CATALOG.values():
        present = nd.is_fetched(root, entry.name)
        checks = sorted({"published sha256" if s.sha256 else "sha256 pinned at first fetch" for s in entry.sources})
        size = nd.size_on_disk(root / entry.name)
        unfetched = not present and size > 0  # a folder of that name, filled by hand
        by_hand += [entry.name] if unfetched else []
        rows.append([entry.name, entry.images, (f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB")
                     if present or unfetched else "-", "yes" if present else "not fetched*" if unfetched else "no",
                     root / entry.name if present or unfetched else "-", " + ".join(checks)])
    print(tabulate(rows, headers=["name", "images", "size on disk", "present", "where", "checked by"],
                   tablefmt="simple"))
    if by_hand:  # what running on it by name will say, told here first
        print(f"\n* holds files cmcbench did not fetch, so it cannot check them as the named dataset: run on such a "
              f"folder with --dataset PATH, or move its files into {root / '.downloads' / 'NAME'} and run with "
              f"--dataset NAME (checked and pinned then).")
    print("\nPublished checksums are tensorflow-datasets' (url_checksums/); the others are recorded at the first fetch "
          "and checked on every later use.")
    print(f"\nData root: {root} (--data-root, ${nd.ENV_ROOT}). Fetch one with: {command()} datasets fetch NAME")
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
    if twice := [r for k, r in enumerate(rates) if r in rates[:k]]:  # a table with two columns of one rate
        raise ValueError(f"--rates {text}: {twice[0]:g} is given more than once.")
    return rates


def _check_run(path: str) -> pathlib.Path:
    run_dir = pathlib.Path(path)
    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{run_dir} is not a cmcbench run (no config.json).")
    return run_dir


def cmd_leaderboard(args) -> int:
    from benchmark.analysis import leaderboard

    run_dirs = [_check_run(p) for p in args.run_dirs]
    board = leaderboard.build(run_dirs, anchor=args.anchor, rates=_rates(args.rates), metrics=args.metric,
                              resamples=args.bootstrap, seed=args.seed, level=args.level, bd_method=args.bd_method,
                              references=args.reference, allow_mixed=args.allow_mixed)
    if board.empty:  # every row failed: tables of nothing, with notes about nothing, are no leaderboard
        print(f"No leaderboard: no setting of {'this run' if len(run_dirs) == 1 else 'these runs'} has a successful "
              f"row (see `{command()} report {shlex.quote(str(run_dirs[0]))}` for the reasons).", file=sys.stderr)
        return 0  # as plot does: nothing failed here, there is only nothing to show
    print(leaderboard.render(board, "md"))
    written = leaderboard.write(board, args.out or run_dirs[0] / "leaderboard", args.format or leaderboard.FORMATS)
    print("Written: " + ", ".join(str(p) for p in written))
    return 0


def cmd_compare(args) -> int:
    from benchmark.analysis import compare

    base, new = _check_run(args.base), _check_run(args.new)
    tolerances = compare.parse_tolerances(args.tolerance)
    try:
        result = compare.compare_runs(base, new, tolerances, args.bootstrap, args.seed, args.level,
                                      allow_missing=args.allow_missing, allow_different_data=args.allow_different_data,
                                      bd_method=args.bd_method)
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
    from benchmark.analysis.report import build_report

    run_dir = _check_run(args.run_dir)
    html_path, md_path = build_report(run_dir, args.out, n_images=args.images, target_bpp=args.grid_bpp,
                                      resamples=args.bootstrap, seed=args.seed, anchor=args.anchor,
                                      rates=_rates(args.rates), references=args.reference)
    print(f"Report: {html_path} (self-contained), {md_path}")
    return 0


def _refuse_unfinished(run_dir: pathlib.Path, what: str) -> None:
    """A run not finished is not sent on as the run's numbers (a tracker, a published curve, a CI's metrics file):
    its values rest on the tasks done so far."""
    from benchmark.run.results import unfinished

    if why := unfinished(run_dir):
        raise ValueError(f"{what}: {why}.")


def cmd_export(args) -> int:
    from benchmark.analysis.references import export_compressai

    run_dir = _check_run(args.run_dir)
    _refuse_unfinished(run_dir, "Not exported")
    if args.format == "metrics":
        from benchmark.analysis import tracker_files

        written = tracker_files.write(run_dir, args.out_dir, anchor=args.anchor)
    else:
        written = export_compressai(run_dir, args.out_dir)
        for metric, why in (json.loads(written[0].read_text())["meta"].get("left_out", {}) if written else {}).items():
            print(f"note: {metric} is left out of the export: {why}.", file=sys.stderr)
        if not written:  # it wrote nothing and said nothing
            print(f"Nothing exported: no codec of {run_dir} has a successful setting (see `{command()} report "
                  f"{shlex.quote(str(run_dir))}` for the reasons).", file=sys.stderr)
    for path in written:
        print(path)
    return 0


def cmd_history(args) -> int:
    import time

    from benchmark.analysis import compare, history
    from benchmark.analysis.plots import history_plots
    from benchmark.run.integrity import atomic_write_bytes

    start = time.perf_counter()
    options = history.HistoryOptions(anchor_run=args.anchor_run, anchor_codec=args.anchor, codecs=args.codec,
                                     metrics=args.metric or ["psnr"], since=args.since, resamples=args.bootstrap,
                                     seed=args.seed, level=args.level, bd_method=args.bd_method,
                                     tolerances=compare.parse_tolerances(args.tolerance))
    result = history.build(args.runs, options)
    print(history.render(result))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "history.csv", result.table.to_csv(index=False).encode())
    written = [out / "history.csv", *(p for p in history_plots(result.table, result.anchor, out) if p.suffix == ".png")]
    print(f"Written: {', '.join(map(str, written))} (and SVG, PDF) in {time.perf_counter() - start:.1f} s")
    return 0
