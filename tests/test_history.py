"""history: 30 runs of a model from 30 commits of its own git repository, one of which really regressed."""

import importlib
import json
import os
import random
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from benchmark.analysis import history
from benchmark.cli import main
from benchmark.codecs.codec_spec import parse_codec_spec
from benchmark.run.results import load_run
from benchmark.run.runner import RunConfig, create_run, execute

MODEL = '''"""A model under development: JPEG bits, and a decoder whose noise is this commit's."""
import hashlib
import io

import numpy as np
from PIL import Image

from benchmark.codecs.codec import Codec

SIGMA = {sigma}
REVISION = "{revision}"


class Model(Codec):
    name = "model"
    rate_parameter = "quality"
    default_sweep = (20, 40, 60, 80)
    defaults = {{}}

    def encode(self, image, setting):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=int(setting))
        return buf.getvalue()

    def decode(self, data):
        with Image.open(io.BytesIO(data)) as im:
            out = np.asarray(im.convert("RGB")).astype(np.float64)
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(data).digest()[:8], "little"))
        return np.clip(np.round(out + rng.normal(0, SIGMA, out.shape)), 0, 255).astype(np.uint8)
'''
COMMITS, REGRESSED = 30, 17


@pytest.fixture(scope="module")
def model_runs(hermetic_module, tmp_path_factory):
    """30 commits (the decoder gets noisier at commit 17 and stays so; the others change a comment), each run
    once, in shuffled order, with its sweep shifted by 2 quality steps at every other commit."""
    repo = tmp_path_factory.mktemp("model")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}

    def git(*args, date=None):
        extra = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date} if date else {}
        return subprocess.run(["git", *args], cwd=repo, env={**env, **extra}, check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q")
    shas = []
    for k in range(COMMITS):
        # the revision string grows with k, so the file's size differs at every commit (no stale bytecode)
        (repo / "histmodel.py").write_text(MODEL.format(sigma=3.0 if k >= REGRESSED else 0.0, revision="r" * (k + 1)))
        git("add", "-A")
        git("commit", "-qm", f"commit {k}", date=f"2026-03-{1 + k:02d}T12:00:00+00:00")
        shas.append(git("rev-parse", "HEAD"))
    root = tmp_path_factory.mktemp("runs")
    sys.path.insert(0, str(repo))
    try:
        for k in random.Random(0).sample(range(COMMITS), COMMITS):  # created out of commit order
            git("checkout", "-q", shas[k])
            sys.modules.pop("histmodel", None)
            importlib.invalidate_caches()
            sweep = "20,40,60,80" if k % 2 == 0 else "22,42,62,82"
            config = RunConfig(dataset="sample:8", split="all", inception={"enabled": False}, caption_embedder="none",
                               image_metrics={"ms_ssim": False, "lpips": "none"},
                               codecs=[parse_codec_spec(f"histmodel:Model quality={sweep} label=model"),
                                       parse_codec_spec("jpeg quality=20,50,80")])
            execute(create_run(config, root, f"run-{k:02d}", progress=False), jobs=1, progress=False)
    finally:
        sys.path.remove(str(repo))
        sys.modules.pop("histmodel", None)
    return root, shas


def test_history_marks_the_one_commit_that_regressed_and_no_other(model_runs, tmp_path, capsys):
    root, shas = model_runs
    images, _ = load_run(root / "run-05")
    recorded = images[images.codec == "model"].codec_versions.map(lambda v: json.loads(v)["source_git_sha"])
    assert set(recorded) == {shas[5]}  # each row says which commit of the model produced it
    result = history.build([root], history.HistoryOptions(codecs=["model"], resamples=20))
    table = result.table
    assert list(table.commit) == shas  # ordered by commit date, not by when the runs were made
    marked = history.significant(result)
    assert list(marked.commit) == [shas[REGRESSED]] and list(marked.change) == ["worse"], marked[["commit", "why"]]
    assert table.change.iloc[0] == "first" and (table.change.iloc[1:] != "not compared").all()
    # Against the oldest run: about 0 before the regression, clearly more bits after it (lower PSNR at equal rate).
    assert (table.bd_rate.iloc[:REGRESSED].abs() < 5).all() and (table.bd_rate.iloc[REGRESSED:] > 10).all()
    assert (table.n_images == 8).all()
    # Asked again, each pair of runs is read from the cache (keyed by their summaries): no verdict is recomputed.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(history.compare, "curve_verdicts", lambda *a, **k: pytest.fail("recomputed"))
        again = history.build([root], history.HistoryOptions(codecs=["model"], resamples=20))
    pd.testing.assert_frame_equal(again.table, table, check_dtype=False)
    # The command line: the same verdicts, a table file and a plot; against JPEG in each run as the anchor.
    assert main(["history", str(root), "--codec", "model", "--anchor", "jpeg", "--bootstrap", "20",
                 "--out", str(tmp_path / "h")]) == 0
    out = capsys.readouterr().out
    assert f"1 significant change in {COMMITS} runs: {shas[REGRESSED][:12]} model psnr worse" in out
    assert "BD-rate % against codec jpeg in each run" in out
    saved = pd.read_csv(tmp_path / "h" / "history.csv")
    assert len(saved) == COMMITS and (saved.change == "worse").sum() == 1
    assert (tmp_path / "h" / "history_psnr.png").stat().st_size > 10_000
    # --since keeps the runs from that commit on.
    since = history.build([root], history.HistoryOptions(codecs=["model"], resamples=0, since=shas[20][:10]))
    assert list(since.table.commit) == shas[20:]
    # A BD-rate without an interval is marked and says why, in the table and where it is printed.
    assert (table.interval_note == "").all() and (since.table.interval_note != "").all()
    assert main(["history", str(root), "--codec", "model", "--bootstrap", "0", "--out", str(tmp_path / "h0")]) == 0
    out = capsys.readouterr().out
    assert "‡ no interval (no resamples, or BD undefined in too many)" in out
    assert out.count("‡") >= COMMITS and not re.search(r"\[[+-]\d", out)  # no value shows an interval
    assert pd.read_csv(tmp_path / "h0" / "history.csv").interval_note.notna().all()


def test_history_refuses_runs_of_other_data_in_one_sentence(model_runs, tmp_path):
    root, _ = model_runs
    config = RunConfig(dataset="sample:4", split="all", inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"},
                       codecs=[parse_codec_spec("jpeg quality=20,50")])
    other = create_run(config, tmp_path, "other", progress=False)
    with pytest.raises(ValueError, match="a history follows one dataset and protocol"):
        history.build([root / "run-00", other])


def test_a_commit_whose_run_lost_a_metric_is_shown_with_why_and_the_next_change_is_judged_across_the_gap(tmp_path,
                                                                                                         capsys,
                                                                                                         monkeypatch):
    """The middle commit's run did not compute psnr_y (off there; on a CI machine, weights that failed to
    download): its row says so instead of vanishing from psnr_y's history, and the next commit's regression is
    judged against the last run that has psnr_y, not left 'not compared'."""
    from benchmark.run import provenance

    monkeypatch.setattr(provenance, "git_sha", lambda: "7" * 40)  # a commit, whatever state this checkout is in
    for k, (sigma, added) in enumerate([(0, ["psnr_y"]), (0, []), (8, ["psnr_y"])]):
        config = RunConfig(dataset="sample:6", split="all", inception={"enabled": False}, caption_embedder="none",
                           image_metrics={"ms_ssim": False, "lpips": "none"}, add_metrics=added,
                           codecs=[parse_codec_spec(f"codecs_for_tests:NoisyJPEG quality=20,50,80 sigma={sigma} "
                                                    "label=model")])
        execute(create_run(config, tmp_path / "runs", f"run-{k}", progress=False), jobs=1, progress=False)
    table = history.build([tmp_path / "runs"], history.HistoryOptions(metrics=["psnr_y"], resamples=20)).table
    assert list(table.run_id) == ["run-0", "run-1", "run-2"], table
    lost = table.iloc[1]
    assert np.isnan(lost.bd_rate) and lost.change == "not compared"
    assert lost.missing_note == "its run (run-1) has no psnr_y: disabled, not requested (--add-metric psnr_y)"
    after = table.iloc[2]
    assert after.change == "worse" and "compared with run run-0, the last that has it" in after.why, after.why
    assert main(["history", str(tmp_path / "runs"), "--metric", "psnr_y", "--bootstrap", "20",
                 "--out", str(tmp_path / "h")]) == 0
    out = capsys.readouterr().out
    assert "– " + lost.commit[:12] + " (run-1): its run (run-1) has no psnr_y" in out
    assert "1 significant change in 3 runs" in out
    from benchmark.analysis.plots import history_plots

    (svg,) = history_plots(table.iloc[:2], "run-0", tmp_path / "p", formats=("svg",))
    assert "1 missing point(s)" in svg.read_text()  # the plot's gap is not silent either


def test_a_history_that_compared_nothing_does_not_say_no_change(tmp_path, capsys):
    """Two runs with no codec in common ended "0 significant changes in 2 runs.", as if every curve had held."""
    for name, codec in (("a", "jpeg quality=20,60"), ("b", "webp quality=20,60")):
        config = RunConfig(dataset="sample:4", split="all", inception={"enabled": False}, caption_embedder="none",
                           image_metrics={"ms_ssim": False, "lpips": "none"}, codecs=[parse_codec_spec(codec)])
        execute(create_run(config, tmp_path / "runs", name, progress=False), jobs=1, progress=False)
    assert main(["history", str(tmp_path / "runs"), "--bootstrap", "0", "--out", str(tmp_path / "h")]) == 0
    out = capsys.readouterr().out
    assert "significant change" not in out
    assert out.rstrip().splitlines()[-2] == ("No change could be judged: no codec's curve in these 2 runs was "
                                             "compared with an earlier run's (each '–' above says why).")
    assert "not compared: codec webp is not in the anchor run (a)" in out
    for flag in ("--codec", "--anchor"):  # a misspelt label followed nothing, and said so as "these 0 runs"
        assert main(["history", str(tmp_path / "runs"), flag, "jpg", "--out", str(tmp_path / "h")]) == 1
        assert capsys.readouterr().err == ("error: No run has a codec labelled 'jpg'; did you mean 'jpeg'? their "
                                           "codecs: jpeg, webp.\n")


def test_runs_of_one_name_in_two_folders_are_told_apart_by_their_folders(tmp_path, capsys):
    """Runs named `tour` in results/main and results/branch both showed as run `tour`, and `--anchor-run tour`
    silently took the first of them."""
    for where in ("main", "branch"):
        config = RunConfig(dataset="sample:4", split="all", inception={"enabled": False}, caption_embedder="none",
                           image_metrics={"ms_ssim": False, "lpips": "none"},
                           codecs=[parse_codec_spec("jpeg quality=20,60")])
        execute(create_run(config, tmp_path / where, "tour", progress=False), jobs=1, progress=False)
    runs = [str(tmp_path / where / "tour") for where in ("main", "branch")]
    table = history.build(runs, history.HistoryOptions(resamples=0)).table
    assert sorted(table.run_id) == ["branch/tour", "main/tour"]
    assert main(["history", *runs, "--anchor-run", "tour", "--out", str(tmp_path / "h")]) == 1
    err = capsys.readouterr().err  # the two in commit order, then creation time
    assert err in (f"error: Anchor run tour names 2 of the runs given ({a}, {b}): give its folder.\n"
                   for a, b in (("main/tour", "branch/tour"), ("branch/tour", "main/tour"))), err
    anchored = history.build(runs, history.HistoryOptions(resamples=0, anchor_run=runs[1]))
    assert anchored.anchor.startswith("the same codec in run branch/tour")


def test_a_codec_missing_from_one_run_is_judged_against_the_last_run_that_has_it(tmp_path):
    """The middle commit's run did not run the model (a CI job that ran JPEG alone): the next run's regression was
    left 'not compared' because the run before it had no model. It is judged against the last run that has it."""
    for k, (sigma, model) in enumerate([(0, True), (0, False), (8, True)]):
        codecs = [parse_codec_spec("jpeg quality=20,50,80")] + ([parse_codec_spec(
            f"codecs_for_tests:NoisyJPEG quality=20,50,80 sigma={sigma} label=model")] if model else [])
        config = RunConfig(dataset="sample:6", split="all", inception={"enabled": False}, caption_embedder="none",
                           image_metrics={"ms_ssim": False, "lpips": "none"}, codecs=codecs)
        execute(create_run(config, tmp_path / "runs", f"run-{k}", progress=False), jobs=1, progress=False)
    table = history.build([tmp_path / "runs"], history.HistoryOptions(resamples=20)).table
    model = table[table.codec == "model"].set_index("run_id")
    assert list(model.index) == ["run-0", "run-2"]
    assert model.loc["run-2", "change"] == "worse", model.loc["run-2", "why"]
    assert model.loc["run-2", "why"].startswith("the previous run (run-1) has no model; compared with run run-0, the "
                                                "last that has it")
    assert (table[table.codec == "jpeg"].change.tolist()) == ["first", "same", "same"]


def test_a_run_that_cannot_be_read_is_shown_without_numbers_and_the_history_goes_on(tmp_path, capsys, monkeypatch):
    """One damaged run in a folder of many (a shard cut short by a full disk) stopped the whole history at its
    name. It is shown, without numbers, with why and the fix; the next run is judged against the last readable
    one; a run whose config.json cannot be read (so it has no place in the order) is left out, and said so."""
    from benchmark.run import provenance

    monkeypatch.setattr(provenance, "git_sha", lambda: "7" * 40)  # a commit, whatever state this checkout is in
    for k, sigma in enumerate([0, 0, 8, 8]):
        config = RunConfig(dataset="sample:6", split="all", inception={"enabled": False}, caption_embedder="none",
                           image_metrics={"ms_ssim": False, "lpips": "none"},
                           codecs=[parse_codec_spec(f"codecs_for_tests:NoisyJPEG quality=20,50,80 sigma={sigma} "
                                                    "label=model")])
        execute(create_run(config, tmp_path / "runs", f"run-{k}", progress=False), jobs=1, progress=False)
    shard = tmp_path / "runs" / "run-1" / "images" / "model" / "chunk-000001.parquet"
    shard.write_bytes(shard.read_bytes()[:100])
    config_json = tmp_path / "runs" / "run-3" / "config.json"
    config_json.write_bytes(config_json.read_bytes()[:100])
    table = history.build([tmp_path / "runs"], history.HistoryOptions(resamples=20)).table
    assert list(table.run_id) == ["run-0", "run-1", "run-2"], table
    damaged = table.iloc[1]
    assert np.isnan(damaged.bd_rate) and damaged.change == "not compared"
    assert damaged.missing_note.startswith(f"its results cannot be read: {shard} is damaged"), damaged.missing_note
    assert "--redo-damaged" in damaged.missing_note
    after = table.iloc[2]
    assert after.change == "worse" and after.why.startswith("compared with run run-0: the run after it (run-1) "
                                                            "cannot be read"), after.why
    assert main(["history", str(tmp_path / "runs"), "--bootstrap", "20", "--out", str(tmp_path / "h")]) == 0
    out = capsys.readouterr().out
    assert "note: 1 of them cannot be read and is shown without numbers (why, and the fix, under each table): run-1" \
        in out and f"note: left out: {config_json} is damaged (not valid JSON" in out
    assert f"(run-1): its results cannot be read: {shard} is damaged" in out and "1 significant change in 3 runs" in out
    with pytest.raises(Exception, match="chunk-000001.parquet is damaged"):  # named as the anchor, it is refused
        history.build([tmp_path / "runs"], history.HistoryOptions(resamples=0, anchor_run="run-1"))
    with pytest.raises(Exception, match="chunk-000001.parquet is damaged"):  # and alone, there is nothing to show
        history.build([tmp_path / "runs" / "run-1"], history.HistoryOptions(resamples=0))


def test_a_run_of_uncommitted_changes_is_shown_as_its_commit_dirty_not_as_the_commit(tmp_path, monkeypatch, capsys):
    """Two runs of a model at one commit, the second with a change not yet committed: history, its plot's ticks and
    the report say '-dirty' for the second, so the two are not read as two runs of the same code."""
    repo = tmp_path / "dirtymodel"
    repo.mkdir()
    env = {**os.environ, **{f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                            for what, value in (("NAME", "t"), ("EMAIL", "t@t"))}}

    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    (repo / "dirtymodel.py").write_text(MODEL.format(sigma=0.0, revision="r"))
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "model")
    sha = git("rev-parse", "HEAD")
    monkeypatch.syspath_prepend(str(repo))
    for name in ("clean", "dirty"):
        if name == "dirty":
            (repo / "dirtymodel.py").write_text(MODEL.format(sigma=0.0, revision="r") + "# not committed yet\n")
        config = RunConfig(dataset="sample:4", split="all", inception={"enabled": False}, caption_embedder="none",
                           image_metrics={"ms_ssim": False, "lpips": "none"},
                           codecs=[parse_codec_spec("dirtymodel:Model quality=30,60 label=model")])
        execute(create_run(config, tmp_path / "runs", name, progress=False), jobs=1, progress=False)
    result = history.build([tmp_path / "runs"], history.HistoryOptions(codecs=["model"], resamples=0))
    assert list(result.table.commit) == [sha, sha + "-dirty"]
    assert main(["history", str(tmp_path / "runs"), "--codec", "model", "--bootstrap", "0", "--out",
                 str(tmp_path / "h")]) == 0
    out = capsys.readouterr().out
    assert f"{sha[:12]}-dirty" in out and out.count(sha[:12]) >= 2
    from benchmark.run import provenance

    monkeypatch.setattr(provenance, "git_sha", lambda: "0123456789abcdef0123-dirty")  # cmcbench itself, uncommitted
    run_dir = create_run(config, tmp_path / "other", "r", progress=False)
    execute(run_dir, jobs=1, progress=False)
    assert main(["report", str(run_dir), "--bootstrap", "0"]) == 0
    assert "git 0123456789ab-dirty," in (run_dir / "report" / "report.md").read_text()


def test_a_run_with_one_setting_of_the_codec_is_a_gap_its_next_run_is_judged_across(tmp_path, capsys):
    """The middle run swept the model at one setting only: it has no curve, says so, and the next run is compared
    with the last run that has a curve instead of being left 'not compared' without a word."""
    for name, sweep in (("r0", "20,50,80"), ("r1", "50"), ("r2", "20,50,80")):
        config = RunConfig(dataset="sample:6", split="all", inception={"enabled": False}, caption_embedder="none",
                           image_metrics={"ms_ssim": False, "lpips": "none"},
                           codecs=[parse_codec_spec(f"webp quality={sweep} label=model"),
                                   parse_codec_spec("jpeg quality=20,50,80")])
        execute(create_run(config, tmp_path / "runs", name, progress=False), jobs=1, progress=False)
    table = history.build([tmp_path / "runs"], history.HistoryOptions(codecs=["model"], anchor_codec="jpeg",
                                                                      resamples=0)).table
    assert list(table.change) == ["first", "not compared", "same"], table
    assert table.why.iloc[2].startswith("the previous run (r1) has no curve of model in psnr: 1 setting with a "
                                        "value; compared with run r0, the last that has it; same: ")
    assert main(["history", str(tmp_path / "runs"), "--codec", "model", "--anchor", "jpeg", "--bootstrap", "0",
                 "--out", str(tmp_path / "h")]) == 0
    out = capsys.readouterr().out
    assert "(r1): not compared: no curve of it in both runs" in out
    assert "1 curve compared with an earlier run's, 1 not: each '–' above says why" in out


def test_a_cached_verdict_is_keyed_by_the_code_that_fits_the_curves(monkeypatch):
    """history's cache key covers curves.py (BD and the curve fit), not only compare.py and the bootstrap: a change
    to how curves are fitted recomputes the cached verdicts instead of showing the old ones."""
    import pathlib

    from benchmark.analysis import curves

    before = history.code_key()
    read = pathlib.Path.read_bytes
    monkeypatch.setattr(pathlib.Path, "read_bytes",
                        lambda self: read(self) + (b"# changed" if str(self) == curves.__file__ else b""))
    assert history.code_key() != before


def test_a_run_not_summarised_yet_is_read_from_its_shards(tmp_path, capsys):
    """A killed run has its shards but no summary.parquet: history reads it as load_run does (a summary made from
    the shards, not written) instead of stopping at the missing file."""
    for name in ("r0", "r1"):
        config = RunConfig(dataset="sample:6", split="all", inception={"enabled": False}, caption_embedder="none",
                           image_metrics={"ms_ssim": False, "lpips": "none"},
                           codecs=[parse_codec_spec("webp quality=20,50,80 label=model"),
                                   parse_codec_spec("jpeg quality=20,50,80")])
        execute(create_run(config, tmp_path / "runs", name, progress=False), jobs=1, progress=False)
    summary = tmp_path / "runs" / "r1" / "summary.parquet"
    summary.unlink()
    (summary.parent / f".{summary.name}.sha256").unlink(missing_ok=True)
    table = history.build([tmp_path / "runs"], history.HistoryOptions(codecs=["model"], anchor_codec="jpeg",
                                                                      resamples=0)).table
    assert list(table.change) == ["first", "same"], table
    assert not summary.exists()  # reading a run writes nothing into it


def test_a_run_from_before_commit_dates_were_recorded_takes_its_commit_s_date_from_the_checkout(tmp_path, monkeypatch):
    """config.json had no git_date before it was recorded: such a run (made on 2f1adf2) was ordered by its creation
    time, after runs of later commits, so an older commit's run came last and the anchor was a newer one. Its
    commit's date is read from the checkout when the checkout holds the commit; otherwise the creation time stands."""
    from benchmark.run import provenance
    from benchmark.run.record import RunRecord

    repo = tmp_path / "checkout"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_AUTHOR_DATE": "2026-03-01T12:00:00+00:00",
           "GIT_COMMITTER_DATE": "2026-03-01T12:00:00+00:00"}
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "old"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                         text=True).stdout.strip()
    monkeypatch.setattr(provenance, "PROJECT_ROOT", repo)
    history._commit_date.cache_clear()
    made, other = "2026-12-08T03:54:15+00:00", "0" * 40
    try:
        assert history.commit_of(RunRecord(run_id="old", created=made, git_sha=sha)) == \
            (sha, "2026-03-01T12:00:00+00:00")
        assert history.commit_of(RunRecord(run_id="o", created=made, git_sha=sha + "-dirty"))[1] == \
            "2026-03-01T12:00:00+00:00"
        assert history.commit_of(RunRecord(run_id="x", created=made, git_sha=other)) == (other, made)
        recorded = RunRecord(run_id="new", created=made, git_sha=sha, git_date="2026-04-01T00:00:00+00:00")
        assert history.commit_of(recorded)[1] == "2026-04-01T00:00:00+00:00"  # a recorded date is the run's own
    finally:
        history._commit_date.cache_clear()
