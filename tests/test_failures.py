"""Nothing lost, nothing let in: failing trials, dying workers, bad input, listeners."""

import gzip
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from searchutil import ROOT, env, journal, run_search, search_command, space_file

from tune_mnist.results import load
from tune_mnist.train.data import FILES, find_file, resolve_data_dir

pytestmark = pytest.mark.slow


@pytest.fixture
def search_main(tmp_path, monkeypatch, capsys):
    """scripts/search.py's main() in this process, for the cases refused before any trial (a
    subprocess costs seconds of imports each; test_search runs the script itself): results
    under tmp_path, the environment restored after; a case that reaches the search fails."""
    import tune_mnist.search.command as command
    import tune_mnist.search.tuner as tuner

    def reached(*args, **kwargs):
        raise AssertionError("a bad input reached the search")

    monkeypatch.setattr(tuner, "run_search", reached)
    saved = dict(os.environ)

    def call(*args: str, results=None) -> tuple[int, str, str]:
        monkeypatch.setenv("TUNE_MNIST_RESULTS", str(results or tmp_path / "results"))
        capsys.readouterr()
        code = command.main(["--gpus", "0", *args])
        out, err = capsys.readouterr()
        return code, out, err

    yield call
    os.environ.clear()
    os.environ.update(saved)


def _search(tmp_path, *args, samples=2, epochs=3, code=0, out=None, **extra):
    space = space_file(
        tmp_path, epochs=epochs, grace=epochs, samples=samples, max_params=8000, images=2000
    )
    done = run_search(
        tmp_path / "results", "--space", str(space), "--name", "f", "--no-report", *args, **extra
    )
    assert done.returncode == code, done.stdout[-3000:] + done.stderr[-3000:]
    if out is not None:
        out.append(done)
    return load(tmp_path / "results" / "f")


def _listening_sockets():
    """(address, port) of every listening TCP socket on this machine, from /proc/net."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A":  # LISTEN
                address, port = parts[1].split(":")
                found.add((address[:width], int(port, 16)))
    return found


# 127.0.0.1, ::1 and ::ffff:127.0.0.1 as /proc/net writes them
LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


OVER_BUDGET = "points_to_evaluate:\n  - {arch: super_light, max_lr: 0.02, rotate_deg: 10.0}\n"
DIVERGES = 50000.0  # a max_lr no model survives: its loss is NaN within the first epoch
POINTS = f"""points_to_evaluate:
  - {{arch: tiny, max_lr: 0.02}}
  - {{arch: tiny, max_lr: 0.03}}
  - {{arch: super_light, max_lr: {DIVERGES}}}
"""


def test_failing_once_is_retried_from_its_checkpoint_diverging_never_and_no_public_listener(
    tmp_path,
):
    """One search on its own Ray, three behaviours: the trials that fail once at epoch 2 go on
    from their checkpoints, the one that diverges at epoch 1 is neither retried (although
    --max-failures allows it) nor passed, and nothing the search starts listens beyond
    loopback."""
    space = space_file(
        tmp_path, epochs=3, grace=3, samples=3, max_params=8000, points=POINTS, images=2000
    )
    text = space.read_text().replace(
        "{loguniform: [0.01, 0.05]}", f"{{choice: [0.02, 0.03, {DIVERGES}]}}"
    )
    space.write_text(text)
    before = _listening_sockets()
    log = tmp_path / "stdout.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            search_command(
                "--space", str(space), "--name", "f", "--no-report", "--max-failures", "1"
            ),
            env=env(tmp_path / "results", TUNE_MNIST_FAIL_AT_EPOCH="2:once"),
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        opened = set()
        try:
            while proc.poll() is None:
                opened |= _listening_sockets() - before
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    stdout = log.read_text()
    assert proc.returncode == 0, stdout[-3000:]
    assert opened, "saw no listener at all: the check would not catch one"
    public = {(a, p) for a, p in opened if a not in LOOPBACK}
    assert not public, f"listening beyond loopback: {public}"

    results = load(tmp_path / "results" / "f")
    trials = results.trials.set_index("trial_id")
    diverged = trials[trials["max_lr"] == DIVERGES]
    assert list(diverged["status"]) == ["diverged"] and list(diverged["epochs_run"]) == [1]
    assert not diverged["passed"].any()
    others = trials.drop(diverged.index)
    assert len(others) == 2 and (others["status"] == "completed").all()
    for tid, group in results.epochs.groupby("trial_id"):
        if tid in others.index:
            assert list(group["epoch"]) == [1, 2, 3]
            assert list(group["start_epoch"]) == [0, 1, 1]  # epochs 2-3 after a restore
        else:
            assert list(group["epoch"]) == [1] and list(group["start_epoch"]) == [0]
    assert stdout.count(" restarted after a failure: ") == 2  # not the diverged one
    _adds_up(tmp_path / "results" / "f", trained=2, cut={"diverged": 1})
    assert "cut short (not the scheduler's doing): diverged 1 (2 epochs not trained)" in stdout


def _adds_up(folder, trained: int, cut: dict[str, int]) -> None:
    """summary.json's endings add up to the trials table's statuses."""
    summary = json.loads((folder / "summary.json").read_text())
    statuses = load(folder).trials["status"].value_counts().to_dict()
    assert summary["trained_to_end"] == trained
    assert {s: n["trials"] for s, n in summary["cut_short"].items()} == cut
    assert trained + sum(cut.values()) == sum(statuses.values()) == summary["trials"]


def test_trial_failing_every_time_is_recorded_as_error_and_the_search_exits_1(tmp_path):
    """Every trial failed: the search ran but trained nothing, and a script must see that
    (exit 1, one line naming the first cause); each failure is one line as it happens."""
    runs = []
    env = {"TUNE_MNIST_FAIL_AT_EPOCH": "2"}
    results = _search(tmp_path, "--max-failures", "1", code=1, out=runs, **env)
    trials = results.trials
    assert (trials["status"] == "error").all() and not trials["passed"].any()
    assert trials["error"].str.contains("injected failure at epoch 2").all()
    assert (trials["epochs_run"] == 1).all()
    done = runs[0]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no trial trained to its end: 2 failed; first: trial " in errors[0]
    assert "injected failure at epoch 2" in errors[0] and "1 more failed trial" in errors[0]
    failed = [line for line in done.stdout.splitlines() if " failed (" in line]
    assert len(failed) == 2 and all("Ray's full error: " in line for line in failed)
    assert "Trial task failed" not in done.stderr  # Ray's traceback is in its error file
    # nor Ray's own reporter's notices (Ray's output engine, off: ray_door.quiet_tune_output)
    assert "errored after" not in done.stdout and "Number of errored" not in done.stdout
    assert "Trials did not complete" not in done.stderr
    assert done.stdout.count(" restarted after a failure: ") == 2  # --max-failures 1, 2 trials
    assert done.stdout.count("    failed: trial ") == 2  # the summary lists each with its cause
    _adds_up(tmp_path / "results" / "f", trained=0, cut={"error": 2})


def test_a_search_whose_trials_all_diverge_or_are_over_budget_exits_1_and_says_why(tmp_path):
    """Divergence and budget refusals happen at run time: neither is a trial trained to its
    end, so the search exits 1, its line gives the counts by cause, and the summary counts
    no scheduler saving for them."""
    space = space_file(
        tmp_path, epochs=3, samples=3, max_params=4000, images=2000, points=OVER_BUDGET
    )
    text = space.read_text().replace("{loguniform: [0.01, 0.05]}", f"{{choice: [{DIVERGES}]}}")
    space.write_text(text.replace("max_lr: 0.02", f"max_lr: {DIVERGES}"))
    done = run_search(tmp_path / "results", "--space", str(space), "--name", "d", "--no-report")
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    [line] = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert "no trial trained to its end: 2 diverged, 1 over budget; first: trial " in line, line
    trials = load(tmp_path / "results" / "d").trials
    assert sorted(trials["status"]) == ["diverged", "diverged", "over_budget"]
    summary = json.loads((tmp_path / "results" / "d" / "summary.json").read_text())
    assert summary["trained_to_end"] == 0 and summary["full_fidelity_share"] is None
    # the epoch a loss goes non-finite depends on float order (threads, load), up to the
    # last: the count is whatever the diverged trials left of their 3 epochs
    ran = trials.loc[trials["status"] == "diverged", "epochs_run"]
    assert all(1 <= r <= 3 for r in ran), list(ran)
    left = int((3 - ran).sum())
    assert summary["cut_short"]["diverged"] == {"trials": 2, "epochs_not_trained": left}
    assert summary["cut_short"]["over_budget"] == {"trials": 1, "epochs_not_trained": 3}
    assert f"cut short (not the scheduler's doing): diverged 2 ({left} epochs not trained)" in (
        done.stdout
    )
    assert "full-fidelity share" not in done.stdout  # nothing the scheduler judged
    _adds_up(tmp_path / "results" / "d", trained=0, cut={"diverged": 2, "over_budget": 1})


def test_a_recipe_the_schedule_cannot_run_is_refused_before_ray_starts(tmp_path, search_main):
    """A one-step warm-up (128 images, batch 64, 1 epoch, pct_start 0.5) fails every trial at
    its first step: the fixed values say so before Ray starts."""
    space = space_file(tmp_path, epochs=1, grace=1, samples=3, max_params=8000, images=128)
    text = space.read_text()
    text = text.replace("fixed: {batch_size: 64}", "fixed: {batch_size: 64, pct_start: 0.5}")
    (tmp_path / "space.yaml").write_text(text)
    code, stdout, stderr = search_main("--space", str(tmp_path / "space.yaml"), "--name", "w")
    assert code == 2 and stderr.count("\n") == 1, stderr[-2000:]
    assert "warm-up of exactly one step" in stderr and "pct_start 0.5" in stderr
    assert not (tmp_path / "results" / "w").exists() and "Ray" not in stdout


def _start_search(tmp_path, results, name: str, samples: int = 2) -> subprocess.Popen:
    """A 10-epoch search of `samples` trials in the background, in its own process group."""
    space = space_file(tmp_path, epochs=10, grace=10, samples=samples, max_params=8000, images=2000)
    return subprocess.Popen(
        search_command("--space", str(space), "--name", name, "--no-report"),
        env=env(results),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_killed_worker_is_retried_from_checkpoint(tmp_path):
    results = tmp_path / "results"
    # the journal has each epoch as soon as the driver has it (Ray's result.json comes in
    # bursts); 10 epochs leave the kill ~8 epochs to land in
    proc = _start_search(tmp_path, results, "w")
    killed = None
    try:
        deadline = time.time() + 300
        while killed is None and time.time() < deadline and proc.poll() is None:
            for trial, lines in journal(results / "w").items():
                if any(e["kind"] == "end" for e in lines):
                    continue
                second = [e["result"] for e in lines if e["kind"] == "epoch"][1:2]
                if second and second[0].get("pid"):  # its worker is past epoch 2
                    try:
                        os.kill(second[0]["pid"], signal.SIGKILL)
                    except ProcessLookupError:  # that trial ended between read and kill
                        continue
                    killed = trial
                    break
            time.sleep(0.1)
        assert killed, "no trial reached epoch 2 to be killed"
        assert proc.wait(timeout=400) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    final = load(results / "w")
    assert (final.trials["status"] == "completed").all()
    rows = final.epochs[final.epochs["trial_id"] == killed]
    assert list(rows["epoch"]) == list(range(1, 11))
    assert rows["start_epoch"].iloc[-1] >= 2  # continued from a checkpoint, not from scratch


@pytest.fixture(scope="module")
def broken_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("broken")
    for name in FILES:
        shutil.copy(find_file(resolve_data_dir(), name), folder / f"{name}.gz")
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-10]))
    return folder


BAD_SPACES = {
    "not_yaml": "settings: [unclosed\n",
    "unknown_key": "settings: {samples: 2}\narch: {super_light: {}}\nparams: {lr: 0.1}\n",
    "unknown_arch": "arch: {resnet: {}}\n",
    "low_above_high": "arch: {super_light: {}}\nparams: {max_lr: {uniform: [0.1, 0.01]}}\n",
    "negative_dropout": "arch: {super_light: {}}\nparams: {dropout: -0.1}\n",
    "metric_on_test": "settings: {metric: test_acc}\narch: {super_light: {}}\n",
    "rungs_not_ending_in_full": "settings: {rungs: [compressed1]}\narch: {super_light: {}}\n",
    "max_params_nothing_fits": "arch: {super_light: {}}\n",
}


@pytest.mark.parametrize(
    "case",
    [
        *BAD_SPACES,
        "samples_0",
        "max_params_0",
        "max_params_no_draw_fits",
        "gpus_-1",
        "gpus_too_many",
        "broken_data",
        "name_escape",
        "name_empty",
        "seed_negative",
        "max_failures_negative",
        "data_dir_missing",
        "resume_unknown",
        "cpus_per_trial_0",
        "storage_bad_uri",
        "storage_unknown_scheme",
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, case, broken_data, search_main):
    args = ["--smoke", "--name", "bad"]
    if case in BAD_SPACES:
        (tmp_path / "s.yaml").write_text(BAD_SPACES[case])
        args += ["--space", str(tmp_path / "s.yaml")]
    extra = {
        "samples_0": ["--samples", "0"],
        "max_params_0": ["--max-params", "0"],
        "max_params_nothing_fits": ["--max-params", "1000"],
        "max_params_no_draw_fits": ["--max-params", "100"],
        "gpus_-1": ["--gpus", "-1"],
        "gpus_too_many": ["--gpus", "99"],
        "broken_data": ["--data-dir", str(broken_data)],
        "name_escape": ["--name", "../../etc"],
        "name_empty": ["--name", ""],
        "seed_negative": ["--sampler-seed", "-1"],
        "max_failures_negative": ["--max-failures", "-1"],
        "data_dir_missing": ["--data-dir", str(tmp_path / "no" / "mnist")],
        "resume_unknown": ["--resume"],
        "cpus_per_trial_0": ["--threads", "0"],
        "storage_bad_uri": ["--storage", "s3:/no-bucket"],
        "storage_unknown_scheme": ["--storage", "nosuchfs://x/y"],
    }.get(case, [])
    code, _, stderr = search_main(*args, *extra)
    assert code == 2, (case, stderr[-2000:])
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "no").exists()


def test_one_live_search_per_name_and_a_killed_one_frees_it(tmp_path):
    from tune_mnist.search.lock import hold
    from tune_mnist.search.plan import UsageError

    results = tmp_path / "results"
    # 40 trials outlive the second search's start on a loaded machine; it is killed at the end
    first = _start_search(tmp_path, results, "dup", samples=40)
    space = tmp_path / "space.yaml"
    lock = results / ".locks" / "dup.lock"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and first.poll() is None:
            if lock.is_file() and lock.read_text().strip():
                break
            time.sleep(0.1)
        assert first.poll() is None and lock.read_text().startswith(f"pid {first.pid} ")
        second = run_search(results, "--space", str(space), "--name", "dup", timeout=300)
        assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
        assert "already running" in second.stderr and f"pid {first.pid}" in second.stderr
        with pytest.raises(UsageError, match="already running"):
            hold(results, "dup")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    hold(results, "dup").close()  # the kernel dropped the dead search's lock


def test_a_start_that_died_before_any_trial_leaves_the_name_free(tmp_path, monkeypatch):
    from argparse import Namespace

    import tune_mnist.search.command as search
    from tune_mnist.search.plan import UsageError

    monkeypatch.setenv("TUNE_MNIST_RESULTS", str(tmp_path))
    folder = tmp_path / "stuck"
    folder.mkdir()
    (folder / "search.json").write_text("{}")  # killed after this, before Ray saved anything
    experiment = str(tmp_path / ".ray" / "stuck")
    search.check_folder(Namespace(resume=False), "stuck", folder, "s", experiment)  # free
    with pytest.raises(UsageError, match="without --resume"):
        search.check_folder(Namespace(resume=True), "stuck", folder, "s", experiment)
    (folder / "trials.parquet").write_bytes(b"")  # a trial ran: only --resume may go on
    with pytest.raises(UsageError, match="exists"):
        search.check_folder(Namespace(resume=False), "stuck", folder, "s", experiment)


def test_an_unwritable_results_root_is_one_line_exit_1(tmp_path, search_main):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # root ignores permissions; a file as parent does not
    code, _, stderr = search_main("--smoke", "--name", "w", results=blocker / "results")
    assert code == 1, stderr[-2000:]
    assert stderr.startswith("error: cannot write") and stderr.count("\n") == 1


@pytest.fixture
def copied_search(tmp_path):
    """A committed search's folder under tmp_path/results: its tables and space, without
    Ray's state (results/.ray is never committed) and with a journal of one trial."""
    from tune_mnist.search.journal import Journal

    folder = tmp_path / "results" / "copied"
    shutil.copytree(ROOT / "results" / "cold-4k", folder, ignore=shutil.ignore_patterns("*.png"))
    shutil.rmtree(folder / "journal", ignore_errors=True)
    journal = Journal(folder)
    journal.start("a", {"arch": "tiny"}, {})
    journal.epoch("a", {"epoch": 1, "val_acc": 90.0})
    journal.end("a", "TERMINATED")
    return folder


def test_a_resume_of_tables_without_their_ray_state_is_one_line_exit_2(copied_search, search_main):
    before = sorted(p.name for p in copied_search.iterdir())
    code, _, stderr = search_main("--resume", "--name", "copied")
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert "no Ray state" in stderr and "--storage" in stderr
    assert sorted(p.name for p in copied_search.iterdir()) == before
    assert not (copied_search.parent / ".ray").exists()


@pytest.mark.parametrize("how", ["bytes", "not_json", "not_an_object", "no_start"])
def test_a_damaged_journal_is_refused_before_ray_starts(
    copied_search, search_main, monkeypatch, how
):
    import tune_mnist.search.command as command

    monkeypatch.setattr(command, "_experiment_exists", lambda experiment: True)
    path = copied_search / "journal" / "a.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    middle = {"bytes": b"\x00\xff\xfe garbage\n", "not_json": b"{not json\n"}
    middle["not_an_object"] = b"[1, 2]\n"
    if how == "no_start":
        path.write_bytes(b"".join(lines[1:]))
    else:
        path.write_bytes(lines[0] + middle[how] + b"".join(lines[1:]))
    before = path.read_bytes()
    code, _, stderr = search_main("--resume", "--name", "copied")
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert str(path) in stderr and "damaged" in stderr and "move it aside" in stderr
    assert path.read_bytes() == before
