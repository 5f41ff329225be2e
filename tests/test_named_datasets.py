"""Named datasets, image lists and protocol presets, against a server started on 127.0.0.1 in the test."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import os
import shutil
import threading
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmark import cli
from benchmark.data import named_datasets

QUIET = ["--metrics", "none", "--lpips", "none", "--no-ms-ssim", "--caption-embedder", "none", "--no-plots",
         "--no-progress"]


class FakeServer:
    """Serves bytes by path, honours Range requests, and can cut a response short once."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}  # path -> bytes sent before the connection drops (once)
        self.ranges: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 - the http.server API
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    server.ranges.append(self.headers["Range"])
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                body = data[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.cut.pop(self.path, None)
                self.wfile.write(body[:cut] if cut is not None else body)
                if cut is not None:
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _png(seed: int, size=(96, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    img = np.stack([128 + 60 * np.sin(x / (5 + c) + seed) for c in range(3)], -1) + rng.normal(0, 6, (*x.shape, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def served(monkeypatch, tmp_path):
    """div2k-valid as a small fake archive under its declared file name, served on 127.0.0.1 (the mirror
    variable overrides the address), with the catalog's size and checksum those of the fake."""
    server = FakeServer()
    archive = _zip({f"DIV2K_valid_HR/08{k:02d}.png": _png(k) for k in range(1, 4)})
    server.files["/div2k-valid/DIV2K_valid_HR.zip"] = archive
    entry = named_datasets.CATALOG["div2k-valid"]
    fake = dataclasses.replace(entry, sources=(dataclasses.replace(entry.sources[0], size=len(archive),
                                                                   sha256=hashlib.sha256(archive).hexdigest()),))
    monkeypatch.setitem(named_datasets.CATALOG, "div2k-valid", fake)
    monkeypatch.setenv(named_datasets.ENV_MIRROR, server.url)
    monkeypatch.setenv(named_datasets.ENV_ROOT, str(tmp_path / "data"))
    yield server, archive, tmp_path / "data"
    server.close()


def run_cli(args, capsys):
    rc = cli.main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_fetch_downloads_verifies_unpacks_and_the_name_then_runs(served, tmp_path, capsys):
    server, archive, root = served
    rc, out, err = run_cli(["datasets", "fetch", "div2k-valid", "--no-progress"], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in (root / "div2k-valid").rglob("*.png")) == ["0801.png", "0802.png", "0803.png"]
    assert (root / ".downloads" / "div2k-valid" / "DIV2K_valid_HR.zip").read_bytes() == archive
    rc, out, _ = run_cli(["datasets", "list"], capsys)
    assert rc == 0 and any(line.startswith("div2k-valid") and " yes " in line for line in out.splitlines())
    assert run_cli(["datasets"], capsys)[:2] == (0, out)  # alone, it lists them too (it raised AttributeError)
    rc, out, err = run_cli(["run", "--dataset", "div2k-valid", "--codec", "jpeg quality=50", "--out",
                            str(tmp_path / "runs"), "--name", "r", *QUIET], capsys)
    assert rc == 0, err
    info = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())
    assert info["dataset"]["name"] == "div2k-valid" and info["dataset"]["n_images"] == 3
    assert info["dataset"]["origin"]["sources"][0]["sha256"] == hashlib.sha256(archive).hexdigest()
    rows = pd.read_parquet(tmp_path / "runs" / "r" / "images")
    assert (rows.dataset == "div2k-valid").all() and (rows.status == "ok").all()


def test_a_corrupted_archive_is_refused_in_one_sentence_and_removed(served, capsys):
    server, archive, root = served
    server.files["/div2k-valid/DIV2K_valid_HR.zip"] = archive[:-10] + b"0123456789"  # same size, other bytes
    rc, _, err = run_cli(["datasets", "fetch", "div2k-valid", "--no-progress"], capsys)
    assert rc == 1 and err.count("\n") == 1 and "expected" in err and "deleted" in err, err
    assert list((root / ".downloads" / "div2k-valid").iterdir()) == []  # neither the file nor a partial one
    assert not (root / "div2k-valid").exists()


def test_a_download_cut_midway_resumes(served, capsys):
    server, archive, root = served
    server.cut["/div2k-valid/DIV2K_valid_HR.zip"] = len(archive) // 2
    rc, _, err = run_cli(["datasets", "fetch", "div2k-valid", "--no-progress"], capsys)
    assert rc == 1 and "the next fetch resumes" in err, err
    kept = root / ".downloads" / "div2k-valid" / "DIV2K_valid_HR.zip.partial"
    assert kept.stat().st_size == len(archive) // 2
    rc, _, err = run_cli(["datasets", "fetch", "div2k-valid", "--no-progress"], capsys)
    assert rc == 0, err
    assert server.ranges == [f"bytes={len(archive) // 2}-"]  # only the rest was asked for
    assert (root / ".downloads" / "div2k-valid" / "DIV2K_valid_HR.zip").read_bytes() == archive


def test_with_the_server_down_the_message_says_where_to_put_the_files(served, tmp_path, capsys, monkeypatch):
    server, archive, root = served
    server.close()
    rc, _, err = run_cli(["datasets", "fetch", "div2k-valid", "--no-progress"], capsys)
    assert rc == 1 and err.count("\n") == 1 and f"put DIV2K_valid_HR.zip in {root / '.downloads' / 'div2k-valid'}" in err
    rc, _, err = run_cli(["run", "--dataset", "div2k-valid", "--out", str(tmp_path / "runs"), *QUIET], capsys)
    assert rc == 1 and err.count("\n") == 1 and "datasets fetch div2k-valid" in err
    assert "put DIV2K_valid_HR.zip (from" in err and str(root / ".downloads" / "div2k-valid") in err
    # a copy placed there by hand is verified and used, without the network
    (root / ".downloads" / "div2k-valid").mkdir(parents=True, exist_ok=True)
    (root / ".downloads" / "div2k-valid" / "DIV2K_valid_HR.zip").write_bytes(archive)
    rc, _, err = run_cli(["run", "--dataset", "div2k-valid", "--codec", "jpeg quality=50", "--out",
                          str(tmp_path / "runs"), *QUIET], capsys)
    assert rc == 0, err


def _fetch_kodak(server, monkeypatch, tmp_path, capsys):
    """24 small Kodak stand-ins served on 127.0.0.1 and fetched into tmp_path/data, which is returned."""
    for k in range(1, 25):
        server.files[f"/kodak/kodim{k:02d}.png"] = _png(k, (48, 32))
    monkeypatch.setenv(named_datasets.ENV_MIRROR, server.url)
    root = tmp_path / "data"
    rc, _, err = run_cli(["datasets", "fetch", "kodak", "--root", str(root), "--no-progress"], capsys)
    assert rc == 0, err
    return root


def test_pinned_files_are_recorded_at_the_first_fetch_and_checked_after(monkeypatch, tmp_path, capsys):
    """Kodak has no published checksums: the first fetch records them, a changed file is refused later."""
    server = FakeServer()
    try:
        root = _fetch_kodak(server, monkeypatch, tmp_path, capsys)
        pins = json.loads((root / ".downloads" / "kodak" / "pins.json").read_text())
        assert pins["kodim07.png"] == hashlib.sha256(server.files["/kodak/kodim07.png"]).hexdigest()
        (root / ".downloads" / "kodak" / "kodim07.png").write_bytes(_png(99, (48, 32)))
        rc, _, err = run_cli(["run", "--dataset", "kodak", "--data-root", str(root), "--out", str(tmp_path / "r"),
                              *QUIET], capsys)
        assert rc == 1 and "kodim07.png changed since its first fetch" in err, err
    finally:
        server.close()


def _image_folder(tmp_path, n: int):
    """tmp_path/imgs with im0.png ... im{n-1}.png."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(n):
        (folder / f"im{k}.png").write_bytes(_png(k))
    return folder


def test_an_image_list_with_missing_ids_fails_before_any_work(tmp_path, capsys):
    folder = _image_folder(tmp_path, 5)
    listed = tmp_path / "list.txt"
    listed.write_text("im1\nim3.png\nnope-1\nnope-2\n")
    rc, _, err = run_cli(["run", "--dataset", str(folder), "--image-list", str(listed), "--out", str(tmp_path / "runs"),
                          *QUIET], capsys)
    assert rc == 1 and "2 of 4 listed images are not in" in err and "nope-1, nope-2" in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing was started
    listed.write_text("# a comment\nim1\nim3.png\n")
    rc, _, err = run_cli(["run", "--dataset", str(folder), "--image-list", str(listed), "--codec", "jpeg quality=50",
                          "--out", str(tmp_path / "runs"), "--name", "r", *QUIET], capsys)
    assert rc == 0, err
    info = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())
    assert info["dataset"]["n_images"] == 2
    assert info["dataset"]["origin"]["image_list"]["sha256"] == hashlib.sha256(listed.read_bytes()).hexdigest()
    assert sorted(pd.read_parquet(tmp_path / "runs" / "r" / "images").image_id) == ["im1.png", "im3.png"]


def test_an_image_list_that_repeats_an_image_says_each_is_evaluated_once(tmp_path, capsys):
    """A list of captions' images (MS-COCO 30k) names an image once per caption: the run evaluates each image once
    and says so as it starts, and config.json keeps the note."""
    folder = _image_folder(tmp_path, 3)
    listed = tmp_path / "captions30k.txt"
    listed.write_text("im1\nim2.png\nim1.png\nim1\n")
    rc, _, err = run_cli(["run", "--dataset", str(folder), "--image-list", str(listed), "--codec", "jpeg quality=50",
                          "--out", str(tmp_path / "runs"), "--name", "r", *QUIET], capsys)
    assert rc == 0, err
    said = ("--image-list captions30k.txt: 4 lines name 2 images (2 lines repeat an image listed before): each image "
            "is evaluated once")
    assert f"note: {said}\n" in err
    info = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())
    assert info["dataset"]["n_images"] == 2 and info["dataset"]["notes"] == [said]


def test_a_seeded_draw_of_an_image_list_is_reproducible(tmp_path, capsys):
    from benchmark.data.datasets import draw_image_list, open_dataset

    data = open_dataset("sample:40", "all")
    first, again, other = draw_image_list(data, 12, 0), draw_image_list(data, 12, 0), draw_image_list(data, 12, 1)
    assert first == again != other and len(set(first)) == 12
    with pytest.raises(ValueError, match="Cannot draw 41 images"):
        draw_image_list(data, 41)


def test_protocol_perco_resizes_to_512_and_is_recorded(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(2):
        (folder / f"im{k}.png").write_bytes(_png(k, (300, 200)))
    rc, _, err = run_cli(["run", "--dataset", str(folder), "--protocol", "perco", "--codec", "jpeg quality=50",
                          "--out", str(tmp_path / "runs"), "--name", "r", *QUIET], capsys)
    assert rc == 0, err
    info = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())
    assert info["protocol"]["name"] == "perco" and info["dataset"]["preprocess"] == "resize-512"
    assert info["config"]["protocol"] == "perco"
    rows = pd.read_parquet(tmp_path / "runs" / "r" / "images")
    assert (rows.width == 512).all() and (rows.height == 512).all()
    rc, _, err = run_cli(["run", "--dataset", str(folder), "--protocol", "perco", "--preprocess", "none",
                          "--out", str(tmp_path / "runs"), *QUIET], capsys)
    assert rc == 1 and "drop --preprocess none" in err


def test_protocol_hific_on_kodak_sized_images_gives_patch_fid_and_no_whole_image_fid(tmp_path, capsys,
                                                                                      random_inception_weights):
    folder = tmp_path / "kodak-like"
    folder.mkdir()
    for k in range(3):
        (folder / f"kodim{k:02d}.png").write_bytes(_png(k, (768, 512)))
    rc, _, err = run_cli(["run", "--dataset", str(folder), "--protocol", "hific", "--codec", "jpeg quality=30,70",
                          "--inception-weights", str(random_inception_weights), "--out", str(tmp_path / "runs"),
                          "--name", "r", "--lpips", "none", "--caption-embedder", "none", "--no-plots",
                          "--no-progress"], capsys)
    assert rc == 0, err
    info = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())
    assert info["protocol"]["name"] == "hific" and info["dataset"]["preprocess"] == "none"
    assert info["config"]["inception"]["whole_image_fid"] is False and info["config"]["inception"]["patch_fid"]
    for name in ("fid", "kid", "inception_score"):
        assert info["metrics"][name]["status"] == "disabled" and "patches" in info["metrics"][name]["reason"]
    summary = pd.read_parquet(tmp_path / "runs" / "r" / "summary.parquet")
    assert "fid" not in summary or summary.fid.isna().all()  # no whole-image FID
    assert (summary.n_patches == 3 * 8).all()  # 6 patches of the grid and 2 of the shifted grid per image
    assert summary.patch_fid.isna().all() and summary.inception_note.str.contains("24 < 2048 patches").all()
    rows = pd.read_parquet(tmp_path / "runs" / "r" / "images")
    assert (rows.width == 768).all() and rows.ipd.notna().all()  # full resolution; per-image IPD stays


def test_with_the_server_down_kodak_s_message_counts_every_file_still_needed(monkeypatch, tmp_path, capsys):
    """The first failed download used to name kodim01.png alone; the sentence counts and names every missing file."""
    server = FakeServer()
    server.close()
    monkeypatch.setenv(named_datasets.ENV_MIRROR, server.url)
    root = tmp_path / "data"
    rc, _, err = run_cli(["datasets", "fetch", "kodak", "--root", str(root), "--no-progress"], capsys)
    store = root / ".downloads" / "kodak"
    assert rc == 1 and err.count("\n") == 1 and f"put the 24 files kodim01.png ... kodim24.png in {store}" in err, err
    assert named_datasets._files_phrase(["kodim03.png", "kodim04.png", "kodim06.png"]) == \
        "the 3 files kodim03.png, kodim04.png, kodim06.png"  # not a run: each named
    assert named_datasets._files_phrase(["a.zip", "b.zip"]) == "a.zip and b.zip"


def test_image_list_of_a_folder_filled_by_hand_offers_what_image_list_can_do(tmp_path, capsys):
    """`datasets image-list kodak` on a kodak/ folder filled by hand said "or run on the folder as it is with
    --dataset ...", a flag that command does not have; it offers the image-list command of the folder itself, which
    draws the same list as a run of that folder reads."""
    root = tmp_path / "data"
    (root / "kodak").mkdir(parents=True)
    for k in range(1, 25):
        (root / "kodak" / f"kodim{k:02d}.png").write_bytes(_png(k, (48, 32)))
    listed = tmp_path / "list.txt"
    rc, _, err = run_cli(["datasets", "image-list", "kodak", "--data-root", str(root), "--draw", "5", "--out",
                          str(listed)], capsys)
    offered = f"datasets image-list {root / 'kodak'} --draw 5 --seed 0 --out {listed}."
    assert rc == 1 and err.count("\n") == 1 and "--dataset" not in err and err.rstrip().endswith(offered), err
    assert f"{root / 'kodak'} holds 24 files, but not as cmcbench fetched kodak" in err and not listed.exists()
    rc, out, _ = run_cli(["datasets", "image-list", str(root / "kodak"), "--draw", "5", "--out", str(listed)], capsys)
    assert rc == 0 and len(listed.read_text().split()) == 5, out
    rc, out, _ = run_cli(["run", "--dataset", str(root / "kodak"), "--image-list", str(listed), "--codec",
                          "jpeg quality=50", "--out", str(tmp_path / "runs"), *QUIET], capsys)
    assert rc == 0 and "(all, 5 images)" in out, out


def test_kodak_copied_into_the_data_root_by_hand_is_named_as_such_and_the_advice_works(tmp_path, capsys):
    """A data root whose kodak/ folder holds the 24 images, put there by hand: the error said the dataset "is not in"
    that folder. It now says what the folder holds and why it is not trusted, and moving the files as it says runs
    (offline); an empty root gets the whole fetch command in one code span."""
    root, empty = tmp_path / "data", tmp_path / "empty"
    (root / "kodak").mkdir(parents=True)
    for k in range(1, 25):
        (root / "kodak" / f"kodim{k:02d}.png").write_bytes(_png(k, (48, 32)))
    common = ["--dataset", "kodak", "--codec", "jpeg quality=50", "--out", str(tmp_path / "runs"), *QUIET]
    rc, _, err = run_cli(["run", *common, "--data-root", str(root)], capsys)
    store = root / ".downloads" / "kodak"
    assert rc == 1 and err.count("\n") == 1, err
    assert f"{root / 'kodak'} holds 24 files, but not as cmcbench fetched kodak" in err and "is not in" not in err
    assert f"move the 24 files kodim01.png ... kodim24.png into {store} and run again" in err, err
    assert f"or run on the folder as it is with --dataset {root / 'kodak'}." in err, err
    rc, _, err = run_cli(["run", *common, "--data-root", str(empty)], capsys)
    assert rc == 1 and f"run `python bench.py datasets fetch kodak --data-root {empty}`, or, offline" in err, err
    rc, out, _ = run_cli(["datasets", "list", "--data-root", str(root)], capsys)  # the listing says so too
    kodak = next(line for line in out.splitlines() if line.startswith("kodak "))
    assert rc == 0 and "not fetched*" in kodak and str(root / "kodak") in kodak, out
    assert "* holds files cmcbench did not fetch" in out
    shutil.move(root / "kodak", store)  # as the first message says
    rc, out, err = run_cli(["run", *common, "--data-root", str(root), "--name", "moved"], capsys)
    assert rc == 0 and "Run moved: kodak (all, 24 images)" in out, err + out


def test_a_named_dataset_given_with_a_folder_like_cub_says_how_it_is_opened(tmp_path, capsys):
    """--dataset kodak:DIR (as one writes cub:DIR) said "Unknown dataset kind 'kodak'", as if there were no Kodak."""
    rc, _, err = run_cli(["run", "--dataset", f"kodak:{tmp_path}", *QUIET], capsys)
    assert rc == 1 and err.count("\n") == 1, err
    assert "kodak is a named dataset, opened by its name: --dataset kodak --data-root DIR reads DIR/kodak" in err
    assert f"--dataset folder:{tmp_path}." in err and "Unknown" not in err


def test_unpacked_files_are_checked_at_every_use(monkeypatch, tmp_path, capsys):
    """A changed byte, a missing or an extra file in an unpacked named dataset is refused naming the file; a file only
    touched is hashed once and passes; --allow-modified-dataset runs on and records what differed."""
    server = FakeServer()
    try:
        root = _fetch_kodak(server, monkeypatch, tmp_path, capsys)
    finally:
        server.close()
    common = ["--dataset", "kodak", "--data-root", str(root), "--codec", "jpeg quality=50", *QUIET]
    image = root / "kodak" / "kodim07.png"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))  # touched, not changed
    rc, _, err = run_cli(["run", *common, "--out", str(tmp_path / "ok")], capsys)
    assert rc == 0, err
    manifest = json.loads((root / ".downloads" / "kodak" / named_datasets.MANIFEST).read_text())["files"]
    assert manifest["kodim07.png"]["mtime_ns"] == image.stat().st_mtime_ns  # the fast path holds again
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 1  # one changed byte, same size
    image.write_bytes(bytes(data))
    (root / "kodak" / "kodim25.png").write_bytes(_png(25, (48, 32)))
    (root / "kodak" / "kodim03.png").unlink()
    rc, _, err = run_cli(["run", *common, "--out", str(tmp_path / "refused")], capsys)
    assert rc == 1 and err.count("\n") == 1 and not (tmp_path / "refused").exists()
    for said in ("kodim03.png is missing", "kodim25.png was added", "kodim07.png changed", "--allow-modified-dataset"):
        assert said in err, err
    rc, _, err = run_cli(["run", *common, "--allow-modified-dataset", "--allow-failures", "--out",
                          str(tmp_path / "anyway"), "--name", "m"], capsys)  # the flipped byte breaks kodim07's CRC
    assert rc == 0, err
    info = json.loads((tmp_path / "anyway" / "m" / "config.json").read_text())
    assert info["config"]["allow_modified_dataset"] is True and len(info["dataset"]["origin"]["modified"]) == 3
    ok = json.loads(next((tmp_path / "ok").glob("*/config.json")).read_text())
    assert "allow_modified_dataset" not in ok["config"] and "modified" not in ok["dataset"]["origin"]
