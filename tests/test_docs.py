"""Every command of the README and docs/ runs as written.

Each page's ```bash blocks are read in order and every `python bench.py ...` line is run through the
command line, in a sandbox: a fresh working directory (so `results/` is the page's own), a home folder
whose `~/data/kodak` is a folder of small images, and Kodak served on 127.0.0.1 for `datasets fetch kodak`.
A command exits 0 unless its comment says `# exit N`. A block that needs what a test cannot have (your
copy of MS-COCO, model weights, a Ray cluster, another program) is preceded by `<!-- not run: why -->`:
its commands must still parse with today's options, so the docs never show a flag that does not exist.
"""

import io
import pathlib
import re
import shlex

import numpy as np
import pytest
from PIL import Image

from benchmark import cli
from benchmark.data import named_datasets
from test_named_datasets import FakeServer

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")
EXIT = re.compile(r"#\s*exit\s+(\d+)\b")


def commands(page: pathlib.Path) -> list[tuple[str, int | None, str | None]]:
    """(command, expected exit status, why it is not run) for every `python bench.py` line of a page's
    ```bash blocks, in order."""
    out, block, skip, last = [], None, None, ""
    for line in page.read_text().splitlines():
        if block is None:
            if line.startswith("```"):
                block = line[3:].strip()
                reason = NOT_RUN.search(last)
                skip = reason.group(1) if reason else None
            elif line.strip():
                last = line
            continue
        if line.startswith("```"):
            block, last = None, ""
            continue
        if block == "bash" and line.startswith("python bench.py"):
            status = EXIT.search(line)
            out.append((line, int(status.group(1)) if status else 0, skip))
    return out


def argv(line: str) -> list[str]:
    """The arguments after `python bench.py`, without the trailing comment."""
    words = shlex.split(line, comments=True)
    assert words[:2] == ["python", "bench.py"], line
    return words[2:]


def _png(seed: int, size=(64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    base = np.stack([128 + 90 * np.sin(x / (5 + seed % 5) + c) * np.cos(y / (7 + c)) for c in range(3)], -1)
    buf = io.BytesIO()
    Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "data" / "kodak").mkdir(parents=True)
    for k in range(1, 7):
        (home / "data" / "kodak" / f"kodim{k:02d}.png").write_bytes(_png(k, (192, 168)))  # MS-SSIM's 161 px
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(named_datasets.ENV_ROOT, raising=False)
    server = FakeServer()
    for k in range(1, 25):
        server.files[f"/kodak/kodim{k:02d}.png"] = _png(100 + k, (96, 64))
    monkeypatch.setenv(named_datasets.ENV_MIRROR, server.url)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work
    server.close()


def test_every_page_has_commands_and_every_skipped_block_says_why():
    assert len(PAGES) >= 9, [p.name for p in PAGES]
    for page in PAGES:
        text = page.read_text()
        for reason in NOT_RUN.findall(text):
            assert len(reason) > 10, (page.name, reason)
    assert sum(1 for p in PAGES for _, _, skip in commands(p) if skip is None) >= 40


def runs() -> set[str]:
    """The run folders under the working directory's results/."""
    return {p.name for p in pathlib.Path("results").iterdir()} if pathlib.Path("results").is_dir() else set()


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_the_commands_of_a_page_run_as_written(page, sandbox, capsys):
    parser = cli.build_parser()
    for line, status, skip in commands(page):
        args = argv(line)
        if skip:
            try:
                parser.parse_args(args)
            except SystemExit as exc:  # an option the docs show but the command line does not have
                pytest.fail(f"{page.name}: {line!r} does not parse ({capsys.readouterr().err.strip()})")
            continue
        before = runs()
        try:
            rc = cli.main(args)
        except SystemExit as exc:  # argparse's own refusals exit 2
            rc = exc.code
        out, err = capsys.readouterr()
        assert rc == status, f"{page.name}: {line!r} exited {rc}, not {status}:\n{out[-1500:]}\n{err[-1500:]}"
        suggestion = re.search(r"did you mean \S+?\?", line)
        if suggestion:  # a page that promises a suggestion shows the one the command line gives
            assert suggestion.group(0)[:-1] in err.replace("'", ""), (line, err)
        if status:  # a refusal: one sentence, and no run folder left behind
            assert err.strip().count("\n") == 0 and runs() == before, (line, err)
