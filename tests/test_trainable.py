"""Which checkpoint a retried trial continues from: the newest epoch any source holds, read
from the files, never from folder names, with torn ones skipped."""

import json
import warnings
from pathlib import Path

import pyarrow.fs
import ray
import torch
from ray import tune

from tune_mnist.search.trainable import (
    HISTORY_FILE,
    STATE_FILE,
    _in_storage,
    _load,
    restored_state,
    stored_checkpoints,
)


def _checkpoint(folder, epoch: int, torn=False, reports=True, state_epoch=None) -> None:
    folder.mkdir(parents=True)
    state = {"epoch": epoch if state_epoch is None else state_epoch, "weights": torch.arange(4.0)}
    torch.save(state, folder / STATE_FILE)
    if reports:  # (checkpoints of older versions had no reports file)
        history = [{"epoch": e} for e in range(1, epoch + 1)]
        (folder / HISTORY_FILE).write_text(json.dumps(history))
    if torn:  # a node died while copying it into storage
        data = (folder / STATE_FILE).read_bytes()
        (folder / STATE_FILE).write_bytes(data[: len(data) // 3])


def test_a_retry_continues_from_the_newest_readable_checkpoint_in_storage(tmp_path):
    trial = tmp_path / "run_trial_abc"
    _checkpoint(trial / "checkpoint_000001", epoch=1)  # renumbered after a restore: names lie
    _checkpoint(trial / "checkpoint_000000", epoch=3)
    _checkpoint(trial / "checkpoint_000002", epoch=4, torn=True)
    (trial / "not_a_checkpoint").mkdir()
    stored = stored_checkpoints(pyarrow.fs.LocalFileSystem(), str(trial))
    assert len(stored) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tune.get_checkpoint outside a trial: None
        state, history, ray_epoch = restored_state(str(trial / "checkpoint_000001"), stored)
        assert (
            restored_state(None, stored_checkpoints(pyarrow.fs.LocalFileSystem(), "/nope"))[0]
            is None
        )
    assert state["epoch"] == 3 and [h["epoch"] for h in history] == [1, 2, 3]
    assert ray_epoch == 0  # Ray itself knew of none


def _restore_counting_loads(monkeypatch, newest, trial):
    import tune_mnist.search.trainable as trainable

    loads = []
    real = trainable._load
    monkeypatch.setattr(trainable, "_load", lambda c: loads.append(c.path) or real(c))
    stored = stored_checkpoints(pyarrow.fs.LocalFileSystem(), str(trial))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tune.get_checkpoint outside a trial: None
        return restored_state(newest, stored), loads


def test_only_the_newest_state_is_loaded_each_folder_once(tmp_path, monkeypatch):
    trial = tmp_path / "run_trial_abc"
    for epoch in range(1, 6):
        _checkpoint(trial / f"checkpoint_00000{epoch}", epoch=epoch)
    newest = str(trial / "checkpoint_000005")  # the journal names a folder storage lists too
    (state, history, _), loads = _restore_counting_loads(monkeypatch, newest, trial)
    assert state["epoch"] == 5 and len(history) == 5 and loads == [newest]


def test_a_folder_without_reports_is_ranked_by_its_state(tmp_path, monkeypatch):
    trial = tmp_path / "run_trial_abc"
    _checkpoint(trial / "checkpoint_000000", epoch=3)
    _checkpoint(trial / "checkpoint_000001", epoch=6, reports=False)
    (state, history, _), loads = _restore_counting_loads(monkeypatch, None, trial)
    assert state["epoch"] == 6 and history == [] and len(loads) == 1


def test_reports_that_overstate_the_state_do_not_win(tmp_path, monkeypatch):
    trial = tmp_path / "run_trial_abc"
    _checkpoint(trial / "checkpoint_000000", epoch=5, state_epoch=2)  # overwritten, torn
    _checkpoint(trial / "checkpoint_000001", epoch=4)
    (state, history, _), loads = _restore_counting_loads(monkeypatch, None, trial)
    assert state["epoch"] == 4 and len(history) == 4 and len(loads) == 2


def _two_epochs(config):
    import tempfile

    for epoch in (1, 2):
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"epoch": epoch}, Path(folder) / STATE_FILE)
            (Path(folder) / HISTORY_FILE).write_text("[]")
            tune.report({"epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(folder))
    stored = [_load(checkpoint)[0]["epoch"] for checkpoint in _in_storage()]  # in a real trial
    tune.report({"epoch": 3, "stored": sorted(stored)})


def test_inside_a_ray_trial_the_storage_lookup_finds_what_the_trial_persisted(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # workers import this file
    ray.init(num_cpus=1, include_dashboard=False, address="local")
    try:
        tuner = tune.Tuner(
            _two_epochs,
            run_config=tune.RunConfig(storage_path=str(tmp_path), name="x", verbose=0),
        )
        result = tuner.fit()[0]
    finally:
        ray.shutdown()
    assert result.error is None, result.error
    assert result.metrics["stored"] == [1, 2]
