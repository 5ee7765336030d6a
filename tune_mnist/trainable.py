"""The Ray Tune function trainable: a thin shell around `tune_mnist.engine.train`.

Per epoch it calls `ray.tune.report` with the metrics and a checkpoint (model, optimiser,
schedule, RNG states, epoch), so a paused, restored or retried trial continues at its next
epoch. The parameter budget is checked before anything is trained or moved to a GPU.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune

from tune_mnist.cohort import train_cohort
from tune_mnist.data import MNIST
from tune_mnist.engine import train
from tune_mnist.models import build_from_config, count_params
from tune_mnist.space import METRICS, SearchSpace

STATE_FILE = "state.pt"
# Tests only: "N" raises at epoch N of every trial; "N:once" only in a run that started from
# scratch, so a retry from the checkpoint goes through.
FAIL_ENV = "TUNE_MNIST_FAIL_AT_EPOCH"


def _load(checkpoint: tune.Checkpoint) -> dict[str, Any]:
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)


def restored_state(newest: str | None) -> dict[str, Any] | None:
    """The newest of Ray's checkpoint and the one the journal names (`newest`): after a hard
    kill Ray's snapshot can name an older epoch than the last one the trial saved."""
    states = []
    for source in (tune.get_checkpoint, lambda: tune.Checkpoint(newest) if newest else None):
        try:
            checkpoint = source()
            if checkpoint is not None:
                states.append(_load(checkpoint))
        except (OSError, RuntimeError, ValueError):  # gone or unreadable: the other, or none
            continue
    return max(states, key=lambda state: int(state["epoch"]), default=None)


def report_epoch(metrics: dict[str, Any], state, device: str, start_epoch: int) -> None:
    fail_at, _, once = os.environ.get(FAIL_ENV, "").partition(":")
    if fail_at and int(fail_at) == metrics["epoch"] and not (once and start_epoch > 0):
        raise RuntimeError(f"injected failure at epoch {metrics['epoch']} ({FAIL_ENV})")
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state.state_dict(), Path(folder) / STATE_FILE)
        checkpoint = tune.Checkpoint.from_directory(folder)
        extra = {"over_budget": False, "device": device, "start_epoch": start_epoch}
        # the worker's pid lets an operator (or a test) find the process of a trial
        tune.report({**metrics, **extra, "pid": os.getpid()}, checkpoint=checkpoint)


def run_trial(
    config: dict[str, Any],
    data: MNIST,
    space: SearchSpace,
    cpus: int,
    ended: frozenset[str] = frozenset(),
    newest: dict[str, str] | None = None,
) -> None:
    """Ray calls this once per trial (and again on retry / restore). On a resume, `ended`
    and `newest` come from the search's journal: a trial that had ended returns at once
    (nothing trained, nothing reported), a running one continues from its newest epoch."""
    trial_id = tune.get_context().get_trial_id()
    if trial_id in ended:
        return
    started = time.perf_counter()
    gpus = tune.get_context().get_trial_resources().required_resources.get("GPU", 0)
    device = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
    train_config = space.train_config(config, device=device, threads=cpus)
    params = count_params(build_from_config(train_config))  # on CPU: nothing trained yet
    if params > space.settings["max_params"]:
        # the worst value of every metric the searcher or the scheduler looks at
        names = {space.settings["metric"]: space.settings["mode"]}
        if space.settings.get("asha_metric"):
            names[space.settings["asha_metric"]] = METRICS[space.settings["asha_metric"]]
        tune.report(
            {
                "epoch": 0,
                "params": params,
                "over_budget": True,
                "diverged": False,
                **{name: 0.0 if mode == "max" else float("inf") for name, mode in names.items()},
                "trial_s": time.perf_counter() - started,
                "device": device,
            }
        )
        return
    resume = restored_state((newest or {}).get(trial_id))
    start_epoch = int(resume["epoch"]) if resume else 0  # > 0: continued from a checkpoint
    # a cohort (settings.seeds_per_trial > 1) reports its members' mean, min, std and lists
    run = train_cohort if train_config.cohort > 1 else train
    run(
        train_config,
        data,
        on_epoch=lambda metrics, state: report_epoch(metrics, state, device, start_epoch),
        resume=resume,
    )
