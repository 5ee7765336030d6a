"""Cohort training: the seeds `seed .. seed + cohort - 1` of one config, trained as one network.

Member k starts from exactly the weights a single run with its seed starts from, and sees the
same batches and the same augmented images (its own generator, drawn in the same order): the
cohort only changes how the arithmetic is laid out. The K models are fused (`fuse.py`) into
one network trained with one AdamW over one loss, the sum of the members' mean losses, so each
member's gradient and AdamW step are its own. Dropout masks come from one generator for all
members: independent, not equal to a single run's.

On a GPU a K-seed cohort costs about one run (the card idles on one small model); on a CPU it
costs about K runs, but every trial then reads K seeds instead of one lucky one.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from tune_mnist.augment import AugmentSpec
from tune_mnist.config import TrainConfig
from tune_mnist.data import MNIST, normalize
from tune_mnist.engine import (
    DIVERGED_LOSS,
    EVAL_BATCH,
    RunState,
    TrainResult,
    add_avg3,
    layout,
    make_state,
    optimisation,
    outcome,
    prepare_run,
    run_steps,
    training_batches,
    warps,
    whole_epoch,
)
from tune_mnist.fuse import Fused, fuse, unfuse
from tune_mnist.models import count_params
from tune_mnist.steps import Steps

# per-member figures of an epoch; the cohort's metrics are their mean, min and std
MEMBER_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
SHARED_METRICS = ("lr", "epoch_s", "params", "graphed", "precision")  # one value for all members


def cohort_seeds(config: TrainConfig) -> list[int]:
    return list(range(config.seed, config.seed + config.cohort))


@dataclass
class CohortState(RunState):
    """A RunState whose model is the fused cohort, with one generator per member."""

    generators: list[torch.Generator] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        generators = [g.get_state() for g in self.generators]
        member_rng = [rng.clone() for rng in self.model.member_rng or []]
        return {**super().state_dict(), "generators": generators, "member_rng": member_rng}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for generator, saved in zip(self.generators, state["generators"], strict=True):
            generator.set_state(saved)
        if state.get("member_rng"):  # (absent in checkpoints from before it existed)
            self.model.member_rng = [rng.clone() for rng in state["member_rng"]]


def make_cohort_state(config: TrainConfig, device: torch.device, n_train: int) -> CohortState:
    singles, rngs = [], []
    for seed in cohort_seeds(config):
        singles.append(make_state(config.replace(seed=seed, cohort=1), device, n_train))
        rngs.append(torch.get_rng_state())  # where this seed's run draws its dropout from
    fused = layout(fuse([single.model for single in singles]).to(device), config)
    fused.member_rng = rngs  # used on a CPU, where the members run one by one (fuse.py)
    generators = [single.generator for single in singles]
    optimizer, scheduler, ema = optimisation(config, fused, n_train)
    return CohortState(fused, optimizer, scheduler, ema, generators[0], generators=generators)


def cohort_loss(config: TrainConfig, model: Fused):
    """A cohort's step arithmetic: the sum of the members' mean losses (so each member's
    gradient is its own), and per-member loss sums and correct counts, (K,) each."""

    def compute(images: torch.Tensor, target: torch.Tensor):
        output = model(normalize(images))  # (B, K, 10)
        correct = (output.argmax(2) == target).sum(dim=0)
        smoothing = config.label_smoothing
        if output.device.type == "cpu":  # member by member, summed as its single run sums
            means = torch.stack(
                [
                    F.cross_entropy(output[:, k], target[:, k], label_smoothing=smoothing)
                    for k in range(model.k)
                ]
            )
            return means.sum(), means.detach() * len(target), correct
        losses = F.cross_entropy(
            output.flatten(0, 1), target.flatten(), label_smoothing=smoothing, reduction="none"
        ).view_as(target)
        return losses.mean(dim=0).sum(), losses.detach().sum(dim=0), correct

    return compute


def cohort_epoch(
    config: TrainConfig,
    state: CohortState,
    data: MNIST,
    spec: AugmentSpec,
    steps: Steps | None = None,
):
    """One pass; per-member (mean loss, accuracy %) as (K,) tensors (no sync)."""
    if steps is None:
        steps = Steps(config, state, cohort_loss(config, state.model), data.device)
    whole = whole_epoch(data)
    streams = [training_batches(config, data, g, spec, whole) for g in state.generators]
    batches = (stack_members(parts) for parts in zip(*streams, strict=True))
    return run_steps(steps, state.model, batches, len(data.train_y))


def stack_members(parts) -> tuple[torch.Tensor, torch.Tensor]:
    """The members' (index, images, labels) batches as one cohort batch: images
    (B, K, 28, 28), member k on channel k, and labels (B, K)."""
    images = torch.cat([images for _, images, _ in parts], dim=1)
    target = torch.stack([labels for _, _, labels in parts], dim=1)
    return images, target


def evaluate_cohort(model: Fused, images: torch.Tensor, labels: torch.Tensor):
    """Per-member (mean cross-entropy, accuracy %) as lists, every member on the same images,
    each summed and divided as `engine.evaluate` does for one model (so a member whose
    weights equal its single run's reads exactly its single run's figures)."""
    model.eval()
    total = torch.zeros(model.k, device=images.device)
    correct = torch.zeros(model.k, device=images.device, dtype=torch.long)
    with torch.inference_mode():
        for start in range(0, len(labels), EVAL_BATCH):
            x = normalize(images[start : start + EVAL_BATCH])
            y = labels[start : start + EVAL_BATCH]
            output = model(x.expand(-1, model.k, -1, -1))
            total += member_loss_sums(output, y, batched=output.device.type != "cpu")
            correct += (output.argmax(2) == y[:, None]).sum(dim=0)
    n = len(labels)
    return [t / n for t in total.tolist()], [c * 100.0 / n for c in correct.tolist()]


def member_loss_sums(output: torch.Tensor, y: torch.Tensor, batched: bool) -> torch.Tensor:
    """Each member's summed cross-entropy on one eval batch, (K,). On a CPU member by member,
    summed as `engine.evaluate` sums a single model (bit for bit); on a GPU one call for all
    K members (K=128 would otherwise launch ~4,600 small kernels an epoch), equal up to the
    order of the float additions."""
    if batched:  # (B, K, 10) -> (B, 10, K): classes on dim 1, as cross_entropy expects
        target = y[:, None].expand(-1, output.shape[1])
        return F.cross_entropy(output.transpose(1, 2), target, reduction="none").sum(dim=0)
    return torch.stack(
        [F.cross_entropy(output[:, k], y, reduction="sum") for k in range(output.shape[1])]
    )


def summarise_members(per_member: dict[str, list[float]]) -> dict[str, Any]:
    """The cohort's metrics: each figure's mean over members (what a search reads), and the
    accuracies' min and std; the per-seed lists are kept under `<name>_seeds`."""
    out: dict[str, Any] = {}
    for name, values in per_member.items():
        out[name] = statistics.fmean(values)
        out[f"{name}_seeds"] = list(values)
        if name.endswith("_acc"):
            out[f"{name}_min"] = min(values)
            out[f"{name}_std"] = statistics.pstdev(values)
    return out


def member_history(history: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """Member k's epochs in a single run's format (what confirm, the leaderboard and the
    tables read), taken from the cohort's per-seed lists."""
    out: list[dict[str, Any]] = []
    for metrics in history:
        row = {"epoch": metrics["epoch"]}
        row |= {n: metrics[f"{n}_seeds"][k] for n in MEMBER_METRICS if f"{n}_seeds" in metrics}
        row |= {n: metrics[n] for n in SHARED_METRICS if n in metrics}
        add_avg3(row, out)
        row["diverged"] = not math.isfinite(row["train_loss"]) or row["train_loss"] > DIVERGED_LOSS
        out.append(row)
    return out


def train_cohort(
    config: TrainConfig, data: MNIST, on_epoch=None, resume: dict[str, Any] | None = None
) -> list[TrainResult]:
    """Train the cohort of `config` (see the module docstring); one TrainResult per seed.
    `on_epoch(metrics, state)` sees the cohort's metrics (means, mins, per-seed lists)."""
    device, data, spec = prepare_run(config, data)
    state = make_cohort_state(config, device, len(data.train_y))
    if resume is not None:
        state.load_state_dict(resume)
    params = count_params(state.model) // config.cohort
    steps = Steps(config, state, cohort_loss(config, state.model), device)
    started = time.perf_counter()
    status = "completed"
    while state.epoch < config.epochs:
        epoch_start = time.perf_counter()
        lr = float(state.scheduler.get_last_lr()[0])  # a device tensor under a CUDA graph
        spec_now = warps(config, state, spec)
        train_loss, train_acc = cohort_epoch(config, state, data, spec_now, steps)
        per = {"train_loss": train_loss.tolist(), "train_acc": train_acc.tolist()}
        if len(data.val_y):
            per["val_loss"], per["val_acc"] = evaluate_cohort(
                state.eval_model, data.val_x, data.val_y
            )
        per["test_loss"], per["test_acc"] = evaluate_cohort(
            state.eval_model, data.test_x, data.test_y
        )
        state.epoch += 1
        metrics = {"epoch": state.epoch, **summarise_members(per), "lr": lr, "params": params}
        metrics["graphed"], metrics["precision"] = steps.replaying, steps.precision
        metrics["epoch_s"] = time.perf_counter() - epoch_start
        metrics["seeds"] = cohort_seeds(config)
        add_avg3(metrics, state.history)
        losses = per["train_loss"] + per["test_loss"]
        diverged = not all(math.isfinite(v) for v in losses)
        metrics["diverged"] = diverged or max(per["train_loss"]) > DIVERGED_LOSS
        state.history.append(metrics)
        stop = on_epoch(metrics, state) if on_epoch is not None else False
        status = outcome(metrics, stop, state.epoch, config.epochs)
        if status != "running":
            break
    seconds = time.perf_counter() - started
    members = unfuse(state.eval_model)
    return [
        TrainResult(status, member_history(state.history, k), model, params, seconds)
        for k, model in enumerate(members)
    ]
