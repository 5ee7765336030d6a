"""The Ray Tune function trainable: a thin shell around `tune_mnist.train.loop.train`.

Per epoch it calls `ray.tune.report` with the metrics and a checkpoint (model, optimiser,
schedule, RNG states, epoch), so a paused, restored or retried trial continues at its next
epoch. The parameter budget is checked before anything is trained or moved to a GPU.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray
import torch
from ray import tune

from tune_mnist import rule
from tune_mnist.search import rungs
from tune_mnist.search.journal import EMPTY, Ledger
from tune_mnist.search.ray_door import trial_storage
from tune_mnist.search.space import METRICS, SearchSpace
from tune_mnist.train.data import MNIST
from tune_mnist.train.loop import train
from tune_mnist.train.models import build_from_config, count_params

STATE_FILE = "state.pt"


HISTORY_FILE = "reported.json"  # every report of the trial so far, beside each state
# what reading a checkpoint cut short by a kill, or gone since, raises
UNREADABLE = (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError)


def _load(checkpoint: tune.Checkpoint) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
        history = Path(folder) / HISTORY_FILE
        return state, json.loads(history.read_text()) if history.is_file() else []


def stored_checkpoints(filesystem, trial_path: str) -> list[tune.Checkpoint]:
    """Every checkpoint folder the trial has persisted under its storage path."""
    selector = pyarrow.fs.FileSelector(trial_path, allow_not_found=True)
    return [
        tune.Checkpoint(info.path, filesystem=filesystem)
        for info in filesystem.get_file_info(selector)
        if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("checkpoint_")
    ]


def _in_storage() -> list[tune.Checkpoint]:
    """This trial's checkpoints in the experiment's storage (a folder, NFS or a bucket).
    Ray registers a reported checkpoint only after the report reached the driver and a save
    call to the worker came back: a node lost in between leaves Ray's retry with an older one
    (a retry from scratch), while the files are already in storage."""
    return stored_checkpoints(*trial_storage())


def _epoch_of(checkpoint: tune.Checkpoint) -> int | None:
    """The epoch a checkpoint holds, from its small reports file alone (a bucket's state.pt
    is not downloaded for this); None when that file is missing, empty or unreadable."""
    try:
        with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{HISTORY_FILE}") as f:
            history = json.loads(f.read())
        return int(history[-1]["epoch"])
    except (*UNREADABLE, LookupError, TypeError):
        return None


def restored_state(
    newest: str | None, stored: list[tune.Checkpoint] = ()
) -> tuple[dict[str, Any] | None, list[dict], int]:
    """The newest of Ray's checkpoint, the one the journal names (`newest`) and those found in
    storage (`stored`), the reports made up to it, and the epoch of Ray's own: after a hard
    kill Ray's snapshot can name an older epoch than the last one the trial saved. (Ray
    numbers a resumed trial's checkpoints from its snapshot, so a folder may since hold a
    later epoch than its name says: hence epochs are read, not names, and the history.)
    Each folder's epoch is read from its reports file; only the newest readable state is
    loaded (a torn one: the next newest)."""
    sources = [tune.get_checkpoint, lambda: tune.Checkpoint(newest) if newest else None]
    sources += [lambda c=c: c for c in stored]
    candidates: list[tuple[int, int, tune.Checkpoint, tuple | None]] = []
    seen: set[str] = set()
    ray_epoch = 0
    for order, source in enumerate(sources):
        try:
            checkpoint = source()
        except UNREADABLE:  # gone: the others, or none
            continue
        if checkpoint is None or checkpoint.path in seen:  # the same folder, named twice
            continue
        seen.add(checkpoint.path)
        epoch, loaded = _epoch_of(checkpoint), None
        if epoch is None:  # no readable reports file: the state itself says
            try:
                loaded = _load(checkpoint)
                epoch = int(loaded[0]["epoch"])
            except UNREADABLE:
                continue
        ray_epoch = epoch if order == 0 else ray_epoch
        candidates.append((epoch, order, checkpoint, loaded))
    best = None  # (the epoch its state holds, state, history)
    for epoch, _, checkpoint, loaded in sorted(candidates, key=lambda c: (-c[0], c[1])):
        try:
            state, history = loaded or _load(checkpoint)
        except UNREADABLE:  # torn by a kill, or gone since: the next newest
            continue
        if best is None or int(state["epoch"]) > best[0]:
            best = (int(state["epoch"]), state, history)
        if int(state["epoch"]) == epoch:  # its reports file told the truth: done
            break  # (else a folder overwritten and torn since: look further)
    return (best[1], best[2], ray_epoch) if best else (None, [], ray_epoch)


def placement(device: str) -> dict[str, Any]:
    """Where this trial runs: its device, its share of a GPU (Ray's resources, logical GPUs
    included), the Ray node, and the worker's pid (lets an operator, or a test, find it)."""
    gpus = tune.get_context().get_trial_resources().required_resources.get("GPU", 0)
    return {
        "device": device,
        "gpu_share": float(gpus),
        "node_id": ray.get_runtime_context().get_node_id(),
        "pid": os.getpid(),
    }


def report_epoch(metrics, state, where: dict, start_epoch: int, history: list[dict]) -> None:
    report = {**metrics, "over_budget": False, "start_epoch": start_epoch, **where}
    history.append(report)
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state.state_dict(), Path(folder) / STATE_FILE)
        (Path(folder) / HISTORY_FILE).write_text(json.dumps(history))
        tune.report(report, checkpoint=tune.Checkpoint.from_directory(folder))


def run_trial(
    config: dict[str, Any], data: MNIST, space: SearchSpace, cpus: int, ledger: Ledger = EMPTY
) -> None:
    """Ray calls this once per trial (and again on retry / restore). On a resume, `ledger`
    comes from the search's journal: a trial that had ended returns at once (nothing
    trained, nothing reported), a running one continues from its newest epoch."""
    trial_id = tune.get_context().get_trial_id()
    if trial_id in ledger.ended:
        return
    started = time.perf_counter()
    gpus = tune.get_context().get_trial_resources().required_resources.get("GPU", 0)
    device = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
    train_config = space.train_config(config, device=device, threads=cpus)
    params = count_params(build_from_config(train_config))  # on CPU: nothing trained yet
    if not rule.within(params, space.settings["max_params"]):
        # the worst value of every metric the searcher or the scheduler looks at
        names = {space.settings["metric"]: space.settings["mode"]}
        if space.settings.get("asha_metric"):
            names[space.settings["asha_metric"]] = METRICS[space.settings["asha_metric"]]
        tune.report(
            {
                "epoch": 0,
                "params": params,
                "over_budget": True,
                "start_epoch": 0,  # every report names where its run started (nothing trained)
                "diverged": False,
                **{name: 0.0 if mode == "max" else float("inf") for name, mode in names.items()},
                "trial_s": time.perf_counter() - started,
                **placement(device),
            }
        )
        return
    where = placement(device)
    resume, history, ray_epoch = restored_state(ledger.newest.get(trial_id), _in_storage())
    start_epoch = int(resume["epoch"]) if resume else 0  # > 0: continued from a checkpoint
    known = max(ledger.epochs.get(trial_id, 0), ray_epoch)
    for report in history:  # epochs trained before a kill whose reports never got journaled
        if known < report["epoch"] <= start_epoch:  # (its start_epoch stays its own run's)
            tune.report({**report, "replayed": True})
    n_train = space.settings["train_subset"] or len(data.train_y) - space.settings["val_size"]
    plan = rungs.plan(train_config, space.settings, n_train)
    first = int(resume.get("rung", 0)) if resume else 0
    for rung in plan[first:]:
        # a cohort (settings.seeds_per_trial > 1) reports its members' mean, min, std, lists
        report = partial(report_rung, rung, space.settings, where, start_epoch, history)
        [result, *_] = train(
            rung.config, data, on_epoch=report, resume=_rung_state(resume, rung.index, first)
        )
        if result.status != "completed":  # diverged: no later rung
            return


def _rung_state(resume: dict | None, rung: int, first: int) -> dict | None:
    """The checkpoint as its rung's run saved it (its own epoch count), for the first rung
    trained here; later rungs start fresh."""
    if resume is None or rung != first:
        return None
    return {**resume, "epoch": int(resume.get("rung_epoch", resume["epoch"]))}


class _RungState:
    """A rung's run state, saved with the trial's epoch count and the rung it belongs to."""

    def __init__(self, state, rung: rungs.Rung):
        self.state, self.rung = state, rung

    def state_dict(self) -> dict[str, Any]:
        saved = self.state.state_dict()
        return {
            **saved,
            "epoch": self.rung.offset + saved["epoch"],
            "rung": self.rung.index,
            "rung_epoch": saved["epoch"],
        }


def report_rung(rung, settings, where, start_epoch, history, metrics, state) -> None:
    """One epoch of a rung's run, reported as the trial's: its epoch counted across rungs,
    its fidelity, and the level ASHA reads (tune_mnist.search.rungs)."""
    done = metrics["epoch"] == rung.epochs
    metrics = {
        **metrics,
        "epoch": rung.offset + metrics["epoch"],
        "rung": rung.index,
        "rung_epoch": metrics["epoch"],
        "fidelity": rung.fidelity,
        rungs.LEVEL: rungs.level(settings, rung.index, done),
    }
    report_epoch(metrics, _RungState(state, rung), where, start_epoch, history)
