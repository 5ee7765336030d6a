"""The viewers users already have, opened on a real (smoke) search: optuna-dashboard's
server on its Optuna study file, and TensorBoard's own reader on Ray Tune's event files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from tune_mnist.search.optuna_journal import FILE, STATES

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def dashboard(smoke_search):
    """optuna-dashboard serving the smoke search's study file on 127.0.0.1."""
    folder, _ = smoke_search
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "optuna-dashboard"), str(folder / FILE)]
        + ["--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while True:  # wait on the server answering, not on a fixed sleep
        try:
            get(f"{base}/studies")
            break
        except OSError:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "optuna-dashboard did not answer in 120 s"
            time.sleep(0.2)
    try:
        yield folder, base
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_optuna_dashboard_shows_the_search_as_its_tables_do(dashboard):
    folder, base = dashboard
    [summary] = get(f"{base}/studies")["study_summaries"]
    study = get(f"{base}/studies/{summary['study_id']}?after=0")
    trials = pd.read_parquet(folder / "trials.parquet").set_index("trial_id")
    epochs = pd.read_parquet(folder / "epochs.parquet")
    shown = {}
    for trial in study["trials"]:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        shown[attrs["trial_id"]] = (trial, attrs)
    assert set(shown) == set(trials.index)  # each trial once: no duplicate, no orphan
    for trial_id, (trial, attrs) in shown.items():
        status = trials.loc[trial_id, "status"]
        assert attrs["status"] == status
        assert trial["state"].upper() == {"COMPLETE": "COMPLETE", "PRUNED": "PRUNED"}.get(
            STATES.get(status), "FAIL"
        )
    trial_id = trials.index[trials["status"] == "completed"][0]
    curve = {p["step"]: p["value"] for p in shown[trial_id][0]["intermediate_values"]}
    mine = epochs[epochs["trial_id"] == trial_id].set_index("epoch")["val_acc"]
    assert curve == pytest.approx(mine.to_dict())


def test_tensorboard_reads_each_trials_curve_from_rays_event_files(smoke_search):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    folder, _ = smoke_search
    experiment = folder / "tensorboard"  # what `tensorboard --logdir results/<name>` walks
    assert (
        experiment.is_symlink()
        and experiment.resolve() == (folder.parent / ".ray" / folder.name).resolve()
    )
    runs = EventMultiplexer().AddRunsFromDirectory(str(folder)).Runs()
    assert len(runs) == len(pd.read_parquet(folder / "trials.parquet"))  # a run per trial
    epochs = pd.read_parquet(folder / "epochs.parquet")
    trial_id = epochs.groupby("trial_id")["epoch"].max().idxmax()
    [trial_dir] = experiment.glob(f"*{trial_id}*")
    values = []
    for events in sorted(trial_dir.glob("events.out.tfevents*")):
        reader = EventAccumulator(str(events))
        reader.Reload()
        if "ray/tune/val_acc" in reader.Tags()["scalars"]:
            values += [e.value for e in reader.Scalars("ray/tune/val_acc")]
    mine = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")["val_acc"]
    assert values == pytest.approx(list(mine))


@pytest.mark.parametrize("keep_journal", [False, True])
def test_a_search_made_before_the_study_file_gets_one_from_its_tables(tmp_path, keep_journal):
    """A committed search (its journal is not committed) or an older one: `report` builds
    its study file from the journal, else from the tables; once each, whatever reruns."""
    import shutil

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from searchutil import ROOT

    from tune_mnist.search.optuna_journal import rebuild

    source = ROOT / "results" / "campaign3-4k-narrow"
    folder = tmp_path / source.name
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.png", "*.html", FILE))
    if not keep_journal:
        shutil.rmtree(folder / "journal", ignore_errors=True)
    for _ in range(2):  # a second rebuild adds nothing
        path = rebuild(folder)
    study = optuna.load_study(
        study_name=folder.name, storage=JournalStorage(JournalFileBackend(str(path)))
    )
    trials = pd.read_parquet(folder / "trials.parquet").set_index("trial_id")
    shown = {t.user_attrs["trial_id"]: t for t in study.trials}
    assert sorted(shown) == sorted(trials.index)
    for trial_id, trial in shown.items():
        assert trial.user_attrs["status"] == trials.loc[trial_id, "status"]
        assert trial.state.name == STATES[trials.loc[trial_id, "status"]]
    assert study.user_attrs["confirmed_test_acc"]  # its confirmations, as the study's


def test_the_dashboard_picture_script_serves_a_real_search(smoke_search):
    folder, _ = smoke_search
    script = Path(__file__).parent.parent / "scripts" / "dashboard_shot.py"
    done = subprocess.run(
        [sys.executable, str(script), "--results", str(folder), "--smoke"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )
    assert done.returncode == 0 and f"study '{folder.name}' served" in done.stdout, done.stderr
    missing = subprocess.run(
        [sys.executable, str(script), "--results", str(folder.parent / "none")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
