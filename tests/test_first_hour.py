"""A researcher's first hour: mistakes are told in one sentence before any work, with no run folder left
behind; the default codec set fits the dataset; Ctrl-C keeps finished work and says how to resume; plots,
reports and tables are fit for a paper."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmark import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = ["--metrics", "none", "--lpips", "none", "--no-ms-ssim", "--caption-embedder", "none", "--no-plots",
         "--no-progress"]


@pytest.fixture
def folder(tmp_path):
    data = tmp_path / "home" / "data" / "kodak"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(data / f"img{k}.png")
    return data


def run_cli(args, capsys):
    rc = cli.main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def runs_in(out_dir) -> list[str]:
    return sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".")) if out_dir.exists() else []


MISTAKES = [
    (["--dataset", "cub:~/data/birds"], "CUB: the folder"),
    (["--dataset", "~/data/nowhere"], "does not exist"),
    (["--dataset", "sample:abc"], "positive whole number of images, not 'abc'"),
    (["--dataset", "cub:~/data/kodak"], "CUB_200_2011/images.txt is missing"),
    (["--codec", "jpeg quality=abc"], "jpeg quality must be a number in 1..100, not 'abc'"),
    (["--codec", "jpeg quality=200"], "jpeg quality must be in 1..100, not 200"),
    (["--codec", "avif quality=10.5"], "avif quality takes whole numbers"),
    (["--codec", "webp method=9"], "webp option 'method' must be in 0..6, not 9"),
    (["--codec", "webp method=x"], "webp option 'method' must be a whole number, not 'x'"),  # was 'a int'
    (["--codec", "jpeg subsampling=4:1:1"], "must be one of 4:4:4, 4:2:2, 4:2:0"),
    (["--codec", "cmc captioner=foo/bar"], "not in the local Hugging Face cache and this machine is offline"),
    (["--codec", "cmc generator=retreival"], "did you mean generator=retrieval?"),
    (["--codec", "cmc bpp=0.01 captioner=foo/bar"], "not in the local Hugging Face cache and this machine is offline"),
    (["--dataset", "~/data/kodak", "--codec", "cmc bpp=0.01"], "cmc needs a captioned training split"),
    (["--codec", "cmc captioner=refrence"], "did you mean captioner=reference?"),
    (["--codec", "cmc captioner=~/models/none"], "neither a built-in captioner"),
    (["--codec", "cmc text_codec=hufman"], "must be one of huffman"),
    (["--dataset", "~/data/kodak", "--codec", "cmc"], "cmc needs a captioned training split"),
    (["--lpips", "~/alexnet.pth"], "--lpips"),
    (["--dists", "~/vgg16.pth"], "--dists"),
    (["--lpips-vgg", "~/vgg16.pth"], "--lpips-vgg"),
    (["--inception-weights", "~/inception.pth"], "no such file"),
    (["--add-metric", "psnr_z"], "Unknown metric 'psnr_z'"),
    (["--resume-anyway"], "--resume-anyway goes with --resume"),
]


@pytest.mark.parametrize("args,message", MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_a_mistake_is_one_sentence_before_any_work_and_leaves_no_run_folder(args, message, folder, tmp_path,
                                                                            monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out_dir = tmp_path / "runs"
    rc, out, err = run_cli(["run", *QUIET, *args, "--out", str(out_dir)], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc != 0
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in out + err
    assert runs_in(out_dir) == []


@pytest.mark.parametrize("args,message", [
    (["--limit", "-1"], "--limit: must be at least 1, not -1"),
    (["--jobs", "0"], "--jobs/-j: must be at least 1, not 0"),
    (["--timeout", "abc"], "--timeout: must be a number, not 'abc'"),
])
def test_bad_numbers_are_refused_by_the_parser_in_one_line(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", *args, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and message in err, err


def test_resume_refuses_run_shaping_options(tmp_path, capsys):
    assert run_cli(["run", "--codec", "jpeg quality=50", "--limit", "2", "--out", str(tmp_path), "--name", "r",
                    *QUIET], capsys)[0] == 0
    rc, _, err = run_cli(["run", "--resume", str(tmp_path / "r"), "--codec", "webp", "--limit", "3"], capsys)
    assert rc == 1 and "drop --codec, --limit" in err and err.count("\n") == 1



def test_the_commands_printed_run_where_cmcbench_was_started(tmp_path):
    """Started as `python PATH/bench.py` from one's own project folder, cmcbench told the user to run `python
    bench.py report ...`, a file that folder does not have; the printed command now runs there as printed."""
    import shlex

    started = subprocess.run([sys.executable, os.path.join(ROOT, "bench.py"), "run", "--dataset", "sample:6", "--codec",
                              "jpeg quality=50", "--out", "my runs", "--name", "a", *QUIET], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    next_line = next(line for line in started.stdout.splitlines() if line.startswith("Next:"))
    leaderboard = shlex.split(next_line.split("|")[1])
    assert leaderboard == ["python", os.path.join(ROOT, "bench.py"), "leaderboard", os.path.join("my runs", "a")]
    shown = subprocess.run([sys.executable, *leaderboard[1:]], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert shown.returncode == 0 and "jpeg" in shown.stdout, shown.stderr


def test_the_installed_command_names_itself_in_what_it_prints(monkeypatch, tmp_path, capsys):
    from benchmark import command
    from benchmark.run.run_folder import resume_command

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["bench.py"])
    assert command() == "python bench.py"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [os.path.join(tmp_path, "my bin", "cmcbench"), "run"])
    assert command() == "cmcbench" and resume_command(tmp_path / "r") == f"cmcbench run --resume {tmp_path / 'r'}"
    with pytest.raises(SystemExit):
        cli.main(["run", "--codecs", "jpeg"])
    assert "error: cmcbench run: unrecognized arguments: --codecs" in capsys.readouterr().err

def test_the_default_codec_set_skips_cmc_on_a_plain_folder_with_a_note(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    rc, out, err = run_cli(["run", "--dataset", "~/data/kodak", "--out", str(tmp_path / "runs"), *QUIET], capsys)
    assert rc == 0, err
    assert "note: skipping cmc: cmc needs a captioned training split" in err
    assert "cmc" not in pd.read_parquet(tmp_path / "runs" / runs_in(tmp_path / "runs")[0] / "summary.parquet").codec.values
    assert "Rows:" in out and "Results:" in out and "Next:" in out
    run_dir = tmp_path / "runs" / runs_in(tmp_path / "runs")[0]
    assert f"Trackers:    {run_dir / 'metrics.json'}, {run_dir / 'rd.csv'}" in out  # written at the run's end
    assert json.loads((run_dir / "metrics.json").read_text())["n_images"] == 2


def test_summary_table_shows_only_computed_metrics(tmp_path, capsys):
    rc, out, _ = run_cli(["run", "--codec", "jpeg quality=50", "--limit", "2", "--out", str(tmp_path), *QUIET], capsys)
    header = next(line for line in out.splitlines() if line.lstrip().startswith("codec"))
    assert rc == 0 and header.split() == ["codec", "setting", "n_ok", "n_failed", "bpp", "PSNR"]


def test_a_text_metric_of_a_codec_that_sends_pixels_is_a_dash_that_says_why(tmp_path, capsys):
    """BLEU-4 of JPEG's rows has no value by nature (JPEG transmits no caption): the table prints –, not NaN, and
    says why under it."""
    rc, out, err = run_cli(["run", "--codec", "jpeg quality=50", "--codec", "cmc max_words=16", "--limit", "2", "--out",
                            str(tmp_path), "--metrics", "none", "--caption-embedder", "none", "--no-plots",
                            "--no-progress"], capsys)
    assert rc == 0, err
    lines = out.splitlines()
    header = next(k for k, line in enumerate(lines) if line.lstrip().startswith("codec"))
    assert lines[header].split() == ["codec", "setting", "n_ok", "n_failed", "bpp", "PSNR", "BLEU-4"]
    rows = {line.split()[0]: line.split() for line in lines[header + 1:header + 3]}
    assert rows["jpeg"][-1] == "–" and float(rows["cmc"][-1]) >= 0 and "NaN" not in out
    assert lines[header + 3] == "–: BLEU-4 is measured only for codecs that transmit text (a caption)."


def test_a_set_metric_s_caveat_is_printed_under_the_table_that_shows_it(tmp_path, capsys, random_inception_weights):
    """FID from 3 images is printed with the summary's own caveat (biased below 2,048 samples), not as a bare
    number: the console is read as much as the parquet."""
    rc, out, err = run_cli(["run", "--codec", "jpeg quality=30,70", "--limit", "3", "--out", str(tmp_path),
                            "--inception-weights", str(random_inception_weights), "--lpips", "none", "--no-ms-ssim",
                            "--caption-embedder", "none", "--no-plots", "--no-progress"], capsys)
    assert rc == 0, err
    lines = out.splitlines()
    header = next(k for k, line in enumerate(lines) if line.lstrip().startswith("codec"))
    assert "FID" in lines[header].split()
    note = lines[header + 3]
    assert note.startswith("Inception set metrics (every setting): ") and "FID from 3 < 2048 samples: biased" in note
    from benchmark.analysis import leaderboard

    run_dir = tmp_path / runs_in(tmp_path)[0]
    assert note in leaderboard.build([run_dir], resamples=0).notes  # the leaderboard and the report say it too
    assert not any("Inception" in n for n in leaderboard.build([run_dir], resamples=0, metrics=["psnr"]).notes)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_hub_is_told_at_once(tmp_path):
    """Online but no route to the Hub (here: a closed port on 127.0.0.1): one sentence, not minutes of retries."""
    env = {k: v for k, v in os.environ.items() if k not in ("CMCBENCH_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{_closed_port()}"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench.py"), "run", "--codec", "cmc captioner=foo/bar",
                           "--out", str(tmp_path), *QUIET], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and "Hugging Face Hub cannot be reached" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and runs_in(tmp_path) == []


def test_ctrl_c_keeps_finished_work_and_prints_the_resume_command(tmp_path):
    gate = tmp_path / "gate"  # images from index 4 on wait for it, so the run is still going when interrupted
    args = ["run", "--dataset", "sample:40", "--codec", f"codecs_for_tests:Gated gate={gate} after=4", "--out",
            str(tmp_path), "--name", "r", "--jobs", "2", *QUIET]
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
    # SIGINT at its default in the child, as in a terminal, even when the tests run in a background job (which
    # starts with SIGINT ignored, and Python then installs no KeyboardInterrupt for it)
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench.py"), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    shards = tmp_path / "r" / "images"
    while len(list(shards.glob("*/chunk-*.parquet"))) < 4:  # observable state, no clock
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == cli.EXIT_INTERRUPTED
    assert "Traceback" not in err and f"python bench.py run --resume {tmp_path / 'r'}" in err, err
    kept = len(list(shards.glob("*/chunk-*.parquet")))
    assert kept >= 4
    gate.touch()
    resumed = subprocess.run([sys.executable, os.path.join(ROOT, "bench.py"), "run", "--resume", str(tmp_path / "r"),
                              "--no-plots", "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    info = json.loads((tmp_path / "r" / "config.json").read_text())
    rows = pd.read_parquet(tmp_path / "r" / "images")
    assert len(rows) == info["dataset"]["n_images"] * len(info["codecs"][0]["settings"]) and (rows.status == "ok").all()


def test_decode_of_a_corrupt_bitstream_is_one_sentence(tmp_path, capsys):
    assert run_cli(["run", "--codec", "jpeg quality=50", "--codec", "webp quality=50", "--codec", "jpeg2000 ratio=24",
                    "--limit", "1", "--out", str(tmp_path), "--name", "r", *QUIET], capsys)[0] == 0
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\xff\xd8 not really an image")
    for codec in ("jpeg", "webp", "jpeg2000"):
        rc, _, err = run_cli(["decode", str(tmp_path / "r"), codec, str(bad), "-o", str(tmp_path / "x.png")], capsys)
        assert rc == 1 and err.startswith(f"error: {bad} is not a valid {codec} bitstream") and err.count("\n") == 1
    for codec, other in (("jpeg", "WEBP"), ("webp", "JPEG")):  # a valid image of another format is not decoded
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, format=other)
        bad.write_bytes(buf.getvalue())
        rc, _, err = run_cli(["decode", str(tmp_path / "r"), codec, str(bad), "-o", str(tmp_path / "x.png")], capsys)
        assert rc == 1 and err.startswith(f"error: {bad} is not a valid {codec} bitstream") and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()



def test_decode_writes_the_decoded_pixels_losslessly_or_says_why_not_in_one_sentence(tmp_path, capsys):
    assert run_cli(["run", "--codec", "webp quality=50", "--limit", "1", "--save-bitstreams", "--save-reconstructions",
                    "--out", str(tmp_path), "--name", "r", *QUIET], capsys)[0] == 0
    saved = next((tmp_path / "r" / "outputs" / "webp" / "50").glob("*.bin"))
    for output, message in ((tmp_path / "x.jpg", "-o " + str(tmp_path / "x.jpg") + ": the decoded image is written "
                             "losslessly"), (tmp_path / "x", "-o " + str(tmp_path / "x") + ": the decoded image")):
        rc, _, err = run_cli(["decode", str(tmp_path / "r"), "webp", str(saved), "-o", str(output)], capsys)
        assert rc == 1 and err.startswith("error: " + message) and err.count("\n") == 1 and not output.exists(), err
    for bitstream, message in ((saved.parent, f"{saved.parent} is a folder, not a bitstream file."),
                               (tmp_path / "none.bin", f"No bitstream file at {tmp_path / 'none.bin'}.")):
        rc, _, err = run_cli(["decode", str(tmp_path / "r"), "webp", str(bitstream), "-o", str(tmp_path / "x.png")],
                             capsys)
        assert rc == 1 and err == f"error: {message}\n", err
    output = tmp_path / "new" / "folder" / "x.png"  # a folder that does not exist yet is made
    rc, out, _ = run_cli(["decode", str(tmp_path / "r"), "webp", str(saved), "-o", str(output)], capsys)
    assert rc == 0 and out.strip() == str(output)
    decoded = np.asarray(Image.open(output))
    assert np.array_equal(decoded, np.asarray(Image.open(saved.with_suffix(".png")).convert("RGB")))

def test_plot_of_a_metric_the_run_lacks_fails_with_the_reason(tmp_path, capsys):
    assert run_cli(["run", "--codec", "jpeg quality=50,80", "--limit", "2", "--out", str(tmp_path), "--name", "r",
                    *QUIET], capsys)[0] == 0
    rc, _, err = run_cli(["plot", str(tmp_path / "r"), "--metric", "fid"], capsys)
    assert rc == 1 and "fid was not computed" in err and "psnr" in err


def test_codec_style_is_fixed_by_name():
    from benchmark.analysis.plots import codec_style

    assert codec_style("jpeg") == codec_style("jpeg [published]") != codec_style("webp")
    assert codec_style("my-codec") == codec_style("my-codec")  # a hash of the name, not of the plot's order
    assert codec_style("my-codec")[0] not in {c for c, _ in (codec_style(n) for n in ("jpeg", "webp", "avif"))}


def test_plots_share_colours_across_runs_and_use_log_x_for_kodak_like_ranges(tmp_path):
    from benchmark.analysis.plots import codec_style, rd_plots, use_log_x

    assert use_log_x(pd.Series([0.05, 0.4, 3.5])) and not use_log_x(pd.Series([0.5, 1.0, 2.0]))
    rows = [{"codec": c, "setting_index": k, "setting_label": str(k), "bpp": b, "psnr": 30 + b, "n_ok": 4, "n_failed": 0,
             "n_images": 4, "dataset": "folder:/data/kodak", "split": "all"}
            for c in ("webp", "jpeg") for k, b in enumerate([0.1, 0.5, 2.0])]
    written = rd_plots(pd.DataFrame(rows), tmp_path, formats=("svg", "pdf", "png"))
    assert {p.suffix for p in written} == {".svg", ".pdf", ".png"}
    svg = (tmp_path / "rd_psnr.svg").read_text()
    assert "kodak, 4 images" in svg and "/data/kodak" not in svg
    for codec in ("webp", "jpeg"):
        assert codec_style(codec)[0].lstrip("#") in svg.lower()


def test_latex_leaderboard_declares_its_packages_and_fits(tmp_path, capsys):
    assert run_cli(["run", "--codec", "jpeg quality=20,50,80", "--codec", "webp quality=20,50,80", "--limit", "4",
                    "--out", str(tmp_path), "--name", "r", *QUIET[:-2], "--no-progress"], capsys)[0] == 0
    assert run_cli(["leaderboard", str(tmp_path / "r"), "--bootstrap", "20", "--out", str(tmp_path / "lb")],
                   capsys)[0] == 0
    tex = (tmp_path / "lb" / "leaderboard.tex").read_text()
    assert tex.startswith("% cmcbench leaderboard. Needs \\usepackage{booktabs}")
    assert "\\toprule" in tex and "\\begin{longtable}" in tex and "\\resizebox{\\ifdim\\width>\\linewidth" in tex
    body = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
    assert "↑" not in body and "–" not in body and "†" not in body  # pdflatex-safe symbols outside comments
    captions = re.findall(r"\\caption\{(.*)\}", body)
    assert len(captions) >= 3 and all(c.endswith("Measured on sample (test), 4 images.") for c in captions), captions
    html_page = (tmp_path / "lb" / "leaderboard.html").read_text()
    assert html_page.startswith("<!doctype html>") and '<meta charset="utf-8">' in html_page
    if shutil.which("pdflatex") is None:
        return  # the structure is checked above; compiling needs a TeX installation
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\\usepackage{booktabs,graphicx,longtable}"
                                      "\\begin{document}\\input{lb/leaderboard.tex}\\end{document}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    overfull = [line for line in (tmp_path / "doc.log").read_text(errors="replace").splitlines()
                if line.startswith("Overfull") and float(line.split("(")[1].split("pt")[0]) > 1.0]
    assert overfull == []


@pytest.mark.parametrize("args,message", [
    (["--caption-embedder", "sentence-transformers/nope"], "not in the local Hugging Face cache"),
    (["--caption-embedder", "atuo"], "did you mean --caption-embedder=auto?"),
    (["--device", "gpu"], "use auto, cpu, cuda, cuda:N or mps"),
])
def test_embedder_and_device_are_checked_before_work(args, message, tmp_path, capsys):
    rc, _, err = run_cli(["run", "--metrics", "none", "--lpips", "none", *args, "--codec", "jpeg", "--out", str(tmp_path)],
                         capsys)
    assert rc == 1 and message in err and err.count("\n") == 1, err
    assert runs_in(tmp_path) == []


def test_hub_dir_is_torch_hubs_without_importing_torch(monkeypatch, tmp_path):
    import torch

    from metrics.inception import hub_dir

    assert str(hub_dir()) == torch.hub.get_dir()  # the hermetic fixture's TORCH_HOME
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert str(hub_dir()) == torch.hub.get_dir()


def test_weight_download_from_a_local_server_checks_the_hash_and_needs_no_torch(tmp_path):
    """The hub download, against a server on 127.0.0.1: the file lands in place when its sha256 has the
    expected prefix, and nothing is left behind when it does not; torch is never imported for it."""
    import hashlib
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    payload = b"weights" * 1000
    (served / "w.pth").write_bytes(payload)
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(served))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/w.pth"
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    try:
        code = ("import sys; from metrics.download import download_url_to_file as d; "
                f"d({url!r}, {str(tmp_path / 'ok' / 'w.pth')!r}, {prefix!r}, progress=False); "
                "print('torch' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=ROOT)
        assert out.stdout.strip() == "False" and (tmp_path / "ok" / "w.pth").read_bytes() == payload
        from metrics.download import download_url_to_file

        with pytest.raises(RuntimeError, match="expected 00000000"):
            download_url_to_file(url, tmp_path / "bad" / "w.pth", "00000000", progress=False)
        assert list((tmp_path / "bad").iterdir()) == []  # neither the file nor a partial one
    finally:
        server.shutdown()


def test_metrics_none_is_bpp_and_psnr_only_unless_a_metric_is_asked_for(tmp_path, capsys, folder):
    """--metrics none means what its help says: MS-SSIM, LPIPS and caption similarity go off with the set metrics;
    a metric's own flag still turns it back on."""
    common = ["--dataset", str(folder), "--codec", "jpeg quality=50", "--no-plots", "--no-progress", "--out",
              str(tmp_path)]
    rc, _, err = run_cli(["run", "--metrics", "none", "--name", "bare", *common], capsys)
    assert rc == 0, err
    info = json.loads((tmp_path / "bare" / "config.json").read_text())["config"]
    assert info["image_metrics"]["ms_ssim"] is False and info["image_metrics"]["lpips"] == "none"
    assert info["caption_embedder"] == "none" and not info["inception"]["enabled"]
    images = pd.read_parquet(tmp_path / "bare" / "images")
    assert images.psnr.notna().all() and ("ms_ssim" not in images or images.ms_ssim.isna().all())
    rc, _, err = run_cli(["run", "--metrics", "none", "--ms-ssim", "--name", "asked", *common], capsys)
    assert rc == 0, err
    info = json.loads((tmp_path / "asked" / "config.json").read_text())["config"]
    assert info["image_metrics"]["ms_ssim"] is True and info["image_metrics"]["lpips"] == "none"
    defaults = cli.build_parser().parse_args(["run"])
    cli.per_image_metric_defaults(defaults)  # without --metrics none, the defaults are as they always were
    assert (defaults.ms_ssim, defaults.lpips, defaults.caption_embedder) == (True, "auto", "auto")


@pytest.mark.parametrize("args, said", [
    (["run", "--dataset", "kodk"], "Unknown dataset 'kodk': did you mean 'kodak'?"),
    (["run", "--protocol", "cmc2012"], "Unknown protocol 'cmc2012': did you mean 'cmc2021'? Or use"),
    (["run", "--add-metric", "lpip"], "Unknown metric 'lpip'; did you mean 'lpips'?"),
    (["run", "--codec", "jpg"], "Unknown codec 'jpg': did you mean 'jpeg'?"),
    (["run", "--codec", "jpeg qualty=50"], "jpeg has no option 'qualty': did you mean 'quality'? its rate parameter "
                                           "is quality; its options are: optimize, progressive, subsampling."),
    (["run", "--codec", "webp quality=50 sharpyuv=true"], "webp has no option 'sharpyuv': did you mean 'sharp_yuv'?"),
    (["datasets", "fetch", "kodakk"], "Unknown named dataset 'kodakk'; did you mean 'kodak'?"),
])
def test_a_misspelt_name_gets_did_you_mean(args, said, tmp_path, capsys):
    rc, _, err = run_cli([*args, *(["--out", str(tmp_path / "r"), "--no-progress"] if args[0] == "run" else [])],
                         capsys)
    assert rc != 0 and said in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, said", [
    (["--limt", "3"], "bench.py run: unrecognized arguments: --limt 3; did you mean '--limit'? (see bench.py run "
                      "--help)"),
    (["export", "RUN", "--out", "x"], "bench.py export: unrecognized arguments: --out; did you mean OUT_DIR (given "
                                      "without a flag)? (see bench.py export --help)"),
    (["leaderboard", "RUN", "--bootsrap", "9"], "bench.py leaderboard: unrecognized arguments: --bootsrap 9; did you "
                                                "mean '--bootstrap'? (see bench.py leaderboard --help)"),
    (["datasets", "fetch", "kodak", "--ouput"], "bench.py datasets fetch: unrecognized arguments: --ouput (see "
                                                "bench.py datasets fetch --help)"),
])
def test_an_unknown_option_is_named_with_its_subcommand_and_the_closest_it_has(argv, said, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2 and capsys.readouterr().err == f"error: {said}\n"


def test_a_split_on_a_folder_dataset_is_refused(folder, tmp_path, capsys):
    """A folder has no splits: --split there was a free label (typos included) that compare then held against a
    run of the same images."""
    rc, _, err = run_cli(["run", "--dataset", str(folder), "--split", "tset", "--out", str(tmp_path / "r"), *QUIET],
                         capsys)
    assert rc == 1 and "--split tset: a folder of images is one set" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
    rc, _, err = run_cli(["run", "--dataset", str(folder), "--split", "all", "--codec", "jpeg quality=50", "--out",
                          str(tmp_path / "r"), *QUIET], capsys)
    assert rc == 0, err



def test_a_published_rate_matched_curve_is_named_as_the_run_s_own_is():
    """A run's `webp@bpp` is 'WebP @ bpp' in a paper's legend; exported and read back with --reference it was
    'webp@bpp [published]' beside it (a published curve has no codec target to say it is WebP)."""
    from benchmark.analysis.plots import codec_style, curve_style, display_name

    run_rows = pd.DataFrame({"codec": ["webp@bpp"], "codec_target": ["webp"]})
    assert codec_style("webp@bpp [published]") == curve_style(run_rows, [])[:2] == codec_style("webp")
    assert display_name("webp@bpp [published]") == "WebP @ bpp [published]" == display_name("webp@bpp", "webp") + \
        " [published]"
    assert display_name("mine@bpp [published]") == "mine@bpp [published]"
    assert display_name("mine@bpp", "mine") == "mine@bpp"

def test_plot_legend_names_codecs_keeps_variants_in_their_codec_s_colour_and_counts_images(tmp_path):
    """Display names (JPEG 2000, not jpeg2000), a relabelled or rate-matched JPEG in JPEG's colour and marker with
    a line style of its own, distinct hues for the built-ins, and 'n/N' where a curve rests on fewer images."""
    import colorsys

    from matplotlib.colors import to_rgb

    from benchmark.analysis.plots import CODEC_STYLES, display_name, rd_plots, variant_style

    assert [display_name(c) for c in ("jpeg2000", "jpegxl", "avif", "webp", "cmc")] == \
        ["JPEG 2000", "JPEG XL", "AVIF", "WebP", "CMC"]
    assert display_name("jpeg@bpp", "jpeg") == "JPEG @ bpp" and display_name("j444", "jpeg") == "j444"
    base = variant_style("jpeg", "jpeg")
    for variant in ("j444", "jpeg@bpp"):
        colour, marker, line = variant_style(variant, "jpeg")
        assert (colour, marker) == base[:2] and line != "-" and line != "--"
    hls = [colorsys.rgb_to_hls(*to_rgb(CODEC_STYLES[c][0])) for c in ("jpeg", "jpeg2000", "webp", "avif", "jpegxl",
                                                                       "cmc")]
    for i, (h1, l1, _) in enumerate(hls):  # each pair apart in hue (30 degrees) or in lightness (grey-scale print)
        for h2, l2, _ in hls[i + 1:]:
            assert min(abs(h1 - h2), 1 - abs(h1 - h2)) > 30 / 360 or abs(l1 - l2) > 0.25, (h1, l1, h2, l2)
    assert len({CODEC_STYLES[c][1] for c in ("jpeg", "jpeg2000", "webp", "avif", "jpegxl", "cmc")}) == 6
    rows = [{"codec": c, "codec_target": t, "setting_index": k, "setting_label": str(k), "bpp": b + off,
             "psnr": 30 + b + off, "n_ok": n, "n_failed": 24 - n, "n_images": 24, "dataset": "kodak", "split": "all"}
            for c, t, n, off in (("jpeg2000", "jpeg2000", 24, 0), ("j444", "jpeg", 4, 0.05), ("avif", "avif", 20, 0.1))
            for k, b in enumerate([0.1, 0.5, 2.0])]
    rd_plots(pd.DataFrame(rows), tmp_path, formats=("svg",))
    svg = (tmp_path / "rd_psnr.svg").read_text()
    assert "JPEG 2000" in svg and "jpeg2000" not in svg and "j444 (4/24)" in svg and "AVIF (20/24)" in svg
    assert "JPEG 2000 (" not in svg and "n/N: images a curve" in svg  # a full curve gets no count; the legend says why


def test_a_codec_in_several_runs_keeps_its_colour_and_marker_and_its_line_says_the_run(tmp_path):
    """`plot A B`: a codec in both runs is drawn in its own colour and marker in each (a codec of the user's too,
    whose colour is a hash of its name, not of the name with the run appended), and one line style per run, in the
    order the runs were given; a variant keeps the line that tells it from its codec, a codec of one run is solid."""
    from benchmark.analysis.plots import RUN_LINES, codec_style, curve_style, rd_plots, variant_style

    rows = [{"codec": f"{c} ({run})" if twice else c, "codec_in_run": c, "codec_target": t, "run_dir": f"/x/{run}",
             "setting_index": k, "setting_label": str(k), "bpp": b, "psnr": 30 + b + 0.1 * i, "n_ok": 4,
             "n_failed": 0, "n_images": 4, "dataset": "kodak", "split": "all"}
            for i, (c, t, run, twice) in enumerate((("jpeg", "jpeg", "before", True), ("jpeg", "jpeg", "after", True),
                                                    ("mine", "mine", "before", True), ("mine", "mine", "after", True),
                                                    ("j444", "jpeg", "before", True), ("j444", "jpeg", "after", True),
                                                    ("webp", "webp", "after", False)))
            for k, b in enumerate([0.2, 1.0])]
    summary = pd.DataFrame(rows)
    runs = ["/x/before", "/x/after"]
    style = {c: curve_style(curve, runs) for c, curve in summary.groupby("codec", sort=False)}
    assert style["jpeg (before)"] == (*codec_style("jpeg"), RUN_LINES[0]) == (*codec_style("jpeg"), "-")
    assert style["jpeg (after)"] == (*codec_style("jpeg"), RUN_LINES[1]) and RUN_LINES[1] not in ("-", "--")
    assert style["mine (before)"] == (*codec_style("mine"), "-") and style["mine (after)"] == (*codec_style("mine"),
                                                                                                 RUN_LINES[1])
    assert style["j444 (before)"] == variant_style("j444 (before)", "jpeg") and style["j444 (before)"][2] != "-"
    assert style["webp"] == (*codec_style("webp"), "-")
    assert codec_style("mine (before)")[0] != codec_style("mine")[0] != codec_style("mine (after)")[0]
    from matplotlib.axes import Axes

    drawn, plot = {}, Axes.plot

    def recording(self, *args, **kwargs):
        drawn[kwargs.get("label")] = kwargs.get("linestyle")
        return plot(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Axes, "plot", recording)
        rd_plots(summary, tmp_path, formats=("svg",))  # labels sort 'after' first; the runs' order is as given
    assert drawn["JPEG (before)"] == "-" and drawn["JPEG (after)"] == RUN_LINES[1]
    svg = (tmp_path / "rd_psnr.svg").read_text().lower()
    assert codec_style("mine")[0].lstrip("#") in svg
    assert not any(codec_style(f"mine ({r})")[0].lstrip("#") in svg for r in ("before", "after"))


def test_runs_of_other_image_sets_in_one_figure_each_count_their_own_images(tmp_path):
    """`plot A B --allow-mixed` of a 4-image and a 6-image run of one dataset: the title says both counts, and the
    4-image run's curve is not '(4/6)', which would read as 2 failed images."""
    from benchmark.analysis.plots import dataset_title, rd_plots

    rows = [{"codec": f"jpeg [{n} images]", "codec_in_run": "jpeg", "codec_target": "jpeg", "run_dir": f"/x/{n}",
             "setting_index": k, "setting_label": str(k), "bpp": b, "psnr": 30 + b, "n_ok": ok, "n_failed": n - ok,
             "n_images": n, "dataset": "kodak", "split": "all"}
            for n, ok in ((6, 6), (4, 4), (5, 3)) for k, b in enumerate([0.2, 1.0])]
    summary = pd.DataFrame(rows)
    assert dataset_title(summary) == "kodak, 4, 5 or 6 images"
    assert dataset_title(summary[summary.n_images == 4]) == "kodak, 4 images"
    other = pd.concat([summary.assign(dataset="folder:/z/tecnick"), summary.assign(dataset="folder:/a/clic")])
    assert dataset_title(other) == "tecnick, 4, 5 or 6 images; clic, 4, 5 or 6 images"  # as the runs were given
    rd_plots(summary, tmp_path, formats=("svg",))
    svg = (tmp_path / "rd_psnr.svg").read_text()
    assert "kodak, 4, 5 or 6 images" in svg and "(3/5)" in svg and "(4/6)" not in svg and "/6)" not in svg


def test_plot_several_runs_in_paper_style_with_title_size_and_font(tmp_path, capsys):
    """`plot A B --style paper`: both runs' curves in one figure (a codec in both labelled with its run, in its
    codec's colour), a single-column figure with the given title, and a PDF whose fonts are embedded TrueType."""
    import re

    out = tmp_path / "r"
    for name, qualities in (("before", "20,60"), ("after", "30,70")):
        rc, _, err = run_cli(["run", "--dataset", "sample:6", "--codec", f"jpeg quality={qualities}", "--name", name,
                              "--out", str(out), *QUIET], capsys)
        assert rc == 0, err
    rc, _, err = run_cli(["plot", str(out / "before"), str(out / "after")], capsys)
    assert rc == 1 and "needs --out FOLDER" in err and err.count("\n") == 1
    figures = tmp_path / "figures"
    rc, printed, err = run_cli(["plot", str(out / "before"), str(out / "after"), "--out", str(figures), "--style",
                                "paper", "--title", "JPEG before and after", "--metric", "psnr"], capsys)
    assert rc == 0, err
    svg = (figures / "rd_psnr.svg").read_text()
    assert "JPEG (before)" in svg and "JPEG (after)" in svg and "JPEG before and after" in svg
    width = float(re.search(r'<svg[^>]* width="([\d.]+)pt"', svg).group(1))
    assert 200 < width < 3.8 * 72  # one column of a two-column paper: 3.5 in, with the tight box's margins
    pdf = (figures / "rd_psnr.pdf").read_bytes()
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf  # TrueType fonts, embedded
    rc, _, err = run_cli(["plot", str(out / "before"), "--out", str(tmp_path / "big"), "--size", "7,3", "--font-size",
                          "14", "--title", "", "--metric", "psnr"], capsys)
    assert rc == 0, err
    big = (tmp_path / "big" / "rd_psnr.svg").read_text()
    assert float(re.search(r'<svg[^>]* width="([\d.]+)pt"', big).group(1)) > 6.5 * 72 and "vs rate" not in big  # the tight box trims white
    with pytest.raises(SystemExit) as exit_status:
        cli.main(["plot", str(out / "before"), "--size", "wide"])
    assert exit_status.value.code == 2 and "is not a size W,H in inches" in capsys.readouterr().err


def test_run_help_lists_its_options_in_sections():
    """`run --help` had some sixty options in one list; each is now in a section, and an option added later must
    be put in one (the parser itself, pinned by the golden snapshot, does not change)."""
    parser = cli.build_parser()
    run = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
    titles = [g.title for g in run._action_groups if g._group_actions]
    assert titles == ["options", "what to evaluate", "codecs", "metrics and their networks", "execution and resuming",
                      "output"]
    unsorted = [a.option_strings for g in run._action_groups if g.title == "options" for a in g._group_actions]
    assert unsorted == [["-h", "--help"]]
    text = run.format_help().split("\noptions:")[1]  # the sections, not the usage line
    assert text.index("--dataset SPEC") < text.index("\ncodecs:") < text.index("--codec SPEC") < \
        text.index("--lpips") < text.index("--resume RUN_DIR") < text.index("--no-plots")


def test_a_run_whose_every_row_failed_is_said_so_by_leaderboard_export_and_history(tmp_path, capsys):
    """On a run where every row failed, leaderboard wrote tables of nothing ('measured: im nan–nan bpp'), export
    wrote nothing and said nothing, and history spoke of '1 runs' and 'these 0 runs'. Like plot, they say there is
    nothing to show and exit 0."""
    assert cli.main(["run", "--codec", "codecs_for_tests:AlwaysRaises", "--limit", "2", "--out", str(tmp_path),
                     "--name", "r", *QUIET]) == cli.EXIT_FAILED_ROWS
    run_dir = str(tmp_path / "r")
    capsys.readouterr()
    assert cli.main(["leaderboard", run_dir, "--bootstrap", "0"]) == 0  # as plot: nothing to show is no error
    assert capsys.readouterr().err == (f"No leaderboard: no setting of this run has a successful row (see `python "
                                       f"bench.py report {run_dir}` for the reasons).\n")
    assert not (tmp_path / "r" / "leaderboard").exists()
    assert cli.main(["export", run_dir, str(tmp_path / "out")]) == 0
    assert capsys.readouterr().err.startswith("Nothing exported: no codec of")
    assert cli.main(["history", run_dir, "--out", str(tmp_path / "h")]) == 0
    out = capsys.readouterr().out
    assert "note: 1 run of " in out and "No change could be judged: one run has no earlier run to compare with." in out
    assert cli.main(["report", run_dir, "--bootstrap", "0"]) == 0  # its failures table is the report's point
    md = (tmp_path / "r" / "report" / "report.md").read_text()
    assert "No setting has a successful row: nothing to table" in md and "nan–nan" not in md
    assert "No image has a successful row in every codec" in md


def test_output_closed_early_is_one_sentence_not_a_file_error(monkeypatch, capsys):
    """`bench.py ... | head` closing the pipe said 'error: Broken pipe (a file).'"""
    def closed():
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "cmd_codecs", closed)
    assert cli.main(["codecs"]) == 1
    assert capsys.readouterr().err == "error: the output was closed before it was all written (a pipe into head?).\n"


def test_a_run_name_is_one_folder_inside_out(tmp_path, capsys):
    """--name . made the runs' folder itself a run, beside the others; --name ../x wrote the run outside --out;
    --name x/y ended in '[Errno 2] No such file or directory'."""
    out = tmp_path / "runs"
    for name in (".", "..", "../x", "x/y"):
        assert cli.main(["run", "--codec", "jpeg quality=50", "--limit", "1", "--out", str(out), "--name", name,
                         *QUIET]) == 1
        assert capsys.readouterr().err == (f"error: --name {name!r}: a run's name is one folder name inside --out "
                                           "(no '/', not '.' or '..').\n")
    assert not out.exists() or not any(out.iterdir())  # no run folder, in --out or beside it
    assert not (tmp_path / "x").exists()


def test_an_output_folder_that_is_a_file_is_one_sentence(tmp_path, capsys):
    """--out FILE said "[Errno 17] File exists: 'FILE'"."""
    where = tmp_path / "afile"
    where.write_text("")
    assert cli.main(["run", "--codec", "jpeg quality=50", "--limit", "1", "--out", str(where), *QUIET]) == 1
    assert capsys.readouterr().err == f"error: {where} is a file where a folder is needed.\n"


def test_a_metric_no_image_could_have_is_said_so_with_the_reason_by_every_reader(tmp_path, capsys):
    """Images under MS-SSIM's 161 px: every row's metric_notes said why, but the run's table dropped the column
    without a word, `leaderboard --metric ms_ssim` said 'No values for metric(s) ms_ssim' and `plot` that it 'was not
    computed'. Where only some images lack it, its means rest on the others, and that is said too."""
    y, x = np.mgrid[0:170, 0:180]
    for name, (h, w) in (("big0", (170, 180)), ("big1", (170, 180)), ("small0", (40, 50)), ("small1", (40, 50))):
        (tmp_path / "photos").mkdir(exist_ok=True)
        wave = np.stack([128 + 90 * np.sin(x[:h, :w] / (4 + c)) * np.cos(y[:h, :w] / 7) for c in range(3)], -1)
        Image.fromarray(wave.astype(np.uint8)).save(tmp_path / "photos" / f"{name}.png")
    why = "50x40 is smaller than its 161-px minimum side"
    for name, limit, gap in (("mixed", [], f"ms_ssim has no value on 4 of 8 scored rows ({why}): its means are over "
                              "the others"), ("small", ["--image-list", str(tmp_path / "small.txt")],
                                              f"ms_ssim has no value on any of the 4 scored rows ({why})")):
        (tmp_path / "small.txt").write_text("small0.png\nsmall1.png\n")
        rc, out, err = run_cli(["run", "--dataset", str(tmp_path / "photos"), "--codec", "jpeg quality=30,70", *limit,
                                "--out", str(tmp_path), "--name", name, *QUIET, "--ms-ssim"], capsys)
        assert rc == 0 and f"note: {gap}." in out, out
        run_dir = str(tmp_path / name)
        rc, out, _ = run_cli(["leaderboard", run_dir, "--bootstrap", "0"], capsys)
        assert rc == 0 and f"- Run {name}: {gap}." in out, out
    assert "MS-SSIM" in run_cli(["leaderboard", str(tmp_path / "mixed"), "--bootstrap", "0"], capsys)[1]
    tex = (tmp_path / "mixed" / "leaderboard" / "leaderboard.tex").read_text()  # a paper's table: in its captions
    captions = re.findall(r"\\caption\{(.*)\}", tex)
    assert captions and all("ms\\_ssim has no value on 4 of 8 scored rows" in c for c in captions), captions
    rc, _, err = run_cli(["leaderboard", run_dir, "--metric", "ms_ssim", "--bootstrap", "0"], capsys)
    assert rc == 1 and f"No values for metric(s) ms_ssim in these runs ({gap}); present: psnr." in err, err
    rc, _, err = run_cli(["plot", run_dir, "--metric", "ms_ssim"], capsys)
    assert rc == 1 and f"ms_ssim was not computed in {run_dir}: {gap}; plottable" in err, err
    mixed = str(tmp_path / "mixed")  # compare says it too, and a NEW without any value is refused with the reason
    assert run_cli(["plot", mixed], capsys)[0] == 0  # and the figure, in its legend
    figures = {m: (tmp_path / "mixed" / "plots" / f"rd_{m}.svg").read_text() for m in ("ms_ssim", "psnr")}
    assert "note: ms_ssim has no value on" in figures["ms_ssim"] and "note:" not in figures["psnr"]
    said = json.loads((tmp_path / "mixed" / "metrics.json").read_text())  # and the file DVC and CI read
    assert said["metric_gaps"] == {"ms_ssim": f"ms_ssim has no value on 4 of 8 scored rows ({why}): its means are "
                                              "over the others"} and "ms_ssim@jpeg/quality=30" in said
    rc, out, _ = run_cli(["compare", mixed, mixed, "--bootstrap", "0"], capsys)
    assert rc == 0 and out.startswith(f"warning: in BASE and NEW, ms_ssim has no value on 4 of 8 scored rows ({why})")
    rc, _, err = run_cli(["compare", mixed, run_dir, "--bootstrap", "0", "--allow-different-data"], capsys)
    assert rc != 0 and f"metric ms_ssim is in BASE but not in NEW (in NEW, {gap}), for jpeg" in err, err


def test_asking_for_the_rate_as_a_metric_or_for_no_date_is_one_sentence_before_any_work(tmp_path, capsys):
    """`plot --metric bpp` drew bpp against bpp, `history --metric bpp` followed it over the commits, `leaderboard
    --metric bpp` said bpp had no values; `history --since 2020-13-01` read every run, then said 'month must be in
    1..12', naming no flag."""
    said = ("error: --metric bpp: bpp is the rate, every curve's x axis; --metric names what is measured against it "
            "(psnr, psnr_y, ms_ssim, ...).\n")
    assert run_cli(["run", "--codec", "jpeg quality=50,80", "--limit", "2", "--out", str(tmp_path), "--name", "r",
                    *QUIET], capsys)[0] == 0
    run_dir = str(tmp_path / "r")
    for args in (["plot", run_dir, "--metric", "bpp"], ["leaderboard", run_dir, "--metric", "bpp"],
                 ["history", run_dir, "--metric", "bpp", "--out", str(tmp_path / "h")]):
        rc, _, err = run_cli(args, capsys)
        assert rc == 1 and err == said, (args, err)
    assert not (tmp_path / "r" / "plots" / "rd_bpp.png").exists() and not (tmp_path / "h").exists()
    for since, why in (("2020-13-01", "month must be in 1..12"), ("2020-1x-01", "Invalid isoformat string: "
                                                                            "'2020-1x-01'")):
        rc, _, err = run_cli(["history", str(tmp_path / "none"), "--since", since], capsys)  # before the runs are read
        assert rc == 1 and err == f"error: --since {since}: not a date ({why}); give YYYY-MM-DD or a commit sha.\n"


def test_a_figure_s_text_size_is_positive_and_its_size_reads_as_written(tmp_path, capsys):
    """`plot --font-size 0` or -2 drew a figure whose text was unreadable specks; `--size 3.5x2.5`, the way
    sizes are usually written, was refused."""
    assert run_cli(["run", "--codec", "jpeg quality=30,80", "--limit", "2", "--out", str(tmp_path), "--name", "r",
                    *QUIET], capsys)[0] == 0
    for size in ("0", "-2"):
        rc, _, err = run_cli(["plot", str(tmp_path / "r"), "--font-size", size, "--out", str(tmp_path / "f")], capsys)
        assert rc == 1 and err == f"error: --font-size {size}: a text size in points lies in (0, 100], e.g. 8.\n"
    assert not (tmp_path / "f").exists()
    assert cli.figure_size("3.5x2.5") == cli.figure_size("3.5,2.5") == (3.5, 2.5)
    rc, out, _ = run_cli(["plot", str(tmp_path / "r"), "--style", "paper", "--size", "3.5x2.5", "--out",
                          str(tmp_path / "f")], capsys)
    assert rc == 0 and str(tmp_path / "f" / "rd_psnr.pdf") in out


def test_a_rate_given_twice_is_one_sentence():
    """`leaderboard --rates 0.5,0.5` tabled two columns '@ 0.5 bpp'."""
    assert cli._rates("0.25,0.5") == [0.25, 0.5]
    with pytest.raises(ValueError) as caught:
        cli._rates("0.5,1,0.50")
    assert str(caught.value) == "--rates 0.5,1,0.50: 0.5 is given more than once."
