"""Faults injected into small runs, each compared with a clean run of the same configuration: damaged results
are named before any number is read from them, caches are caches, runs can be moved, edits are refused,
every stop is clean and a full or read-only disk is one sentence."""

import errno
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from benchmark import cli
from benchmark.codecs.codec_spec import parse_codec_spec
from benchmark.run.integrity import DamagedFile
from benchmark.run.results import load_run, load_summary
from benchmark.run.runner import RunConfig, create_run, execute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = ["--no-progress", "--no-plots"]
TIMING = ["encode_s", "decode_s", "metric_s", "score_s", "read_s"]
VOLATILE = TIMING + ["run_id", "created"]


def config(inception=None, n=8, codecs=("jpeg quality=30,70", "webp")):
    return RunConfig(dataset=f"sample:{n}", split="all", codecs=[parse_codec_spec(c) for c in codecs],
                     inception=inception or {"enabled": False}, caption_embedder="none",
                     image_metrics={"ms_ssim": False, "lpips": "none"}, chunk_size=2, codec_batch=2)


def with_inception(weights):
    """Inception on (random-init weights) for one codec: the tests that need it stay short."""
    return {"enabled": True, "weights": str(weights), "device": "cpu", "batch_size": 8, "isc_splits": 1,
            "kid_subsets": 4, "kid_subset_size": 4, "seed": 2020}


def made(out, name, cfg):
    run_dir = create_run(cfg, out, name, progress=False)
    execute(run_dir, jobs=1, progress=False)
    return run_dir


def same_rows(a, b):
    (ra, sa), (rb, sb) = load_run(a), load_run(b)
    keep = [c for c in ra.columns if c not in VOLATILE]
    pd.testing.assert_frame_equal(ra[keep], rb[keep])
    cols = [c for c in sa.columns if c not in VOLATILE and not c.endswith("_seconds") and "passes" not in c]
    pd.testing.assert_frame_equal(sa[cols], sb[cols])


def cli_run(args, capsys):
    rc = cli.main(args)
    out, err = capsys.readouterr()
    return rc, out, err


DAMAGE = {
    "byte at 10%": lambda b: b[:len(b) // 10] + bytes([b[len(b) // 10] ^ 0x40]) + b[len(b) // 10 + 1:],
    "byte at 50%": lambda b: b[:len(b) // 2] + bytes([b[len(b) // 2] ^ 0x01]) + b[len(b) // 2 + 1:],
    "byte in the footer": lambda b: b[:-40] + bytes([b[-40] ^ 0x08]) + b[-39:],
    "zeroed": lambda b: bytes(len(b)),
    "truncated": lambda b: b[: len(b) // 3],
}


@pytest.fixture(scope="module")
def clean_run(hermetic_module, tmp_path_factory):
    return made(tmp_path_factory.mktemp("clean"), "clean", config())


@pytest.mark.parametrize("how", list(DAMAGE))
def test_a_damaged_shard_is_named_before_any_number_and_redone(how, clean_run, tmp_path, capsys):
    run_dir = made(tmp_path, "r", config())
    shard = run_dir / "images" / "jpeg" / "chunk-000001.parquet"
    shard.write_bytes(DAMAGE[how](shard.read_bytes()))
    with pytest.raises(DamagedFile, match="chunk-000001.parquet is damaged"):
        load_run(run_dir)
    for args in (["leaderboard", str(run_dir)], ["compare", str(clean_run), str(run_dir)],
                 ["run", "--resume", str(run_dir), *QUIET]):
        rc, out, err = cli_run(args, capsys)
        assert rc == 1 and "Traceback" not in err, (args, err)
        assert f"{shard} is damaged" in err and "--redo-damaged" in err, (args, err)
        assert "psnr" not in out.lower(), (args, out)  # nothing was printed from the run's numbers
    rc, _, err = cli_run(["run", "--resume", str(run_dir), "--redo-damaged", *QUIET], capsys)
    assert rc == 0, err
    same_rows(run_dir, clean_run)


def test_a_changed_summary_is_named_and_rewritten_by_resume(clean_run, tmp_path, capsys):
    run_dir = shutil.copytree(clean_run, tmp_path / "copy")
    summary = run_dir / "summary.parquet"
    summary.write_bytes(DAMAGE["byte at 50%"](summary.read_bytes()))
    rc, _, err = cli_run(["leaderboard", str(run_dir)], capsys)
    assert rc == 1 and f"{summary} is damaged" in err and f"--resume {run_dir}" in err, err
    assert cli_run(["run", "--resume", str(run_dir), *QUIET], capsys)[0] == 0
    same_rows(run_dir, clean_run)


@pytest.mark.parametrize("how", ["deleted", "swapped in from another run"])
def test_a_summary_whose_shards_changed_is_named_before_any_number(how, clean_run, tmp_path, capsys):
    """A shard deleted after the run finished (by hand, or missed by a partial copy), or another run's shard of the
    same name copied in with its checksum: each shard left passes its own check, but the summary is not theirs."""
    run_dir = shutil.copytree(clean_run, tmp_path / "copy")
    shard = run_dir / "images" / "jpeg" / "chunk-000001.parquet"
    if how == "deleted":
        shard.unlink()
    else:
        other = made(tmp_path, "other", config(codecs=("jpeg quality=40,80", "webp")))
        for name in (shard.name, f".{shard.name}.sha256"):
            shutil.copy(other / "images" / "jpeg" / name, shard.parent / name)
    summary, said = run_dir / "summary.parquet", "1 gone" if how == "deleted" else "1 rewritten"
    history = ["history", str(run_dir), "--out", str(tmp_path / "h")]
    track = ["track", str(run_dir), "--to", f"tensorboard:{tmp_path / 'tb'}"]
    for args in (["leaderboard", str(run_dir)], ["compare", str(clean_run), str(run_dir)], history, track):
        rc, out, err = cli_run(args, capsys)
        assert rc == 1 and "Traceback" not in err and "send it again" not in err, (args, err)
        assert f"{summary} is out of date" in err and f"{said} (images/jpeg/chunk-000001.parquet)" in err, (args, err)
        assert f"--resume {run_dir}" in err and "psnr" not in out.lower(), (args, out, err)
    if how == "deleted":  # resume redoes the missing task and writes the summary again
        assert cli_run(["run", "--resume", str(run_dir), *QUIET], capsys)[0] == 0
        same_rows(run_dir, clean_run)


@pytest.mark.parametrize("how", ["truncated", "not an object", "truncated, in a run without a seal"])
def test_a_damaged_config_json_is_named_with_the_way_back(how, clean_run, tmp_path, capsys):
    """config.json cut short (a full disk in a copy, an editor) was a JSON parser's message that named no file."""
    run_dir = shutil.copytree(clean_run, tmp_path / "copy")
    path, sealed = run_dir / "config.json", run_dir / ".config.sealed.json"
    path.write_bytes(b"[1, 2]" if how == "not an object" else path.read_bytes()[:200])
    if "without a seal" in how:
        sealed.unlink()
    way_back = "restore the run from a copy" if "without a seal" in how else f"cp {sealed} {path}"
    history = ["history", str(run_dir), "--out", str(tmp_path / "h")]
    track = ["track", str(run_dir), "--to", f"tensorboard:{tmp_path / 'tb'}"]
    for args in (["leaderboard", str(run_dir)], ["compare", str(clean_run), str(run_dir)], history, track,
                 ["export", str(run_dir), str(tmp_path / "e")]):
        rc, out, err = cli_run(args, capsys)
        assert rc == 1 and "Traceback" not in err and "send it again" not in err, (args, err)
        assert f"{path} is damaged (not " in err and way_back in err and "psnr" not in out.lower(), (args, out, err)
    if "without a seal" not in how:  # the way back it names works
        shutil.copy(sealed, path)
        assert cli_run(["leaderboard", str(run_dir)], capsys)[0] == 0


def test_a_run_not_finished_is_said_so_and_not_sent_on(clean_run, tmp_path, capsys):
    """A killed run (no summary yet) was read as a finished run whose missing images had failed ("the others failed
    (the run's failure_reasons say why)", in compare "failed in BASE or NEW"), and was sent to a tracker and
    exported as a published curve as if its numbers were final."""
    from benchmark.run.run_folder import locked

    run_dir = shutil.copytree(clean_run, tmp_path / "copy")
    for path in (run_dir / "summary.parquet", run_dir / ".summary.parquet.sha256",
                 *(run_dir / "images" / "webp").glob("*chunk-000001.parquet*")):
        path.unlink()
    said = f"{run_dir} is not finished: its values rest on the 7 tasks done so far, and its summary is not written"
    rc, out, _ = cli_run(["leaderboard", str(run_dir), "--bootstrap", "0"], capsys)
    assert rc == 0 and f"Warning: {said} (killed or stopped: finish it with: python bench.py run --resume {run_dir})" \
        in out and "failed (the run's failure_reasons say why) or are not done yet" in out, out
    rc, out, _ = cli_run(["compare", str(clean_run), str(run_dir), "--bootstrap", "0"], capsys)
    assert rc == 0 and f"warning: {said}" in out and "the others failed, or are not done yet, in BASE or NEW" in out
    rc, out, _ = cli_run(["history", str(clean_run), str(run_dir), "--out", str(tmp_path / "h")], capsys)
    assert rc == 0 and f"note: {said}" in out, out
    early = shutil.copytree(run_dir, tmp_path / "early")  # killed before it reached webp at all
    shutil.rmtree(early / "images" / "webp")
    rc, out, err = cli_run(["compare", str(clean_run), str(early)], capsys)
    assert rc != 0 and err.startswith("error: NEW lacks part of BASE (codec webp is in BASE but not in NEW): "
                                      f"{early} is not finished") and "; or pass --allow-missing" in err, err
    for args, what in ((["track", str(run_dir), "--to", f"tensorboard:{tmp_path / 'tb'}"], "Not sent"),
                       (["export", str(run_dir), str(tmp_path / "e")], "Not exported"),
                       (["export", str(run_dir), str(tmp_path / "e"), "--format", "metrics"], "Not exported")):
        rc, out, err = cli_run(args, capsys)
        assert rc == 1 and err.startswith(f"error: {what}: {said}") and not (tmp_path / "e").exists(), (args, err)
    assert not (tmp_path / "tb").exists()
    assert cli_run(["report", str(run_dir), "--bootstrap", "0", "--images", "0"], capsys)[0] == 0
    report = (run_dir / "report" / "report.md").read_text()
    assert f"Warning: {said}" in report and "(n/N; the rest are not done yet or failed, see Failures)" in report
    with locked(run_dir):  # a run another process is working on now
        rc, out, _ = cli_run(["leaderboard", str(run_dir), "--bootstrap", "0"], capsys)
        assert f"{said} (still running: wait for it to finish)" in out, out
    assert cli_run(["run", "--resume", str(run_dir), *QUIET], capsys)[0] == 0
    same_rows(run_dir, clean_run)
    for args in (["leaderboard", str(run_dir), "--bootstrap", "0"], ["compare", str(clean_run), str(run_dir)]):
        rc, out, _ = cli_run(args, capsys)
        assert rc == 0 and "not finished" not in out and "not done yet" not in out, (args, out)



def test_load_run_of_a_run_not_finished_warns_as_the_command_line_says(clean_run, tmp_path, capsys):
    """`load_run`, the README's way to read numbers in Python, gave a killed run's rows and summary as if final; it
    warns now, with the sentence the command-line readers print, and they print it once, with no Python warning."""
    import warnings

    from benchmark.run.results import UnfinishedRun, load_run, unfinished

    run_dir = shutil.copytree(clean_run, tmp_path / "copy")
    for path in (run_dir / "summary.parquet", run_dir / ".summary.parquet.sha256"):
        path.unlink()
    with pytest.warns(UnfinishedRun) as caught:
        images, summary = load_run(run_dir)
    assert [str(w.message) for w in caught] == [unfinished(run_dir) + "."] and len(caught) == 1
    assert caught[0].filename == __file__  # the caller's line, not cmcbench's
    assert len(images) == len(load_run(clean_run)[0]) and len(summary)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_run(clean_run)  # finished: nothing to say
        for args in (["leaderboard", str(run_dir)], ["report", str(run_dir), "--bootstrap", "10", "--images", "1"]):
            assert cli_run(args, capsys)[0] == 0
    assert not [w for w in caught if issubclass(w.category, UnfinishedRun)], [str(w.message) for w in caught]
    captions = re.findall(r"\\caption\{(.*)\}", (run_dir / "leaderboard" / "leaderboard.tex").read_text())
    assert captions and all("Warning: " in c and "is not finished" in c for c in captions), captions  # a paper's table

def test_the_copy_a_damaged_config_json_names_runs_as_printed_from_a_folder_with_spaces(clean_run, tmp_path, capsys):
    import shlex

    run_dir = shutil.copytree(clean_run, tmp_path / "my results" / "试验 1")
    (run_dir / "config.json").write_bytes(b"[")
    rc, _, err = cli_run(["leaderboard", str(run_dir)], capsys)
    command = shlex.split(err.split("holds what cmcbench wrote: ")[1].rstrip().removesuffix(")"))
    assert rc == 1 and command == ["cp", str(run_dir / ".config.sealed.json"), str(run_dir / "config.json")], err
    subprocess.run(command, check=True)
    assert cli_run(["leaderboard", str(run_dir), "--bootstrap", "0"], capsys)[0] == 0


def test_a_reader_of_a_few_columns_or_of_the_summary_alone_gets_what_load_run_gives(clean_run, tmp_path):
    """compare, leaderboard and the bootstrap read a few columns of a large run, or its summary alone; the values
    are load_run's, and a damaged shard is still named before the summary is read."""
    images, summary = load_run(clean_run)
    few, summary_again = load_run(clean_run, columns=["psnr", "codec", "image_id", "setting_index", "no_such_column"])
    assert sorted(few.columns) == ["codec", "image_id", "image_index", "psnr", "setting_index"]  # and sorted by
    pd.testing.assert_frame_equal(few, images[list(few.columns)])
    pd.testing.assert_frame_equal(summary_again, summary)
    pd.testing.assert_frame_equal(load_summary(clean_run), summary)
    run_dir = shutil.copytree(clean_run, tmp_path / "copy")
    shard = run_dir / "images" / "webp" / "chunk-000000.parquet"
    shard.write_bytes(DAMAGE["zeroed"](shard.read_bytes()))
    with pytest.raises(DamagedFile, match="chunk-000000.parquet is damaged"):
        load_summary(run_dir)


def test_results_are_written_with_the_users_umask(clean_run):
    for path in [clean_run / "config.json", clean_run / "summary.parquet", *clean_run.glob("images/*/*.parquet")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask(), path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fid(run_dir):
    values = load_run(run_dir)[1].set_index(["codec", "setting_index"])[["fid", "kid", "ipd"]]
    assert values.notna().all().all(), values  # numbers to compare, not NaN equal to NaN
    return values


def test_a_damaged_or_missing_cached_feature_is_recomputed(random_inception_weights, tmp_path, capsys):
    """Swapped, truncated or deleted originals' features in the shared cache: the next run recomputes them
    (with a note) and its FID, KID and IPD equal a clean run's."""
    cfg = config(with_inception(random_inception_weights), codecs=("jpeg quality=30,70",))
    clean = made(tmp_path / "a", "clean", cfg)
    out = tmp_path / "b"
    made(out, "first", cfg)
    entries = sorted((out / ".cache").glob("inception-*/*/*.npy"))
    assert len(entries) == 8
    entries[0].write_bytes(entries[1].read_bytes())  # another image's features under this image's name
    entries[2].write_bytes(entries[2].read_bytes()[:100])
    entries[3].unlink()
    run_dir = made(out, "second", cfg)
    err = capsys.readouterr().err
    assert f"discarded the cached features {entries[0]}" in err and f"{entries[2]}" in err, err
    pd.testing.assert_frame_equal(_fid(run_dir), _fid(clean))


def test_finished_runs_keep_what_they_need_when_the_cache_is_gone(random_inception_weights, tmp_path, capsys):
    cfg = config(with_inception(random_inception_weights), codecs=("jpeg quality=30,70",))
    base, new = made(tmp_path, "base", cfg), made(tmp_path, "new", cfg)
    before = _fid(new)
    shutil.rmtree(tmp_path / ".cache")
    for args in (["leaderboard", str(new), "--bootstrap", "20"], ["report", str(new)],
                 ["compare", str(base), str(new), "--bootstrap", "20"], ["run", "--resume", str(new), *QUIET]):
        rc, _, err = cli_run(args, capsys)
        assert rc == 0 and "Traceback" not in err, (args, err)
    pd.testing.assert_frame_equal(_fid(new), before)
    shutil.rmtree(new / "originals")  # and the cache is gone too: resume computes them again from the dataset
    rc, _, err = cli_run(["run", "--resume", str(new), *QUIET], capsys)
    assert rc == 0 and "the features of 8 originals were in neither" in err, err
    pd.testing.assert_frame_equal(_fid(new), before)


def test_a_moved_results_folder_and_a_copied_run_work_and_a_moved_partial_run_resumes(random_inception_weights,
                                                                                      tmp_path, capsys):
    cfg = config(with_inception(random_inception_weights), codecs=("jpeg quality=30,70",))
    clean = made(tmp_path / "clean", "clean", cfg)
    old = tmp_path / "old"
    partial = create_run(cfg, old, "partial", progress=False)
    execute(partial, jobs=1, progress=False)
    for shard in sorted(partial.glob("images/*/chunk-*.parquet"))[::2]:  # as a kill leaves it: some tasks undone
        shard.unlink()
    (partial / "summary.parquet").unlink()
    moved = tmp_path / "elsewhere" / "results"
    moved.parent.mkdir()
    shutil.move(old, moved)
    rc, _, err = cli_run(["run", "--resume", str(moved / "partial"), *QUIET], capsys)
    assert rc == 0, err
    assert not old.exists()  # nothing was written at the old place
    same_rows(moved / "partial", clean)
    pd.testing.assert_frame_equal(_fid(moved / "partial"), _fid(clean))
    copied = shutil.copytree(moved / "partial", tmp_path / "copy" / "run")  # without the results root's cache
    for args in (["leaderboard", str(copied), "--bootstrap", "20"], ["report", str(copied)],
                 ["compare", str(clean), str(copied), "--bootstrap", "20"], ["plot", str(copied)],
                 ["run", "--resume", str(copied), *QUIET]):
        rc, _, err = cli_run(args, capsys)
        assert rc == 0 and "Traceback" not in err, (args, err)


EDITS = {
    "a setting changed": (lambda c: c["config"]["codecs"][0]["settings"].__setitem__(0, 80.0), "config.codecs[0]"),
    "a codec removed": (lambda c: (c["config"]["codecs"].pop(), c["codecs"].pop()), "config.codecs"),
    "a codec added": (lambda c: c["config"]["codecs"].append(dict(c["config"]["codecs"][0], label="jpeg2")),
                      "config.codecs"),
}


@pytest.mark.parametrize("what", list(EDITS))
@pytest.mark.parametrize("finished", [True, False])
def test_resume_refuses_an_edited_configuration_naming_the_keys(what, finished, tmp_path, capsys):
    run_dir = made(tmp_path, "r", config())
    if not finished:
        for shard in sorted(run_dir.glob("images/*/chunk-*.parquet"))[1::2]:
            shard.unlink()
    before = sorted(p.name for p in run_dir.rglob("*"))
    info = json.loads((run_dir / "config.json").read_text())
    edit, key = EDITS[what]
    edit(info)
    (run_dir / "config.json").write_text(json.dumps(info, indent=2))
    rc, _, err = cli_run(["run", "--resume", str(run_dir), *QUIET], capsys)
    assert rc == 1 and "was edited after the run was created" in err and key in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in run_dir.rglob("*")) == before  # nothing written


def test_the_commands_a_message_prints_run_as_printed_from_a_folder_with_spaces(clean_run, tmp_path, capsys):
    """A run in `my results/试验 1` was told to resume with `python bench.py run --resume my results/试验 1`, which a
    shell splits into three arguments."""
    import shlex

    run_dir = shutil.copytree(clean_run, tmp_path / "my results" / "试验 1")
    shard = run_dir / "images" / "jpeg" / "chunk-000001.parquet"
    shard.write_bytes(DAMAGE["truncated"](shard.read_bytes()))
    rc, _, err = cli_run(["leaderboard", str(run_dir)], capsys)
    command = shlex.split(err.split("redo its work with: ")[1].split(")")[0])
    assert rc == 1 and command == ["python", "bench.py", "run", "--resume", str(run_dir), "--redo-damaged"], err
    rc, out, err = cli_run(command[2:] + QUIET, capsys)
    assert rc == 0, err
    next_line = next(line for line in out.splitlines() if line.startswith("Next:"))
    assert shlex.split(next_line.split("|")[1]) == ["python", "bench.py", "leaderboard", str(run_dir)], next_line
    same_rows(run_dir, clean_run)


def test_a_reader_asking_whether_a_run_is_held_does_not_turn_away_its_resume(tmp_path, monkeypatch):
    """`held` takes the lock shared for a moment to ask; a --resume starting in that moment was refused as if
    another process worked in the run. It tries again, and is refused only by a process that keeps the lock."""
    import fcntl

    from benchmark.run import run_folder

    real, asked = fcntl.flock, []

    def busy_once(fd, operation):  # a reader holds the lock on the first try
        asked.append(operation)
        if operation & fcntl.LOCK_EX and len(asked) == 1:
            raise BlockingIOError
        return real(fd, operation)

    monkeypatch.setattr(run_folder.fcntl, "flock", busy_once)
    with run_folder.locked(tmp_path):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
    assert len(asked) == 2
    monkeypatch.setattr(run_folder.fcntl, "flock", real)
    with run_folder.locked(tmp_path):  # a process that keeps it
        assert run_folder.held(tmp_path)
        with pytest.raises(RuntimeError, match=f"is being worked on by process {os.getpid()}"):
            with run_folder.locked(tmp_path):
                pass
    assert not run_folder.held(tmp_path)


def test_two_resumes_of_one_run_do_no_work_twice(random_inception_weights, tmp_path, capsys):
    from benchmark.run.feature_store import passes

    gate = tmp_path / "gate"
    args = ["run", "--dataset", "sample:12", "--split", "all", "--codec", f"codecs_for_tests:Gated gate={gate} after=4",
            "--metrics", "inception", "--inception-weights", str(random_inception_weights), "--device", "cpu",
            "--out", str(tmp_path), "--name", "r", "--jobs", "1", *QUIET]
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
    first = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench.py"), *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "r" / ".lock"
    while not (lock.exists() and lock.read_text().strip() == str(first.pid)):  # observable state, no clock
        assert first.poll() is None, first.communicate()
        time.sleep(0.02)
    rc, _, err = cli_run(["run", "--resume", str(tmp_path / "r"), *QUIET], capsys)
    assert rc == 1 and f"is being worked on by process {first.pid}" in err, err
    gate.touch()
    assert first.wait(timeout=300) == 0, first.stderr.read()
    rows, summary = load_run(tmp_path / "r")
    assert len(rows) == 12 * summary.setting_index.nunique()
    assert not rows.duplicated(["image_index", "setting_index"]).any()
    assert passes(tmp_path / "r") == {"reference": 12, "reconstruction": len(rows), "patches": 0}  # a single run's


def test_runs_started_in_the_same_second_get_two_folders(tmp_path, monkeypatch):
    import datetime as dt

    from benchmark.run import runner

    frozen = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    clock = type("Frozen", (dt.datetime,), {"now": staticmethod(lambda tz=None: frozen)})
    monkeypatch.setattr(runner.dt, "datetime", clock)
    a, b = create_run(config(), tmp_path, progress=False), create_run(config(), tmp_path, progress=False)
    assert a != b and b.name == a.name + "-2"
    assert json.loads((b / "config.json").read_text())["run_id"] == b.name
    execute(b, jobs=1, progress=False)
    assert set(load_run(b)[0].run_id) == {b.name}


def test_an_interrupted_creation_leaves_no_folder(tmp_path, monkeypatch):
    from benchmark.run import run_folder

    def full(path, data, durable=True):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(run_folder, "atomic_write_bytes", full)
    with pytest.raises(OSError):
        create_run(config(), tmp_path / "out", "r", progress=False)
    assert not (tmp_path / "out" / "r").exists()


TRIES = int(os.environ.get("CMCBENCH_FAULT_TRIES", "4"))  # per signal; 50 for the full check


def _group_gone(pgid: int) -> bool:
    for _ in range(500):  # up to 10 s for the workers to go
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_at_a_random_moment_stops_cleanly_and_resume_gives_the_clean_rows(sig, code, tmp_path, capsys):
    args = ["run", "--dataset", "sample:24", "--split", "all", "--codec", "jpeg quality=20,50,80", "--codec", "webp",
            "--metrics", "none", "--jobs", "2", "--out", str(tmp_path), *QUIET]
    assert cli_run(args + ["--name", "clean"], capsys)[0] == 0
    rng = np.random.default_rng(int(sig))
    outcomes = {"finished first": 0, "stopped before any work": 0, "stopped mid-run, resumed": 0}
    for k, delay in enumerate(rng.uniform(0.3, 4.0, TRIES)):
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench.py"), *args, "--name", f"r{k}"],
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        time.sleep(delay)  # a random moment: imports, creation, work or the summary
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)  # no hang
        assert proc.returncode in (code, 0), (k, delay, proc.returncode, err)
        assert "Traceback" not in err, (k, delay, err)
        assert _group_gone(proc.pid), f"try {k}: processes left behind"
        run_dir = tmp_path / f"r{k}"
        if proc.returncode == 0 or not run_dir.exists():  # finished first, or stopped before any work: no folder
            outcomes["finished first" if proc.returncode == 0 else "stopped before any work"] += 1
            continue
        assert f"python bench.py run --resume {run_dir}" in err, err
        assert cli_run(["run", "--resume", str(run_dir), *QUIET], capsys)[0] == 0
        same_rows(run_dir, tmp_path / "clean")
        outcomes["stopped mid-run, resumed"] += 1
    print(f"{signal.Signals(sig).name}, {TRIES} tries: {outcomes}")
    assert TRIES < 20 or outcomes["stopped mid-run, resumed"] >= TRIES // 4, outcomes  # the moments hit the work


def _files(folder):
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()}


def test_reading_a_finished_run_writes_nothing_into_it(clean_run, tmp_path, capsys):
    other = made(tmp_path, "other", config())
    before = _files(clean_run)
    for args in (["leaderboard", str(clean_run), "--bootstrap", "20", "--out", str(tmp_path / "board")],
                 ["report", str(clean_run), "--bootstrap", "20", "--out", str(tmp_path / "report")],
                 ["compare", str(other), str(clean_run), "--bootstrap", "20"],
                 ["plot", str(clean_run), "--out", str(tmp_path / "plots")]):
        rc, _, err = cli_run(args, capsys)
        assert rc == 0, (args, err)
    assert _files(clean_run) == before


def _deny(monkeypatch, under, code):
    """Writes under `under` fail as a full disk (ENOSPC) or a read-only / unwritable folder (EROFS, EACCES) does;
    root may write anywhere, so the fault is injected where files are created."""
    import pathlib
    import tempfile

    under = str(under)
    real_mkstemp, real_mkdir = tempfile.mkstemp, pathlib.Path.mkdir

    def mkstemp(*args, dir=None, **kwargs):
        if str(dir).startswith(under):
            raise OSError(code, os.strerror(code), os.path.join(dir, kwargs.get("prefix", "") + "x.tmp"))
        return real_mkstemp(*args, dir=dir, **kwargs)

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(under) and not self.exists():
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)


def _no_half_written_files(folder):
    return not [p for p in folder.rglob("*.tmp")] if folder.exists() else True


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "no space left on the device"),
                                        (errno.EROFS, "is on a read-only file system"),
                                        (errno.EACCES, "permission denied")])
def test_an_unwritable_results_root_is_one_sentence_and_leaves_no_folder(code, words, tmp_path, monkeypatch, capsys):
    _deny(monkeypatch, tmp_path / "out", code)
    rc, _, err = cli_run(["run", "--dataset", "sample:4", "--codec", "jpeg", "--metrics", "none", "--out",
                          str(tmp_path / "out"), "--name", "r", *QUIET], capsys)
    assert rc == 1 and words in err and str(tmp_path / "out") in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "r").exists()


@pytest.mark.parametrize("where", ["a shard", "the cache"])
def test_a_full_disk_mid_run_keeps_finished_work_and_resume_gives_the_clean_rows(where, random_inception_weights,
                                                                               tmp_path, monkeypatch, capsys):
    from benchmark.run import results

    args = ["run", "--dataset", "sample:8", "--split", "all", "--codec", "jpeg quality=30,70", "--codec", "webp",
            "--metrics", "none", "--no-ms-ssim", "--lpips", "none", "--caption-embedder", "none", "--codec-batch", "2",
            "--out", str(tmp_path), "--name", "r", "--jobs", "1", *QUIET]
    if where == "a shard":
        real, calls = results.write_checked, []

        def full_after_three(path, data, **kwargs):
            calls.append(path)
            if len(calls) > 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path.parent / f".{path.name}.x.tmp"))
            return real(path, data, **kwargs)

        monkeypatch.setattr(results, "write_checked", full_after_three)
    else:  # the shared cache cannot take the originals' features: nothing is done, nothing is left
        _deny(monkeypatch, tmp_path / ".cache", errno.EACCES)
        at = args.index("--metrics")
        args[at:at + 2] = ["--metrics", "inception", "--inception-weights", str(random_inception_weights)]
    rc, _, err = cli_run(args, capsys)
    assert rc == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert _no_half_written_files(tmp_path)
    if where == "a shard":
        assert "no space left on the device while writing" in err and "chunk-000001.parquet" in err, err
        assert f"python bench.py run --resume {tmp_path / 'r'}" in err, err
        monkeypatch.undo()
        assert cli_run(["run", "--resume", str(tmp_path / "r"), *QUIET], capsys)[0] == 0
        assert cli_run([a if a != "r" else "clean" for a in args], capsys)[0] == 0
        same_rows(tmp_path / "r", tmp_path / "clean")
    else:
        assert f"permission denied writing {tmp_path / '.cache'}" in err, err
        assert not (tmp_path / "r").exists()


def test_a_full_disk_while_plotting_leaves_no_truncated_figure(clean_run, tmp_path, monkeypatch, capsys):
    (tmp_path / "plots").mkdir()
    _deny(monkeypatch, tmp_path / "plots", errno.ENOSPC)
    rc, _, err = cli_run(["plot", str(clean_run), "--out", str(tmp_path / "plots")], capsys)
    assert rc == 1 and "no space left on the device while writing" in err and "rd_psnr" in err, err
    assert list((tmp_path / "plots").iterdir()) == []


def test_a_read_only_run_folder_is_one_sentence_and_resume_afterwards_gives_the_clean_rows(clean_run, tmp_path,
                                                                                         monkeypatch, capsys):
    run_dir = made(tmp_path, "r", config())
    for shard in sorted(run_dir.glob("images/*/chunk-*.parquet"))[::2]:  # a partial run, as a kill leaves it
        shard.unlink()
    (run_dir / "summary.parquet").unlink()
    _deny(monkeypatch, run_dir, errno.EROFS)
    rc, _, err = cli_run(["run", "--resume", str(run_dir), *QUIET], capsys)
    assert rc == 1 and "is on a read-only file system" in err and str(run_dir) in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and _no_half_written_files(run_dir), err
    monkeypatch.undo()
    assert cli_run(["run", "--resume", str(run_dir), *QUIET], capsys)[0] == 0
    same_rows(run_dir, clean_run)


def test_a_run_made_before_checksums_still_reads_resumes_and_compares(random_inception_weights, tmp_path, capsys):
    """An old run after the upgrade: no checksums, no seal, no copy of its originals, the cache recorded as an
    absolute path. It is read as it is (unchecked), resumes, and its new shards are checked from then on."""
    cfg = config(with_inception(random_inception_weights), codecs=("jpeg quality=30,70",))
    clean, old = made(tmp_path, "clean", cfg), made(tmp_path, "old", cfg)
    for sidecar in old.rglob(".*.sha256"):
        sidecar.unlink()
    (old / ".config.sealed.json").unlink()
    shutil.rmtree(old / "originals")
    info = json.loads((old / "config.json").read_text())
    del info["integrity"]
    info["inception"]["reference_dir"] = str((tmp_path / info["inception"]["reference_dir"]).resolve())
    (old / "config.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    for shard in sorted(old.glob("images/*/chunk-*.parquet"))[::2]:
        shard.unlink()
    (old / "summary.parquet").unlink()
    for args in (["run", "--resume", str(old), *QUIET], ["leaderboard", str(old), "--bootstrap", "20"],
                 ["compare", str(clean), str(old), "--bootstrap", "20"]):
        rc, _, err = cli_run(args, capsys)
        assert rc == 0 and "Traceback" not in err, (args, err)
    same_rows(old, clean)
    pd.testing.assert_frame_equal(_fid(old), _fid(clean))
    redone = sorted(old.glob("images/*/.chunk-*.sha256"))
    assert redone and len(redone) < len(list(old.glob("images/*/chunk-*.parquet")))  # only the new shards


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_error_a_stop_signal_caused_is_the_stop_not_an_error(sig, code, monkeypatch, capsys):
    """A signal inside a library's import can come back as its own error (torch: 'initialization failed'): the
    command then reports the stop and its exit code, as for a signal anywhere else."""
    def interrupted_import(args):
        try:
            os.kill(os.getpid(), sig)
            time.sleep(5)  # the handler raises here
        except KeyboardInterrupt:
            raise RuntimeError("initialization failed") from None

    monkeypatch.setattr(cli, "cmd_run", interrupted_import)
    # As from a terminal: a shell's background job (`pytest &`) starts with SIGINT ignored, and the command then
    # leaves Ctrl-C alone (nohup's contract), so the SIGINT case would test nothing.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert cli.main(["run", "--dataset", "sample:2"]) == code
    finally:
        signal.signal(signal.SIGINT, before)
    err = capsys.readouterr().err
    assert "initialization failed" not in err and ("Terminated." if code == 143 else "Interrupted.") in err


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_raised_where_python_ignores_exceptions_still_stops_the_command(sig, code, monkeypatch, capsys):
    """A signal that arrives while Python runs code whose exceptions it ignores (the parent's callbacks after a fork,
    a finalizer) was printed as 'Exception ignored in ... Traceback ... KeyboardInterrupt' and then lost: the
    command went on. It is delivered again, to the code that runs next."""
    class Finalized:
        def __del__(self):
            signal.raise_signal(sig)  # the handler raises inside the finalizer

    def work(args):
        Finalized()  # finalized at once
        time.sleep(1)
        return 0

    monkeypatch.setattr(cli, "cmd_run", work)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal (see above)
    try:
        assert cli.main(["run", "--dataset", "sample:2"]) == code
    finally:
        signal.signal(signal.SIGINT, before)
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("Terminated." if code == 143 else "Interrupted.") in err
