"""A run's state: K >= 1 seeds of one config as one fused network, its optimiser, schedule and
random streams. A single run is a cohort of one; `tune_mnist.train.loop` trains any K the same way.

Member k starts from exactly the weights a single run with seed `seed + k` starts from
(`init_member`, pinned by tests/pinned.json) and draws its batches and warps from its own
generator, seeded the same way. The members are fused (`fuse.py`) into one network trained
with one optimiser over one loss, the sum of the members' mean losses, so each member's
gradient and AdamW step are its own. `state_dict()` holds everything needed to continue (the
model, optimiser, schedule, every generator and RNG), so a checkpointed run resumes at its next
epoch with the same batches it would have seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from tune_mnist.train.augment import AugmentSpec
from tune_mnist.train.config import ConfigError, TrainConfig, schedule_problem
from tune_mnist.train.data import MNIST, on_device
from tune_mnist.train.fuse import Fused, fuse
from tune_mnist.train.models import build_from_config
from tune_mnist.train.steps import optimizer_options


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def member_seeds(config: TrainConfig) -> list[int]:
    """The seeds a run trains: `seed .. seed + cohort - 1` (one for a single run)."""
    return list(range(config.seed, config.seed + config.cohort))


@dataclass
class RunState:
    """What a run needs to continue from the end of epoch `epoch` (1-based; 0 = not started)."""

    model: Fused
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.OneCycleLR
    ema: AveragedModel | None = None  # moving average of model (config.ema_decay > 0)
    generators: list[torch.Generator] = field(default_factory=list)  # one per member
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def eval_model(self) -> Fused:
        """The weights that are evaluated, reported and saved: the average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only: loadable with torch.load(weights_only=True)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generators": [g.get_state() for g in self.generators],
            "torch_rng": torch.get_rng_state(),
            "member_rng": [rng.clone() for rng in self.model.member_rng or []],
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": self.epoch,
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for generator, saved in zip(self.generators, state["generators"], strict=True):
            generator.set_state(saved)
        torch.set_rng_state(state["torch_rng"])
        if state.get("member_rng"):  # empty unless the members run one by one (fuse.py)
            self.model.member_rng = [rng.clone() for rng in state["member_rng"]]
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])


@dataclass
class TrainResult:
    status: str  # "completed", "stopped" (by the callback) or "diverged"
    history: list[dict[str, Any]]
    model: nn.Module  # the member's own (unfused) network, the weights that were evaluated
    params: int
    seconds: float

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def steps_per_epoch(config: TrainConfig, n_train: int) -> int:
    return math.ceil(n_train / config.batch_size)


def init_member(config: TrainConfig, device: torch.device) -> tuple[nn.Module, torch.Generator]:
    """Seed `config.seed`'s initial network and its batch generator (what the pins hold)."""
    torch.manual_seed(config.seed)  # model init and dropout masks
    model = layout(build_from_config(config).to(device), config)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)  # batch order and augmentation
    return model, generator


def make_state(config: TrainConfig, device: torch.device, n_train: int) -> RunState:
    """The run's state before its first epoch: its `config.cohort` members fused."""
    models, generators, rngs = [], [], []
    for seed in member_seeds(config):
        model, generator = init_member(config.replace(seed=seed, cohort=1), device)
        models.append(model)
        generators.append(generator)
        rngs.append(torch.get_rng_state())  # where this seed's run draws its dropout from
    fused = layout(fuse(models).to(device), config)
    if len(models) == 1:  # building the fused layers drew from the RNG: the dropout masks
        torch.set_rng_state(rngs[0])  # of a cohort of one are its seed's own
    else:
        fused.member_rng = rngs  # used on a CPU, where the members run one by one (fuse.py)
    optimizer, scheduler, ema = optimisation(config, fused, n_train)
    return RunState(fused, optimizer, scheduler, ema, generators=generators)


def layout(model: nn.Module, config: TrainConfig) -> nn.Module:
    """The model in the config's memory format, before any optimiser holds its parameters.
    The weights' values are unchanged (the pins hold); only their strides move, and with them
    the order in which the convolutions sum, so the runs differ in float rounding."""
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def optimisation(config: TrainConfig, model: nn.Module, n_train: int):
    """(AdamW or SGD, its one-cycle schedule stepped per batch, the weight average or None)."""
    if config.schedule == "onecycle":
        problem = schedule_problem(config.epochs, config.batch_size, config.pct_start, n_train)
        if problem:
            raise ConfigError(problem)
    # CUDA: fused or capturable kernels (steps.py); CPU: torch's defaults, as pinned
    options = optimizer_options(config, next(model.parameters()).device)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=config.max_lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            **options,
        )
    else:
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.max_lr, weight_decay=config.weight_decay, **options
        )
    if config.schedule == "wsd":
        return optimizer, wsd(optimizer, config, n_train), _averager(config, model)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.max_lr,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch(config, n_train),
        pct_start=config.pct_start,
        # AdamW: beta1 cycles 0.95 -> 0.85 -> 0.95 (torch's default, kept: the pins). SGD:
        # the cycle would overwrite `momentum` (0 included), so it is held as configured
        cycle_momentum=config.optimizer != "sgd",
    )
    return optimizer, scheduler, _averager(config, model)


def _averager(config: TrainConfig, model: nn.Module) -> AveragedModel | None:
    if config.ema_decay <= 0:
        return None
    # use_buffers: BatchNorm's running statistics are averaged along with the weights, so
    # the averaged weights are evaluated with statistics that match them
    averager = get_ema_multi_avg_fn(config.ema_decay)
    return AveragedModel(model, multi_avg_fn=averager, use_buffers=True)


WSD_START = 1 / 25  # the warm-up's first rate as a share of the peak (one-cycle's default)


def wsd_decay_epochs(epochs: int) -> int:
    """Epochs of a warmup-stable-decay run's cool-down: its last fifth, at least one."""
    return max(1, round(epochs / 5))


def wsd(optimizer, config: TrainConfig, n_train: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup-stable-decay (Hägele et al. 2024): one epoch of linear warm-up, the peak held,
    a 1 - sqrt cool-down to zero over `wsd_decay_epochs`. Until its cool-down, the rate at a
    step does not depend on the run's length: any branch shares the trunk's epochs."""
    per_epoch = steps_per_epoch(config, n_train)
    warm = per_epoch
    decay_from = (config.epochs - wsd_decay_epochs(config.epochs)) * per_epoch
    total = config.epochs * per_epoch

    def factor(step: int) -> float:
        if step < warm:
            return WSD_START + (1 - WSD_START) * step / warm
        if step < decay_from:
            return 1.0
        return 1 - math.sqrt(min(1.0, (step - decay_from) / max(1, total - decay_from)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def prepare_run(config: TrainConfig, data: MNIST) -> tuple[torch.device, MNIST, AugmentSpec]:
    """Threads, device, the validation split and subsets, and the data on the device."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    data = data.holdout(config.val_size, config.val_split).subset(
        config.train_subset, config.test_subset
    )
    return device, on_device(data, device), AugmentSpec.from_config(config)
