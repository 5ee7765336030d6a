"""Resume keeps its word at any kill moment: a search's process group (its trials training
in rungs) is SIGKILLed before any table, right after the first one, mid-epoch, during a
resume and twice in a row, then resumed to the end. Ctrl-C and SIGTERM stop it cleanly, and
a moved folder resumes where it now lies."""

import hashlib
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from searchutil import env, journal, run_search, search_command, space_file

from tune_mnist.search.optuna_journal import FILE
from tune_mnist.tables import read_parquet

pytestmark = pytest.mark.slow

EPOCHS = 6
SAMPLES = 5
IMAGES = 2000  # ~0.4 s an epoch: the kills wait on files, not on time
ENDED = {"completed", "asha_stopped", "over_budget", "diverged", "error"}


def _start(results: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        search_command(*args),
        env=env(results),
        start_new_session=True,  # its own process group, as a terminal would give it
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=120)


def _epoch_lines(folder: Path) -> int:
    journal = folder / "journal"
    files = journal.glob("*.jsonl") if journal.is_dir() else []
    return sum(text.count('"kind": "epoch"') for text in (p.read_text() for p in files))


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.is_file() else 0


def _read(folder: Path) -> dict[str, tuple[str, pd.DataFrame]] | None:
    """trial id -> (status, its epoch rows), or None before the first table."""
    if not (folder / "trials.parquet").is_file():
        return None
    trials = read_parquet(folder / "trials.parquet")  # one open each: a search rewrites them
    epochs = read_parquet(folder / "epochs.parquet")
    return {
        tid: (status, epochs[epochs["trial_id"] == tid].reset_index(drop=True))
        for tid, status in zip(trials["trial_id"], trials["status"], strict=True)
    }


def _forward(before, after) -> None:
    """Nothing recorded goes missing; an ended trial's status and rows never change."""
    if before is None:
        return
    assert after is not None, "the tables disappeared"
    for tid, (status, rows) in before.items():
        assert tid in after, f"trial {tid} vanished from the tables"
        now_status, now_rows = after[tid]
        assert set(rows["epoch"]) <= set(now_rows["epoch"]), f"{tid} lost epochs"
        if status in ENDED:
            assert now_status == status, f"{tid}: {status} became {now_status}"
            pd.testing.assert_frame_equal(rows, now_rows, obj=f"ended trial {tid}")


class Watch:
    """Reads the tables while a search runs and checks that each read only moves forward."""

    def __init__(self, folder: Path):
        self.folder, self.last, self.history = folder, None, []

    def read(self) -> None:
        now = _read(self.folder)
        _forward(self.last, now)
        if now is not None:
            self.last = now

    def until(self, proc, condition, what: str, timeout=400) -> None:
        deadline = time.time() + timeout
        while not condition():
            assert proc.poll() is None, f"the search ended before {what}: {proc.stderr.read()}"
            assert time.time() < deadline, f"timed out waiting for {what}"
            self.read()
            time.sleep(0.05)

    def killed(self) -> None:
        """After a kill: one more forward check, and what each running trial had done."""
        self.read()
        if self.last is not None:
            self.history.append(
                {tid: len(rows) for tid, (status, rows) in self.last.items() if status not in ENDED}
            )


def test_kills_at_many_moments_lose_nothing_and_retrain_nothing(tmp_path):
    results = tmp_path / "results"
    folder = results / "k"
    # each trial trains a 2-epoch run, then (if ASHA keeps it) its 6-epoch one: kills land
    # inside either rung and between them
    space = space_file(
        tmp_path,
        epochs=EPOCHS,
        samples=SAMPLES,
        max_params=8000,
        images=IMAGES,
        rungs=["compressed2"],
    )
    args = ["--space", str(space), "--name", "k", "--no-report"]
    watch = Watch(folder)
    rng = random.Random(0)

    # 1. before any table: the name must stay usable, by --resume or by a plain start
    proc = _start(results, *args)
    watch.until(proc, lambda: (folder / "search.json").is_file(), "search.json")
    _kill(proc)
    assert _read(folder) is None
    again = _start(results, *args, "--resume")
    while again.poll() is None and not (folder / "resume.json").is_file():
        time.sleep(0.05)
    if again.poll() is not None:  # nothing Ray could restore: the name is free again
        assert again.returncode == 2 and "without --resume" in again.stderr.read()
        again = _start(results, *args)
    # 2. right after the first table
    watch.until(again, lambda: (folder / "trials.parquet").is_file(), "the first table")
    _kill(again)
    watch.killed()
    # 3. mid-epoch, during a resume
    proc = _start(results, *args, "--resume")
    seen = _epoch_lines(folder)
    watch.until(proc, lambda: _epoch_lines(folder) > seen, "a new epoch")
    time.sleep(rng.uniform(0.2, 0.8))  # somewhere inside the next epoch or two
    _kill(proc)
    watch.killed()
    # 4. twice in a row: at a resume's start, then at its first epoch
    stamp = _mtime(folder / "resume.json")
    proc = _start(results, *args, "--resume")
    watch.until(proc, lambda: _mtime(folder / "resume.json") != stamp, "a resume's start")
    _kill(proc)
    watch.killed()
    proc = _start(results, *args, "--resume")
    seen = _epoch_lines(folder)
    watch.until(proc, lambda: _epoch_lines(folder) > seen, "an epoch after two kills")
    _kill(proc)
    watch.killed()

    done = run_search(results, *args, "--resume")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    watch.read()
    final = watch.last
    statuses = [status for status, _ in final.values()]
    assert all(s in ENDED or s == "lost" for s in statuses), statuses
    assert sum(s in ENDED for s in statuses) == SAMPLES, statuses
    for tid, (_, rows) in final.items():
        assert list(rows["epoch"]) == list(range(1, len(rows) + 1)), f"{tid}: gap or duplicate"
    # a resume starts no trial that waits at its first rung: the quota holds through kills
    judged = [rows for _, rows in final.values() if len(rows) and rows["epoch"].max() >= 2]
    went_on = sum(rows["epoch"].max() > 2 for rows in judged)
    assert went_on <= max(1, len(judged) // 2), (went_on, len(judged))
    for before in watch.history:  # a trial running at a kill went on from a checkpoint
        for tid, had in before.items():
            rows = final[tid][1]
            later = rows[(rows["epoch"] > had) & ~rows["replayed"]]  # replayed: not retrained
            assert had == 0 or (later["start_epoch"] >= 1).all(), f"{tid} restarted from scratch"
    # the Optuna study file went through every kill too: each trial of the tables once
    study = optuna.load_study(
        study_name="k", storage=JournalStorage(JournalFileBackend(str(folder / FILE)))
    )
    ids = [t.user_attrs["trial_id"] for t in study.trials]
    assert sorted(ids) == sorted(final), (len(ids), len(final))
    epochs = {t.user_attrs["trial_id"]: len(t.intermediate_values) for t in study.trials}
    assert epochs == {tid: len(rows) for tid, (_, rows) in final.items()}


def _interrupted(tmp_path, name: str, sig: int, group: bool):
    results = tmp_path / "results"
    space = space_file(
        tmp_path, epochs=EPOCHS, grace=EPOCHS, samples=3, max_params=8000, images=IMAGES
    )
    args = ["--space", str(space), "--name", name, "--no-report"]
    proc = _start(results, *args)
    try:
        watch = Watch(results / name)
        watch.until(proc, lambda: _epoch_lines(results / name) >= 2, "two epochs")
        os.killpg(proc.pid, sig) if group else os.kill(proc.pid, sig)
        code = proc.wait(timeout=300)
        stderr = proc.stderr.read()
    finally:
        _kill(proc)
    return results, args, code, stderr


@pytest.fixture(scope="module")
def ctrl_c(tmp_path_factory):
    """A search stopped by Ctrl-C to its process group after two epochs (read, never changed,
    by the tests that take it)."""
    return _interrupted(tmp_path_factory.mktemp("ctrl-c"), "c", signal.SIGINT, True)


def _stopped_cleanly(results: Path, code: int, stderr: str, expected: int) -> None:
    assert code == expected, stderr[-2000:]
    assert "python scripts/search.py --resume --name c" in stderr
    assert "Tuner.restore" not in stderr  # Ray's own hint, for its API, is not ours
    trials = pd.read_parquet(results / "c" / "trials.parquet")
    assert "interrupted" in set(trials["status"]), trials["status"]
    assert not ({"asha_stopped", "completed"} & set(trials["status"]))
    summary = (results / "c" / "summary.json").read_text()
    assert '"trials": 3' in summary


def test_ctrl_c_to_the_group_stops_with_130_a_hint_and_interrupted_trials(ctrl_c):
    results, _, code, stderr = ctrl_c
    _stopped_cleanly(results, code, stderr, 130)


def test_sigterm_to_the_driver_stops_with_143_a_hint_and_interrupted_trials(tmp_path):
    results, _, code, stderr = _interrupted(tmp_path, "c", signal.SIGTERM, False)
    _stopped_cleanly(results, code, stderr, 143)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_moved_search_resumes_in_its_new_place_and_leaves_the_old_alone(ctrl_c, tmp_path):
    results, args, got, _ = ctrl_c
    assert got == 130
    moved = tmp_path / "elsewhere"
    shutil.copytree(results / "c", moved / "c")
    shutil.copytree(results / ".ray" / "c", moved / ".ray" / "c")
    old_tables, old_ray = _digest(results / "c"), _digest(results / ".ray" / "c")
    done = run_search(moved, *args, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _digest(results / "c") == old_tables and _digest(results / ".ray" / "c") == old_ray
    trials = pd.read_parquet(moved / "c" / "trials.parquet")
    assert len(trials) == 3 and trials["status"].isin(list(ENDED)).all()
    epochs = pd.read_parquet(moved / "c" / "epochs.parquet")
    assert (epochs["start_epoch"] > 0).any(), "the interrupted trials started over"


def test_two_searches_started_together_one_runs_the_other_is_refused(tmp_path):
    results = tmp_path / "results"
    space = space_file(tmp_path, epochs=1, grace=1, samples=2, max_params=8000, images=IMAGES)
    args = ["--space", str(space), "--name", "race", "--no-report"]
    procs = [_start(results, *args) for _ in range(2)]  # the same moment, the same name
    try:
        deadline = time.time() + 400
        while all(p.poll() is None for p in procs):
            assert time.time() < deadline, "neither search was refused"
            time.sleep(0.05)
        refused = next(p for p in procs if p.poll() is not None)
        running = next(p for p in procs if p is not refused)
        stderr = refused.stderr.read()
        assert refused.returncode == 2 and stderr.count("\n") == 1, stderr
        assert "already running" in stderr and f"pid {running.pid}" in stderr
        assert running.wait(timeout=600) == 0, running.stderr.read()[-2000:]
    finally:
        for proc in procs:
            _kill(proc)
    trials = pd.read_parquet(results / "race" / "trials.parquet")
    assert len(trials) == 2 and trials["status"].isin(list(ENDED)).all()
    assert len(list((results / ".ray" / "race").glob("run_trial_*"))) == 2  # one driver's


def test_a_damaged_ray_state_is_refused_in_one_line(ctrl_c, tmp_path):
    """Ray read an empty state file (left by a kill during one of its non-atomic copies) as
    "no run to restore", went on with no trial and saved that as its newest state: every later
    resume ended at once. Such a file is now named in one line before Ray starts, and so is a
    newest state that knows none of the journal's trials."""
    results, args, _, _ = ctrl_c
    copy = tmp_path / "results"
    shutil.copytree(results / "c", copy / "c")
    shutil.copytree(results / ".ray" / "c", copy / ".ray" / "c")
    newest = max((copy / ".ray" / "c").glob("search_gen_state-*.json"))
    newest.write_bytes(b"")
    done = run_search(copy, *args, "--resume")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"cannot read its saved state {newest} (empty); move that file aside" in done.stderr
    newest.unlink()
    state = max((copy / ".ray" / "c").glob("experiment_state-*.json"))
    state.write_text(state.read_text().replace('"trial_data": [', '"trial_data": [], "x": [', 1))
    done = run_search(copy, *args, "--resume")
    assert done.returncode == 2 and f"saved state {state} (no trial)" in done.stderr, done.stderr


def _past_first_epoch(folder: Path) -> bool:
    return any('"epoch": 2,' in p.read_text() for p in (folder / "journal").glob("*.jsonl"))


def test_a_kill_at_the_search_end_resumes_with_the_same_promotions(tmp_path):
    """Under `--promotion end`, killed once the end's promotions began (every other trial
    waits at the rung then): the resume trains past the first rung exactly the rung's best
    half, as an unbroken search does. Ray's resume makes the waiting trials PENDING; started,
    each would train its next rung unpromoted."""
    results, folder = tmp_path / "results", tmp_path / "results" / "e"
    space = space_file(tmp_path, epochs=3, grace=1, samples=8, max_params=4000, images=IMAGES)
    args = ["--space", str(space), "--name", "e", "--no-report", "--promotion", "end"]
    proc = _start(results, *args)
    Watch(folder).until(proc, lambda: _past_first_epoch(folder), "the first promotion")
    _kill(proc)
    done = run_search(results, *args, "--resume")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    first, went_on = {}, set()
    for trial_id, entries in journal(folder).items():
        epochs = [e["result"] for e in entries if e["kind"] == "epoch"]
        if epochs and not epochs[0].get("over_budget"):
            first[trial_id] = epochs[0]["val_acc_avg3"]
            went_on |= {trial_id} if max(e["epoch"] for e in epochs) > 1 else set()
    assert len(went_on) == len(first) // 2, (sorted(went_on), first)
    assert min(first[t] for t in went_on) >= max(first[t] for t in first if t not in went_on)
