"""The package installed from a wheel, away from any checkout: `tune-mnist` finds its search
spaces inside the package and writes its results under the current folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from searchutil import ROOT

from tune_mnist.cli import COMMANDS
from tune_mnist.cli import main as cli

pytestmark = pytest.mark.slow


def test_every_command_answers_help_through_one_door(capsys):
    assert cli(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name in COMMANDS)
    assert cli(["nonsense"]) == 2
    assert "no command 'nonsense'" in capsys.readouterr().err
    for name in COMMANDS:
        with pytest.raises(SystemExit) as done:  # argparse's --help exits 0
            cli([name, "--help"])
        assert done.value.code == 0, name


def test_an_installed_wheel_searches_from_any_folder(tmp_path):
    wheels, site, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(wheels)],
        check=True,
        timeout=300,
    )
    [wheel] = wheels.glob("*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "TUNE_MNIST_RESULTS"}
    env["PYTHONPATH"] = str(site)
    where = subprocess.run(
        [sys.executable, "-c", "import tune_mnist; print(tune_mnist.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
        check=True,
    )
    assert where.stdout.startswith(str(site)), where.stdout  # the wheel's, not the checkout's

    def tune_mnist(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(site / "bin" / "tune-mnist"), *command],
            capture_output=True,
            text=True,
            env=env,
            cwd=work,
            timeout=600,
        )

    done = tune_mnist(
        "search", "--smoke", "--gpus", "0", "--race-runs", "0", "--no-report", "--name", "w"
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (work / "results" / "w" / "trials.parquet").is_file()
    meta = json.loads((work / "results" / "w" / "search.json").read_text())
    assert meta["space"].endswith("search_spaces/smoke.yaml") and str(site) in meta["space"]
    assert meta["commit"] == "tune_mnist 0.1.0"  # no checkout: the wheel's version
    trials = pd.read_parquet(work / "results" / "w" / "trials.parquet")
    trial = trials[trials["status"].isin(["completed", "asha_stopped"])]["trial_id"].iloc[0]
    for command, codes in (
        (["report", "results/w"], (0,)),
        (["retrain", "--results", "results/w", "--trials", trial, "--smoke"], (0, 1)),
    ):
        done = tune_mnist(*command)
        assert done.returncode in codes, command + [done.stdout[-2000:], done.stderr[-2000:]]
    assert (work / "results" / "w" / "report.html").is_file()
    assert (work / "results" / "w" / "confirmations.parquet").is_file()
