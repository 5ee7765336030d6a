"""The training core: AdamW + OneCycleLR over device-resident MNIST. No Ray, no CLI in here
(`python -m tune_mnist.train` is the command line; `tune_mnist.cohort` trains seeds fused).

`train(config, data, on_epoch)` runs a whole training; `on_epoch(metrics, state)` sees each
epoch's metrics (the Ray trainable reports from it) and may return True to stop the run.
`state` holds everything needed to continue (model, optimiser, schedule, RNGs), so a
checkpointed run resumes at its next epoch with the same batches it would have seen.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from tune_mnist.augment import AugmentSpec, apply, augment, concat, draw
from tune_mnist.config import ConfigError, TrainConfig, schedule_problem
from tune_mnist.data import MNIST, batches, normalize, on_device
from tune_mnist.models import build_from_config, count_params
from tune_mnist.steps import Steps, optimizer_options

EVAL_BATCH = 5000  # images per forward pass at evaluation (no gradients, so big is fine)
# A mean training loss above this has exploded (chance level is ln 10 = 2.3): BatchNorm keeps
# activations finite even when the weights blow up, so waiting for NaN alone can take forever.
DIVERGED_LOSS = 100.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class RunState:
    """What a run needs to continue from the end of epoch `epoch` (1-based; 0 = not started)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.OneCycleLR
    ema: AveragedModel | None = None  # moving average of model (config.ema_decay > 0)
    generator: torch.Generator | None = None
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are evaluated, reported and saved: the average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only: loadable with torch.load(weights_only=True)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": self.epoch,
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])


@dataclass
class TrainResult:
    status: str  # "completed", "stopped" (by the callback) or "diverged"
    history: list[dict[str, Any]]
    model: nn.Module
    params: int
    seconds: float

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def steps_per_epoch(config: TrainConfig, n_train: int) -> int:
    return math.ceil(n_train / config.batch_size)


def make_state(config: TrainConfig, device: torch.device, n_train: int) -> RunState:
    torch.manual_seed(config.seed)  # model init and dropout masks
    model = layout(build_from_config(config).to(device), config)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)  # batch order and augmentation
    return RunState(model, *optimisation(config, model, n_train), generator=generator)


def layout(model: nn.Module, config: TrainConfig) -> nn.Module:
    """The model in the config's memory format, before any optimiser holds its parameters.
    The weights' values are unchanged (the pins hold); only their strides move, and with them
    the order in which the convolutions sum, so the runs differ in float rounding."""
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def optimisation(config: TrainConfig, model: nn.Module, n_train: int):
    """(AdamW or SGD, its one-cycle schedule stepped per batch, the weight average or None)."""
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
    ema = None
    if config.ema_decay > 0:
        # use_buffers: BatchNorm's running statistics are averaged along with the weights,
        # so the averaged weights are evaluated with statistics that match them
        averager = get_ema_multi_avg_fn(config.ema_decay)
        ema = AveragedModel(model, multi_avg_fn=averager, use_buffers=True)
    return optimizer, scheduler, ema


def training_batches(
    config: TrainConfig, data: MNIST, generator: torch.Generator, spec, whole_epoch=False
):
    """One epoch's (index, augmented [0, 1] images, labels), in the order `generator` draws:
    the batch order first (one randperm), then each batch's warp. The pinned-reproduction
    tests read the same stream, so a change here shows up there. `whole_epoch` (the GPU
    path) draws the same numbers batch by batch, then warps all the epoch's images at once:
    the same images, without a dozen small kernels in every step."""
    order = batches(len(data.train_y), config.batch_size, generator, data.device)
    if whole_epoch:
        yield from _whole_epoch(order, data, generator, spec)
        return
    for index in order:
        images = data.train_x[index].unsqueeze(1).float() / 255.0
        yield index, augment(images, spec, generator), data.train_y[index]


WARP_CHUNK = 16384  # images warped per call on the whole-epoch path (bounds its memory)


def _whole_epoch(order, data: MNIST, generator: torch.Generator, spec: AugmentSpec):
    """Every batch's random numbers first, in the per-batch order, then the images warped
    WARP_CHUNK at a time as the epoch reaches them: four calls an epoch instead of 469, and
    a K-seed cohort holds K chunks, not K warped epochs, on the device."""
    draws = [draw(spec, len(index), generator, data.device) for index in order]
    group: list[int] = []
    size = 0
    for i, index in enumerate(order):
        group.append(i)
        size += len(index)
        if size < WARP_CHUNK and i + 1 < len(order):
            continue
        index = torch.cat([order[j] for j in group])
        images = data.train_x[index].unsqueeze(1).float() / 255.0
        if spec.on:
            images = apply(images, spec, concat([draws[j] for j in group]))
        start = 0
        for j in group:
            stop = start + len(order[j])
            yield order[j], images[start:stop], data.train_y[order[j]]
            start = stop
        group, size = [], 0


def single_loss(config: TrainConfig, model: nn.Module):
    """A single model's step arithmetic: (mean loss, its sum over the batch, correct)."""

    def compute(images: torch.Tensor, target: torch.Tensor):
        output = model(normalize(images))
        loss = F.cross_entropy(output, target, label_smoothing=config.label_smoothing)
        return loss, loss.detach() * len(target), (output.argmax(1) == target).sum()

    return compute


def train_epoch(
    config: TrainConfig, state: RunState, data: MNIST, spec: AugmentSpec, steps: Steps | None = None
):
    """One pass over the training set; returns (mean loss, accuracy %) as tensors (no sync).
    `steps` carries a run's CUDA graph from epoch to epoch (made afresh when None)."""
    if steps is None:
        steps = Steps(config, state, single_loss(config, state.model), data.device)
    stream = training_batches(config, data, state.generator, spec, whole_epoch(data))
    return run_steps(steps, state.model, ((x, y) for _, x, y in stream), len(data.train_y))


def whole_epoch(data: MNIST) -> bool:
    """Augment a whole epoch at once (see training_batches): on a GPU, where the per-batch
    kernels would cost more than the warp itself; a CPU keeps the per-batch path."""
    return data.device.type == "cuda"


def run_steps(steps: Steps, model: nn.Module, batches, n: int):
    """The loop a single run and a cohort share: every (images, target) batch through
    `steps`, then (mean loss, accuracy %) over the `n` training images, as tensors."""
    model.train()
    steps.begin_epoch()
    for images, target in batches:
        steps(images, target)
    return steps.loss_sum / n, steps.correct * 100.0 / n


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy %) of `model` on uint8 images, in large batches."""
    model.eval()
    total_loss = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.long)
    with torch.inference_mode():
        for start in range(0, len(labels), EVAL_BATCH):
            x = normalize(images[start : start + EVAL_BATCH])
            y = labels[start : start + EVAL_BATCH]
            output = model(x)
            total_loss += F.cross_entropy(output, y, reduction="sum")
            correct += (output.argmax(1) == y).sum()
    return total_loss.item() / len(labels), correct.item() * 100.0 / len(labels)


OnEpoch = Callable[[dict[str, Any], RunState], Any]


def prepare_run(config: TrainConfig, data: MNIST) -> tuple[torch.device, MNIST, AugmentSpec]:
    """Threads, device, the validation split and subsets, and the data on the device."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    data = data.holdout(config.val_size).subset(config.train_subset, config.test_subset)
    return device, on_device(data, device), AugmentSpec.from_config(config)


def warps(config: TrainConfig, state: RunState, spec: AugmentSpec) -> AugmentSpec:
    """The augmentation of the next epoch: none in the last `clean_epochs` (the test images
    are not warped, and those epochs fit the model to that), else `spec`."""
    clean = state.epoch >= config.epochs - config.clean_epochs
    return AugmentSpec() if clean else spec


def add_avg3(metrics: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """`<acc>_avg3`: the mean of the last 3 epochs' accuracy, steadier for ASHA's rungs."""
    for name in ("val_acc", "test_acc"):
        if name in metrics:
            recent = [m[name] for m in history[-2:]] + [metrics[name]]
            metrics[f"{name}_avg3"] = sum(recent) / len(recent)


def outcome(metrics: dict[str, Any], stop: bool, epoch: int, epochs: int) -> str:
    """The run's status after an epoch: `running` (go on), diverged, stopped or completed."""
    if metrics["diverged"]:
        return "diverged"
    if stop or epoch >= epochs:
        return "stopped" if epoch < epochs else "completed"
    return "running"


def train(
    config: TrainConfig,
    data: MNIST,
    on_epoch: OnEpoch | None = None,
    resume: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `config` on `data` (moved to the config's device); see the module docstring."""
    if config.cohort > 1:
        raise ValueError("a cohort config trains with tune_mnist.cohort.train_cohort")
    device, data, spec = prepare_run(config, data)
    state = make_state(config, device, len(data.train_y))
    if resume is not None:
        state.load_state_dict(resume)
    params = count_params(state.model)
    steps = Steps(config, state, single_loss(config, state.model), device)
    started = time.perf_counter()
    status = "completed"
    while state.epoch < config.epochs:
        epoch_start = time.perf_counter()
        lr = float(state.scheduler.get_last_lr()[0])  # a device tensor under a CUDA graph
        spec_now = warps(config, state, spec)
        train_loss, train_acc = train_epoch(config, state, data, spec_now, steps)
        test_loss, test_acc = evaluate(state.eval_model, data.test_x, data.test_y)
        state.epoch += 1
        metrics = {
            "epoch": state.epoch,
            "train_loss": train_loss.item(),
            "train_acc": train_acc.item(),
            "test_loss": test_loss,  # reported, never selected on
            "test_acc": test_acc,
            "lr": lr,  # learning rate at the start of the epoch
            "epoch_s": time.perf_counter() - epoch_start,
            "params": params,
            "graphed": steps.replaying,  # steps ran from a CUDA graph (False on CPU)
            "precision": steps.precision,  # what the steps ran in (bf16 can fall back)
        }
        if len(data.val_y):  # what a search selects on (absent with val_size 0)
            val_loss, val_acc = evaluate(state.eval_model, data.val_x, data.val_y)
            metrics |= {"val_loss": val_loss, "val_acc": val_acc}
        add_avg3(metrics, state.history)
        diverged = not (math.isfinite(metrics["train_loss"]) and math.isfinite(test_loss))
        metrics["diverged"] = diverged or metrics["train_loss"] > DIVERGED_LOSS
        state.history.append(metrics)
        stop = on_epoch(metrics, state) if on_epoch is not None else False
        status = outcome(metrics, stop, state.epoch, config.epochs)
        if status != "running":
            break
    seconds = time.perf_counter() - started
    return TrainResult(status, state.history, state.eval_model, params, seconds)


def print_epoch(metrics: dict[str, Any], total: int) -> None:
    val = metrics.get("val_acc", math.nan)
    print(
        f"epoch {metrics['epoch']:2d}/{total}  lr {metrics['lr']:.4f}  "
        f"train loss {metrics['train_loss']:.4f} acc {metrics['train_acc']:6.2f}%  "
        + (f"val acc {val:6.2f}%  " if math.isfinite(val) else "")
        + f"test loss {metrics['test_loss']:.4f} acc {metrics['test_acc']:6.2f}%  "
        f"{metrics['epoch_s']:5.1f}s" + _left(metrics["epoch_s"] * (total - metrics["epoch"])),
        flush=True,
    )


def _left(seconds: float) -> str:
    """The run's ETA at this epoch's pace: minutes of work need a number, not a guess."""
    if seconds <= 0:
        return ""
    return f"  ~{seconds / 60:.1f} min left" if seconds >= 60 else f"  ~{seconds:.0f}s left"
