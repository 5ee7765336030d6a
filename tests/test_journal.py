"""The journal is the truth a resume trusts: sticky ends, newest checkpoints, nothing absolute
kept by Ray, and tables that only move forward."""

import pickle
from types import SimpleNamespace

import pytest
from searchutil import space_file

from tune_mnist.search.journal import Journal, read_record
from tune_mnist.search.space_file import load_space
from tune_mnist.search.writer import Relay, ResultsWriter, set_live

ROOT = "/old/results/.ray/x"


def _trial(trial_id, status="RUNNING", epoch=0, done=False):
    return SimpleNamespace(
        trial_id=trial_id,
        status=status,
        config={"arch": "super_light", "max_lr": 0.02, "rotate_deg": 0.0},
        last_result={"epoch": epoch, "done": done},
        storage=SimpleNamespace(trial_dir_name=f"run_{trial_id}"),
        error_file=None,
    )


def _report(epoch, acc=90.0):
    return {
        "epoch": epoch,
        "val_acc": acc,
        "test_acc": acc,
        "epoch_s": 1.0,
        "params": 4836,
        "diverged": False,
        "start_epoch": 0,
    }


def _writer(tmp_path, experiment=ROOT, samples=3):
    space = load_space(space_file(tmp_path, epochs=4, samples=samples))
    return ResultsWriter(tmp_path / "res", space, 1, {"commit": "abc"}, experiment)


def _run(writer, trial, epochs):
    writer.on_trial_start([trial], trial)
    for epoch in range(1, epochs + 1):
        trial.last_result = {**_report(epoch), "done": False}
        report = {**_report(epoch), "checkpoint_dir_name": f"checkpoint_{epoch:06d}"}
        writer.on_trial_result([trial], trial, report)


def test_an_ended_trial_stays_ended_and_its_rows_never_change(tmp_path):
    writer = _writer(tmp_path)
    a = _trial("a")
    _run(writer, a, 2)
    a.last_result["done"] = True  # the scheduler stopped it
    writer.on_trial_complete([a], a)
    before = writer.tables()[1]
    # a resumed Ray whose lagging snapshot still runs "a": whatever it reports is ignored
    writer.on_trial_result([a], a, _report(3, acc=10.0))
    writer.on_trial_complete([a], a)
    trials, epochs, _ = writer.tables()
    assert list(trials["status"]) == ["asha_stopped"]
    assert epochs.equals(before)
    assert writer.ledger().ended == frozenset({"a"})


def test_a_search_stopped_before_any_trial_writes_no_table(tmp_path):
    """A Ctrl-C or SIGTERM before Ray Tune's first trial: nothing to continue, so no table
    that would make the name look started (and crash on an empty table)."""
    from tune_mnist.search.command import has_started

    writer = _writer(tmp_path)
    assert writer.write() == []
    assert not has_started(tmp_path / "res", str(tmp_path / "no-ray-state"))
    _run(writer, _trial("a"), 1)
    assert "trials.parquet" in [p.name for p in writer.write()]


def test_a_trial_stopped_by_an_interrupt_is_interrupted_and_resumable(tmp_path):
    writer = _writer(tmp_path)
    a = _trial("a")
    _run(writer, a, 2)
    a.status = "TERMINATED"  # Ray's clean-up after Ctrl-C: no `done` in its last result
    writer.on_trial_complete([a], a)
    assert list(writer.tables()[0]["status"]) == ["interrupted"]
    ledger = writer.ledger()
    assert ledger.ended == frozenset() and ledger.newest["a"].endswith("run_a/checkpoint_000002")
    assert ledger.epochs == {"a": 2}


def test_a_moved_experiment_resolves_checkpoints_under_its_new_place(tmp_path):
    old = _writer(tmp_path)
    _run(old, _trial("a"), 3)
    moved = _writer(tmp_path, experiment="s3://bucket/prefix/x")  # same journal, new storage
    assert moved.ledger().newest == {"a": "s3://bucket/prefix/x/run_a/checkpoint_000003"}
    lines = (tmp_path / "res" / "journal" / "a.jsonl").read_text()
    assert ROOT not in lines  # checkpoints are kept relative to the experiment


def test_what_ray_pickles_holds_no_path_and_forwards_to_the_live_writer(tmp_path):
    writer = _writer(tmp_path)
    relay = pickle.loads(pickle.dumps(Relay()))
    assert str(tmp_path) not in str(pickle.dumps(relay))
    set_live(writer)
    try:
        a = _trial("a")
        relay.on_trial_start(0, [a], a)
        relay.on_trial_result(0, [a], a, _report(1))
    finally:
        set_live(None)
    relay.on_trial_result(0, [a], a, _report(2))  # no live writer: dropped, no error
    assert [r["epoch"] for r in writer.journal.read()["a"].results] == [1]


def test_a_journaled_trial_unknown_to_ray_after_a_kill_is_lost_not_dropped(tmp_path):
    writer = _writer(tmp_path)
    _run(writer, _trial("a"), 2)
    b = _trial("b")
    resumed = _writer(tmp_path)
    resumed.on_step_begin([b])  # Ray's restored state knows only "b"
    trials = resumed.tables()[0].set_index("trial_id")
    assert trials.loc["a", "status"] == "lost" and trials.loc["a", "epochs_run"] == 2
    assert resumed.counts()[0] == 1  # lost counts as ended: the search can finish


def test_a_line_cut_short_by_a_kill_is_skipped(tmp_path):
    journal = Journal(tmp_path)
    journal.start("a", {"arch": "tiny"}, {})
    journal.epoch("a", _report(1))
    path = tmp_path / "journal" / "a.jsonl"
    with open(path, "a") as handle:
        handle.write('{"kind": "epoch", "result": {"epo')
    record = read_record(path)
    assert [r["epoch"] for r in record.results] == [1] and record.config == {"arch": "tiny"}


def test_nan_and_numpy_values_are_journaled_as_plain_json(tmp_path):
    import numpy as np

    journal = Journal(tmp_path)
    journal.epoch("a", {"epoch": np.int64(1), "val_acc": float("nan"), "x": np.float32(2.5)})
    result = read_record(tmp_path / "journal" / "a.jsonl").results[0]
    assert result == {"epoch": 1, "val_acc": None, "x": 2.5}


def test_a_kill_between_two_table_files_never_leaves_trials_without_its_partners(
    tmp_path, monkeypatch
):
    """Each file is replaced atomically, but three files are not one: trials.parquet, the one
    readers open first, must be written last, so that a kill never leaves it alone."""
    import tune_mnist.results as results

    writer = _writer(tmp_path)
    a = _trial("a")
    _run(writer, a, 1)
    written = []

    def die_after_first(path, frame):
        written.append(path.name)
        raise KeyboardInterrupt  # the kill, between the first file and the next

    monkeypatch.setattr(results, "write_parquet", die_after_first)
    try:
        writer.write()
    except KeyboardInterrupt:
        pass
    assert written and written[0] != "trials.parquet"
    monkeypatch.undo()
    paths = writer.write()
    assert [p.name for p in paths][-1] == "trials.parquet"
    assert {p.name for p in paths} == {"trials.parquet", "epochs.parquet", "passing.parquet"}


def test_a_replayed_epoch_is_marked_and_not_counted_as_this_runs_training(tmp_path):
    """An epoch trained before a kill, its report recovered from the checkpoint on resume:
    the row says so, and the summary's training time does not count it twice."""
    writer = _writer(tmp_path)
    a = _trial("a")
    _run(writer, a, 1)
    busy = writer.busy_s
    writer.on_trial_result([a], a, {**_report(2), "replayed": True})
    _, epochs, _ = writer.tables()
    assert epochs["replayed"].tolist() == [False, True] and epochs["replayed"].dtype == bool
    assert writer.busy_s == busy


def test_a_table_rewritten_while_it_is_read_always_reads_whole(tmp_path):
    """A search replaces its tables (by rename) while users and tests read them: pyarrow given
    a path opens the file twice, and a rename in between failed ~1 read in 8 here."""
    import threading

    import numpy as np
    import pandas as pd

    from tune_mnist.tables import read_parquet, write_parquet

    path = tmp_path / "epochs.parquet"
    frames = [
        pd.DataFrame({"trial_id": "t", "epoch": np.arange(n), "acc": np.linspace(0, 1, n)})
        for n in (9, 999)
    ]
    write_parquet(path, frames[0])
    stop = threading.Event()

    def rewrite():
        while not stop.is_set():
            for frame in frames:
                write_parquet(path, frame)

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        lengths = {len(read_parquet(path)) for _ in range(1000)}
    finally:
        stop.set()
        writer.join()
    assert lengths <= {9, 999}


def test_the_ray_storage_filesystem_shows_a_file_whole_or_not_at_all(tmp_path):
    """Ray truncates and rewrites its state files in the storage every few seconds; through
    tune_mnist.search.atomic_fs a file being written has another name until it is complete,
    so a kill mid-write leaves the old content, never a cut one."""
    import pyarrow.fs

    from tune_mnist.search.atomic_fs import storage_filesystem

    assert storage_filesystem("s3://bucket/runs") is None  # object stores write whole already
    fs = pickle.loads(pickle.dumps(storage_filesystem(str(tmp_path))))  # as Ray sends it
    target = tmp_path / "experiment_state-1.json"
    target.write_text("old")
    stream = fs.open_output_stream(str(target))
    stream.write(b"new, and longer")
    assert target.read_text() == "old"  # a kill now leaves the old file
    stream.close()
    assert target.read_text() == "new, and longer"
    source = tmp_path / "staging"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "searcher-state-1.pkl").write_bytes(b"x" * 5000)
    pyarrow.fs.copy_files(str(source), str(tmp_path / "up"), destination_filesystem=fs)
    assert (tmp_path / "up" / "sub" / "searcher-state-1.pkl").read_bytes() == b"x" * 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name, "staging", "up"]
    from tune_mnist.search.atomic_fs import _Whole

    class Full:  # a disk that fills up mid-file
        def write(self, data):
            raise OSError(28, "No space left on device")

        def close(self):
            pass

    failing = _Whole(str(target))
    failing.handle.close()
    failing.handle = Full()
    with pytest.raises(OSError):
        failing.write(b"cut")
    failing.close()
    assert target.read_text() == "new, and longer"  # the old file, and no partial one left
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name, "staging", "up"]


def test_a_damaged_line_never_breaks_a_read_and_the_resume_check_names_it(tmp_path):
    from tune_mnist.search.journal import damaged

    journal = Journal(tmp_path)
    journal.start("a", {"arch": "tiny"}, {})
    journal.epoch("a", _report(1))
    path = tmp_path / "journal" / "a.jsonl"
    whole = path.read_bytes()
    with open(path, "ab") as handle:
        handle.write(b'{"kind": "epoch", "result": {"epo')  # a kill cuts the last line only
    assert damaged(tmp_path) is None
    path.write_bytes(whole + b"\xff\xfe\x00 not json\n[3]\n" + whole.splitlines(True)[1])
    record = read_record(path)  # undecodable bytes and a list: skipped, never raised
    assert [r["epoch"] for r in record.results] == [1, 1] and record.config == {"arch": "tiny"}
    assert damaged(tmp_path) == f"{path}: line 3 of 5 is damaged"
    (tmp_path / "journal" / "b.jsonl").write_text('{"kind": "sta')  # a start cut by a kill
    path.write_bytes(whole)
    assert damaged(tmp_path) is None


@pytest.mark.parametrize(
    "tail", ['{"kind": "epoch", "result": {"epo', '{"kind": "epoch", "result": {"epoch": 9}}']
)
def test_a_resume_appends_after_a_cut_last_line_on_a_line_of_its_own(tmp_path, tail):
    from tune_mnist.search.journal import damaged

    journal = Journal(tmp_path)
    journal.start("a", {"arch": "tiny"}, {})
    journal.epoch("a", _report(1))
    path = tmp_path / "journal" / "a.jsonl"
    with open(path, "a") as handle:
        handle.write(tail)  # a kill mid-write: no newline
    resumed = Journal(tmp_path)  # the next process
    resumed.epoch("a", _report(2))
    record = read_record(path)
    whole = tail.endswith("}")  # a line whole but for its newline is kept
    assert [r["epoch"] for r in record.results] == ([1, 9, 2] if whole else [1, 2])
    assert damaged(tmp_path) is None and path.read_text().endswith("\n")


def test_progress_counts_a_promoted_trial_a_resume_restored_as_waiting_for_a_slot(tmp_path, capsys):
    """A resumed process has seen no epoch of the trials Ray restored: the journal says which
    of its pending trials already trained (promoted, waiting for a slot) and which are new."""
    first = _writer(tmp_path, samples=4)
    promoted, fresh, ended, stopped = _trial("p"), _trial("n"), _trial("e"), _trial("s")
    _run(first, stopped, 1)
    stopped.last_result["done"] = True  # stopped at its rung: Ray still says PAUSED
    first.on_trial_complete([stopped], stopped)
    _run(first, promoted, 2)
    _run(first, ended, 2)
    ended.last_result["done"] = True
    first.on_trial_complete([ended], ended)
    resumed = _writer(tmp_path, samples=4)  # a new process over the same folder
    promoted.status = fresh.status = "PENDING"
    ended.status, stopped.status = "TERMINATED", "PAUSED"
    resumed.trials = [promoted, fresh, ended, stopped]
    resumed.progress()
    line = capsys.readouterr().out
    assert "2 of 4 trials ended" in line and "1 promoted, waiting for a slot" in line
    assert "waiting at a rung" not in line
