"""The chain's warm stages: a race pick unlikely to pass sends the chain on to a search
warm-started from the one before; the likeliest pick of all the races is confirmed."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from searchutil import env, search_command, space_file
from test_chain import chain, race_runs

from tune_mnist import stages
from tune_mnist.search.plan import UsageError
from tune_mnist.tables import TableError


def _record(folder: Path, **meta) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "search.json").write_text(json.dumps({"settings": {}, **meta}))
    return folder


def test_a_stage_runs_with_the_seed_its_record_or_command_line_gives(tmp_path):
    assert stages.sampler_seed(_record(tmp_path / "a", sampler_seed=7, argv=["--seed", "3"])) == 7
    assert stages.sampler_seed(_record(tmp_path / "b", argv=["s.py", "--sampler-seed", "6"])) == 6
    assert stages.sampler_seed(_record(tmp_path / "c", argv=["s.py", "--seed=5"])) == 5
    assert stages.sampler_seed(_record(tmp_path / "d", argv=["s.py", "--name", "d"])) == 0
    (tmp_path / "d" / "search.json").write_text("{")  # damaged: one line names the file
    with pytest.raises(TableError, match="search.json: unreadable"):
        stages.sampler_seed(tmp_path / "d")


def test_the_likeliest_pick_wins_and_the_earlier_stage_on_a_tie(tmp_path):
    a, b, c = (stages.Stage(tmp_path / n, n, p) for n, p in (("a", 0.2), ("b", 0.2), ("c", 0.1)))
    assert stages.likeliest([a, b, c]) is a
    d = stages.Stage(tmp_path / "d", "d", 0.3)
    assert stages.likeliest([a, d, c]) is d
    assert stages.likeliest([stages.Stage(tmp_path / "e", None, 0.0), c]) is c  # one raced
    table = stages.show([a, d], d)
    assert "d" in table.splitlines()[-1] and "<- confirmed" in table.splitlines()[-1]


def test_a_folder_of_that_name_from_another_search_is_refused(tmp_path):
    folder = _record(tmp_path / "x-w1", warm_start={"from": "results/other"})
    with pytest.raises(UsageError, match="not a warm stage of x"):
        stages._check_source(folder, tmp_path / "x")
    stages._check_source(
        _record(tmp_path / "y-w1", warm_start={"from": "results/x"}), tmp_path / "x"
    )


def test_a_stage_is_given_the_devices_the_chain_was(tmp_path):
    args = SimpleNamespace(
        gpus=0,
        trials_per_gpu=4,
        cpus_per_trial=2,
        max_failures=1,
        storage=None,
        address=None,
        data_dir="/d",
        smoke=False,
        no_report=True,
    )
    flags = stages.device_flags(args)
    assert flags[:2] == ["--gpus", "0"] and "--storage" not in flags and "--smoke" not in flags
    assert flags[flags.index("--threads") + 1] == "2" and flags[-1] == "--no-report"
    assert flags[flags.index("--data-dir") + 1] == "/d"


def _killed_in_its_warm_stage(results: Path, *args: str) -> tuple[int | None, str]:
    """Run the chain and SIGTERM it once its warm stage's search has begun (None: it ended
    first); its exit status and stderr."""
    command = [a for a in search_command(*args)]
    at = command.index("--race-runs")  # the helper's default (no race) is replaced here
    del command[at : at + 2]
    with subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env(results),
        cwd=results.parent,
    ) as chain_:
        deadline = time.monotonic() + 600
        while chain_.poll() is None and time.monotonic() < deadline:
            if (results / "c-w1" / "search.json").exists():
                chain_.send_signal(signal.SIGTERM)
                return chain_.wait(timeout=300), chain_.stderr.read()
            time.sleep(0.05)
        return None, chain_.communicate(timeout=300)[1]


@pytest.mark.slow
def test_a_hopeless_pick_sends_the_chain_on_warm_and_a_kill_there_resumes(tmp_path):
    # one epoch on 2,000 images: every pick reads far under 99.4%, so the chain searches on;
    # --smoke keeps the confirmation to seconds (one epoch, 1,000 test images, unpublished)
    space = space_file(tmp_path, epochs=1, samples=2, images=2000)
    results = tmp_path / "results"
    flags = ("--race-runs", "1", "--confirm", "1", "--smoke", "--no-report")
    flags += ("--warm-stages", "1", "--warm-samples", "1")
    code, err = _killed_in_its_warm_stage(
        results, "--space", str(space), "--name", "c", "--sampler-seed", "4", *flags
    )
    if code is not None:  # stopped in its warm stage, whatever it was doing: 143, one line
        assert code == 143, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert "--resume --name c" in last and "continue with: " in last, err[-3000:]
    done = chain(results, "--resume", "--name", "c", *flags)
    out = done.stdout + done.stderr
    assert done.returncode in (0, 1), out[-3000:]
    first, stage = results / "c", results / "c-w1"
    meta = json.loads((stage / "search.json").read_text())
    assert meta["warm_start"]["from"] == "results/c" and meta["sampler_seed"] == 5
    argv = meta["argv"]  # its own command line, naming no machine's folder
    assert argv[argv.index("--warm-start") + 1] == "results/c"
    assert argv[argv.index("--space") + 1] == "results/c/space.yaml"
    assert meta["settings"]["samples"] == 1 and len(pd.read_parquet(stage / "trials.parquet")) == 1
    picks = {f: pd.read_parquet(f / "race.parquet") for f in (first, stage)}
    assert "the chain's races: the likeliest pick is confirmed" in done.stdout, out[-3000:]
    confirmed = [f for f in (first, stage) if (f / "confirmations.parquet").exists()]
    assert len(confirmed) == 1, out[-3000:]  # one pick confirmed, in its own search's folder
    chosen = pd.read_parquet(confirmed[0] / "confirmations.parquet")["trial_id"].unique()
    assert set(chosen) <= set(picks[confirmed[0]]["trial_id"])
    later = ", the chain's later warm stages" in done.stdout
    warm = ", the search it warm-started from" in done.stdout
    assert (later, warm) == ((True, False) if confirmed[0] == first else (False, True))

    trained = {f: len(race_runs(f)) for f in (first, stage)}
    again = chain(results, "--resume", "--name", "c", *flags)
    assert again.returncode == done.returncode, again.stdout[-2000:] + again.stderr[-2000:]
    assert "already confirmed" in again.stdout
    assert json.loads((stage / "resume.json").read_text())["name"] == "c-w1"  # resumed, not new
    assert {f: len(race_runs(f)) for f in (first, stage)} == trained
    assert len(pd.read_parquet(stage / "trials.parquet")) == 1
