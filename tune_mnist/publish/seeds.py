"""Training a candidate's seeds: each alone, or fused into one cohort, here or as Ray tasks
side by side; one `SeedRun` per seed, with its weights, curve and node. The confirmation
(retrain), the race and the stash read these."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from tune_mnist.search import ray_door
from tune_mnist.train.config import TrainConfig
from tune_mnist.train.data import MNIST
from tune_mnist.train.loop import print_epoch, train
from tune_mnist.train.state import member_seeds


@dataclass
class SeedRun:
    seed: int
    status: str
    final_test_acc: float
    params: int
    seconds: float
    state_dict: dict[str, Any]
    device: str
    history: list[dict[str, Any]]  # train.py's per-epoch metrics, in order
    cohort: int = 1  # seeds trained together with this one (fused), 1 = alone
    cohort_first: int = 0  # the cohort's first seed (the config's seed that rebuilds it)
    node_id: str = ""  # the Ray node that trained it ("" without Ray)


def _node_id() -> str:
    ray = sys.modules.get("ray")  # never imported without Ray: a plain local run
    return ray.get_runtime_context().get_node_id() if ray and ray.is_initialized() else ""


def train_seed(config: TrainConfig, data: MNIST, verbose: bool = True) -> list[SeedRun]:
    """Train one seed, or a cohort of seeds as one fused network (config.cohort > 1): one
    SeedRun per seed either way."""
    label = f"[{config.arch} seed {config.seed}" + (f"+{config.cohort - 1}" * (config.cohort > 1))

    def show(metrics, state):
        if verbose:
            print(label + "] ", end="")
            print_epoch(metrics, config.epochs)

    if config.device.startswith("cuda") and not torch.cuda.is_available():
        config = config.replace(device="cpu")  # a logical GPU on a node without CUDA
    seeds, results = member_seeds(config), train(config, data, on_epoch=show)
    return [
        SeedRun(
            seed,
            result.status,
            float(result.final.get("test_acc", float("nan"))),
            result.params,
            result.seconds,
            {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()},
            config.device,
            result.history,
            cohort=config.cohort,
            cohort_first=config.seed,
            node_id=_node_id(),
        )
        for seed, result in zip(seeds, results, strict=True)
    ]


def _figure(run: SeedRun) -> str:
    """The run's final accuracy: on test, or on its validation images in a racing worker,
    which has no test set."""
    if math.isfinite(run.final_test_acc):
        return f"test {run.final_test_acc:.2f}%"
    return f"val {run.history[-1].get('val_acc', math.nan):.2f}%"


def units(configs: list[TrainConfig], cohort: bool) -> list[TrainConfig]:
    """What one process trains: each seed alone, or all of a candidate's seeds as a cohort
    (consecutive seeds, as retrain_best.py draws them)."""
    if not cohort or len(configs) == 1:
        return configs
    return [configs[0].replace(cohort=len(configs))]


def train_groups(
    groups: list[list[TrainConfig]],
    data: MNIST,
    parallel: dict | None,
    cohort: bool = False,
    on_run: Callable[[int, SeedRun], None] | None = None,
) -> Iterator[list[SeedRun]]:
    """Yield each group's runs in order. Without `parallel`, one after another here; with it,
    every unit (a seed, or a cohort) is a Ray task submitted up front, and each group is
    yielded when done. `on_run(group, run)` hears of each run as soon as it finishes."""
    on_run = on_run or (lambda group, run: None)
    if not parallel:
        for index, configs in enumerate(groups):
            runs = []
            for unit in units(configs, cohort):
                for run in train_seed(unit, data):
                    on_run(index, run)
                    runs.append(run)
            yield runs
        return
    import ray  # lazy: Ray takes seconds to load, and after start_ray's settings

    task = ray.remote(train_seed).options(**parallel)
    shared = ray.put(data)
    futures = [[task.remote(u, shared) for u in units(configs, cohort)] for configs in groups]
    owner = {f: index for index, group in enumerate(futures) for f in group}
    finished: dict = {}
    for group in futures:
        while not all(f in finished for f in group):  # each run heard of as it ends
            waiting = [f for f in owner if f not in finished]
            ready = ray_door.wait_one(waiting)
            finished[ready] = ray.get(ready)
            for run in finished[ready]:
                print(
                    f"[seed {run.seed}] {run.status}: {_figure(run)} in {run.seconds:.0f}s",
                    flush=True,
                )
                on_run(owner[ready], run)
        yield [run for future in group for run in finished[future]]
