"""`python scripts/search.py --confirm N`: search, race, confirmation and leaderboard row in
one command, and a rerun that trains nothing it already has."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pandas as pd
import pytest
from searchutil import env, search_command, space_file

pytestmark = pytest.mark.slow


def chain(results, *args):
    command = [a for a in search_command(*args)]
    at = command.index("--race-runs")  # the helper's default (no race) is replaced here
    del command[at : at + 2]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=900, env=env(results), cwd=results.parent
    )


def race_runs(folder):
    path = folder / "race_runs.parquet"
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def test_one_command_searches_races_confirms_and_publishes_then_resumes_for_free(tmp_path):
    # one epoch: every trial completes (no rung to stop at), so the race has a field; the
    # confirmation trains the pick on all 60,000 images, as published figures are
    space = space_file(tmp_path, epochs=1, samples=3, images=2000)
    results = tmp_path / "results"
    flags = ("--race-runs", "2", "--confirm", "2", "--no-report", "--warm-stages", "0")
    done = chain(results, "--space", str(space), "--name", "c", *flags)
    out = done.stdout + done.stderr
    folder = results / "c"
    race = pd.read_parquet(folder / "race.parquet")
    assert len(race) == 3 and (race["status"] == "winner").sum() <= 1
    runs = race_runs(folder)  # none when the field is decided at once (the rest far behind)
    assert len(runs) <= 2 and set(runs.get("trial_id", [])) <= set(race["trial_id"])
    alive = race[race["status"] != "dropped"]
    own = alive[alive["val_images"] == "own"]  # a run on its own images first: same level
    likeliest = (own if len(own) else alive).sort_values(["pass_chance", "params"])
    likeliest = likeliest[likeliest["pass_chance"] == likeliest["pass_chance"].max()]
    won = race[race["status"] == "winner"]
    pick = (won if len(won) else likeliest).iloc[0]["trial_id"]  # ties: the smaller
    confirmed = pd.read_parquet(folder / "confirmations.parquet")
    assert set(confirmed["trial_id"]) == {pick} and confirmed["seed"].nunique() == 2
    assert (confirmed["test_subset"] == 0).all()  # the whole test set, for the pick only
    passed = bool(confirmed["passed"].all())
    assert done.returncode == (0 if passed else 1), out[-3000:]
    assert (folder / "confirmed" / pick).is_dir()
    board = pd.read_parquet(results / "leaderboard.parquet")
    assert ((board["experiment"] == "c") & (board["trial_id"] == pick)).sum() == 1, board
    # its cost, read back from the tables it wrote (one thread per run)
    tables = [pd.read_parquet(folder / "trials.parquet"), runs, confirmed]
    trained = sum(float(t["train_s"].sum()) if len(t) else 0.0 for t in tables) / 60
    assert f"\ncost: {trained:.0f} core-minutes of training" in done.stdout, out[-3000:]

    again = chain(results, "--resume", "--name", "c", *flags)
    assert again.returncode == done.returncode, again.stdout[-2000:] + again.stderr[-2000:]
    assert "already confirmed" in again.stdout
    assert again.stdout.count("progress: ") <= 1  # nothing ran: no line a restored trial
    resumed = json.loads((folder / "resume.json").read_text())
    assert resumed["space"] == "c/space.yaml"  # the copy it resumed with, no machine's folder
    assert len(race_runs(folder)) == len(runs)  # nothing raced again
    assert len(pd.read_parquet(folder / "confirmations.parquet")) == len(confirmed)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_race_stops_the_chain_there(tmp_path, signum):
    """Ray Tune's Ctrl-C handler outlives its search: a signal in the race that follows must
    still stop the chain (128 + the signal, one hint), before any test figure."""
    space = space_file(tmp_path, epochs=1, samples=3, images=2000)
    results = tmp_path / "results"
    flags = ("--race-runs", "9", "--confirm", "2", "--no-report", "--warm-stages", "0")
    command = search_command("--space", str(space), "--name", "c", *flags)
    at = command.index("--race-runs")  # the helper's default (no race) is replaced here
    del command[at : at + 2]
    log = tmp_path / "out.txt"
    with (
        log.open("w") as out,
        subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            env=env(results),
            # as from a terminal: a job a script started in the background ignores SIGINT
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        ) as proc,
    ):
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            if "race round: " in log.read_text():
                proc.send_signal(signum)
                break
            time.sleep(0.05)
        code, err = proc.wait(timeout=300), proc.stderr.read()
    assert "race round: " in log.read_text(), err[-3000:]
    assert code == 128 + signum, log.read_text()[-2000:] + err[-2000:]
    assert "interrupted" in err and "--resume --name c" in err.strip().splitlines()[-1], err
    assert not (results / "c" / "confirmations.parquet").exists()  # no test figure read


def test_bad_chain_flags_are_refused_before_anything_runs(tmp_path):
    results = tmp_path / "results"
    for flags in (
        ("--confirm", "-1"),
        ("--confirm", "21"),
        ("--race-runs", "-2"),
        ("--race-top", "1"),
        ("--race-top", "all"),
        ("--warm-stages", "-1"),
        ("--warm-stages", "11"),
        ("--warm-below", "1.5"),
        ("--warm-below", "nan"),
        ("--warm-samples", "0"),
    ):
        done = chain(results, "--name", "x", *flags)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().startswith("error:") and len(done.stderr.splitlines()) == 1
    assert not (results / "x").exists()


def test_the_confirmations_eta_reads_the_picks_race_runs_before_its_search_run(tmp_path):
    """A resumed full run (or one on a busy machine) took three times a race run: the
    newest runs of the pick's recipe set the confirmation's estimate."""
    from types import SimpleNamespace

    from tune_mnist.chain import _confirm_eta

    trials = pd.DataFrame(
        {
            "trial_id": ["p", "q"],
            "status": "completed",
            "params": 3904,
            "full_fidelity_s": [440, 150],
        }
    )
    trials.to_parquet(tmp_path / "trials.parquet")
    args = SimpleNamespace(gpus=0, confirm=2, smoke=False)
    assert "each about 480 s (its full run" in _confirm_eta(tmp_path, "p", args)
    runs = pd.DataFrame(
        {
            "trial_id": ["p", "p", "p", "q"],
            "seed": [1, 2, 3, 1],
            "val_acc": 99.4,
            "train_s": [140, 150, 170, 9],
        }
    )
    runs.to_parquet(tmp_path / "race_runs.parquet")
    line = _confirm_eta(tmp_path, "p", args)
    assert "each about 164 s (its race runs" in line, line  # the median, x 60/55


def test_the_race_gets_the_search_flags_contenders_and_budget(tmp_path):
    from tune_mnist.chain import _race_argv
    from tune_mnist.publish import race_command
    from tune_mnist.search.flags import parse_args

    folder = tmp_path / "c"
    argv = _race_argv(parse_args(["--name", "c", "--race-top", "3", "--race-runs", "7"]), folder)
    raced = race_command.parse_args(argv)
    assert (raced.top, raced.runs, raced.val_images) == (3, 7, "own")
    assert race_command.parse_args(_race_argv(parse_args(["--name", "c"]), folder)).top == 8
