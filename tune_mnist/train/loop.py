"""The training loop: AdamW + OneCycleLR over device-resident MNIST, for K >= 1 seeds of one
config at once (a single run is K = 1). No Ray, no CLI in here (`python -m tune_mnist.train`
is the command line; the state and its fusion are in `tune_mnist.train.state`).

`train(config, data, on_epoch, resume)` runs a whole training and returns one TrainResult per
seed; `on_epoch(metrics, state)` sees each epoch's metrics (the Ray trainable reports from it)
and may return True to stop the run. A single run's metrics are its own figures; a cohort's
are the members' means, with their min, std and per-seed lists (`summarise`).

On a GPU a K-seed cohort costs about one run (the card idles on one small model); on a CPU it
costs about K runs, but every trial then reads K seeds instead of one lucky one.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tune_mnist.train.augment import AugmentSpec
from tune_mnist.train.config import DEFAULT_EVAL_BATCH, TrainConfig
from tune_mnist.train.data import MNIST, normalize
from tune_mnist.train.fuse import Fused, unfuse
from tune_mnist.train.models import count_params
from tune_mnist.train.state import RunState, TrainResult, make_state, member_seeds, prepare_run
from tune_mnist.train.steps import Steps
from tune_mnist.train.stream import training_batches, whole_epoch

# A mean training loss above this has exploded (chance level is ln 10 = 2.3): BatchNorm keeps
# activations finite even when the weights blow up, so waiting for NaN alone can take forever.
DIVERGED_LOSS = 100.0
# per-member figures of an epoch; a cohort's metrics are their mean, min and std
MEMBER_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc")
SHARED_METRICS = ("lr", "epoch_s", "params", "graphed", "precision")  # one value for all members

OnEpoch = Callable[[dict[str, Any], RunState], Any]


def loss_fn(config: TrainConfig, model: Fused):
    """The step's arithmetic: the sum of the members' mean losses (so each member's gradient is
    its own), and per-member loss sums and correct counts, (K,) each."""

    def compute(images: torch.Tensor, target: torch.Tensor):
        output = model(normalize(images))  # (B, K, 10)
        correct = (output.argmax(2) == target).sum(dim=0)
        smoothing = config.label_smoothing
        if output.device.type == "cpu" or model.k == 1:  # each member as its own run sums
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


def train_epoch(
    config: TrainConfig, state: RunState, data: MNIST, spec: AugmentSpec, steps: Steps | None = None
):
    """One pass over the training set; per-member (mean loss, accuracy %) as (K,) tensors (no
    sync). `steps` carries a run's CUDA graph from epoch to epoch (made afresh when None)."""
    if steps is None:
        steps = Steps(config, state, loss_fn(config, state.model), data.device)
    whole = whole_epoch(data)
    streams = [training_batches(config, data, g, spec, whole) for g in state.generators]
    batches = (stack_members(parts) for parts in zip(*streams, strict=True))
    state.model.train()
    steps.begin_epoch()
    for images, target in batches:
        steps(images, target)
    n = len(data.train_y)
    return steps.loss_sum / n, steps.correct * 100.0 / n


def stack_members(parts) -> tuple[torch.Tensor, torch.Tensor]:
    """The members' (index, images, labels) batches as one batch: images (B, K, 28, 28),
    member k on channel k, and labels (B, K). One member's are views, not copies."""
    if len(parts) == 1:
        _, images, labels = parts[0]
        return images, labels[:, None]
    images = torch.cat([images for _, images, _ in parts], dim=1)
    target = torch.stack([labels for _, _, labels in parts], dim=1)
    return images, target


def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = DEFAULT_EVAL_BATCH
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy %) of one plain `model` on uint8 images, `batch` a pass."""
    losses, accs = evaluate_members(Fused(model, 1, model), images, labels, batch)  # no copy
    return losses[0], accs[0]


def evaluate_members(model: Fused, images: torch.Tensor, labels: torch.Tensor, batch: int):
    """Per-member (mean cross-entropy, accuracy %) as lists, every member on the same images
    `batch` at a time, each summed as a single model's (so a member whose weights equal its
    single run's reads exactly its single run's figures)."""
    model.eval()
    total = torch.zeros(model.k, device=images.device)
    correct = torch.zeros(model.k, device=images.device, dtype=torch.long)
    batched = images.device.type != "cpu" and model.k > 1
    with torch.inference_mode():
        for start in range(0, len(labels), batch):
            x = normalize(images[start : start + batch])
            y = labels[start : start + batch]
            output = model(x.expand(-1, model.k, -1, -1))
            total += member_loss_sums(output, y, batched)
            correct += (output.argmax(2) == y[:, None]).sum(dim=0)
    n = len(labels)
    return [t / n for t in total.tolist()], [c * 100.0 / n for c in correct.tolist()]


def member_loss_sums(output: torch.Tensor, y: torch.Tensor, batched: bool) -> torch.Tensor:
    """Each member's summed cross-entropy on one eval batch, (K,). Member by member, summed as
    a single model's (bit for bit); `batched` (a GPU cohort) one call for all K members (K=128
    would otherwise launch ~4,600 small kernels an epoch), equal up to the order of the float
    additions."""
    if batched:  # (B, K, 10) -> (B, 10, K): classes on dim 1, as cross_entropy expects
        target = y[:, None].expand(-1, output.shape[1])
        return F.cross_entropy(output.transpose(1, 2), target, reduction="none").sum(dim=0)
    return torch.stack(
        [F.cross_entropy(output[:, k], y, reduction="sum") for k in range(output.shape[1])]
    )


def summarise(per_member: dict[str, list[float]]) -> dict[str, Any]:
    """An epoch's figures: a single run's own; a cohort's mean over members (what a search
    reads) with the accuracies' min and std, the per-seed lists under `<name>_seeds`."""
    if all(len(values) == 1 for values in per_member.values()):
        return {name: values[0] for name, values in per_member.items()}
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
    tables read), taken from a cohort's per-seed lists."""
    out: list[dict[str, Any]] = []
    for metrics in history:
        row = {"epoch": metrics["epoch"]}
        row |= {n: metrics[f"{n}_seeds"][k] for n in MEMBER_METRICS if f"{n}_seeds" in metrics}
        row |= {n: metrics[n] for n in SHARED_METRICS if n in metrics}
        add_avg3(row, out)
        row["diverged"] = not math.isfinite(row["train_loss"]) or row["train_loss"] > DIVERGED_LOSS
        out.append(row)
    return out


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


def run_epoch(config, state: RunState, data: MNIST, spec: AugmentSpec, steps: Steps) -> dict:
    """Train one epoch and evaluate it: the epoch's metrics (see `summarise`)."""
    epoch_start = time.perf_counter()
    lr = float(state.scheduler.get_last_lr()[0])  # a device tensor under a CUDA graph
    train_loss, train_acc = train_epoch(config, state, data, warps(config, state, spec), steps)
    per = {"train_loss": train_loss.tolist(), "train_acc": train_acc.tolist()}
    if len(data.test_y):  # absent in a racing worker, which must not read the test set
        per["test_loss"], per["test_acc"] = evaluate_members(
            state.eval_model, data.test_x, data.test_y, config.eval_batch
        )
    if len(data.val_y):  # what a search selects on (absent with val_size 0)
        per["val_loss"], per["val_acc"] = evaluate_members(
            state.eval_model, data.val_x, data.val_y, config.eval_batch
        )
    state.epoch += 1
    metrics = {"epoch": state.epoch, **summarise(per), "lr": lr}
    metrics["epoch_s"] = time.perf_counter() - epoch_start
    metrics["params"] = count_params(state.model) // state.model.k
    metrics["graphed"] = steps.replaying  # steps ran from a CUDA graph (False on CPU)
    metrics["precision"] = steps.precision  # what the steps ran in (bf16 can fall back)
    if state.model.k > 1:
        metrics["seeds"] = member_seeds(config)
    add_avg3(metrics, state.history)
    losses = per["train_loss"] + per.get("test_loss", [])
    diverged = not all(math.isfinite(v) for v in losses)
    metrics["diverged"] = diverged or max(per["train_loss"]) > DIVERGED_LOSS
    return metrics


def train(
    config: TrainConfig,
    data: MNIST,
    on_epoch: OnEpoch | None = None,
    resume: dict[str, Any] | None = None,
) -> list[TrainResult]:
    """Train `config`'s seeds on `data` (moved to the config's device); see the module
    docstring. One TrainResult per seed, in seed order."""
    device, data, spec = prepare_run(config, data)
    state = make_state(config, device, len(data.train_y))
    if resume is not None:
        state.load_state_dict(resume)
    steps = Steps(config, state, loss_fn(config, state.model), device)
    started = time.perf_counter()
    status = "completed"
    while state.epoch < config.epochs:
        metrics = run_epoch(config, state, data, spec, steps)
        state.history.append(metrics)
        stop = on_epoch(metrics, state) if on_epoch is not None else False
        status = outcome(metrics, stop, state.epoch, config.epochs)
        if status != "running":
            break
    seconds = time.perf_counter() - started
    params = count_params(state.model) // state.model.k
    members = unfuse(state.eval_model)
    if len(members) == 1:
        return [TrainResult(status, state.history, members[0], params, seconds)]
    return [
        TrainResult(status, member_history(state.history, k), model, params, seconds)
        for k, model in enumerate(members)
    ]


def print_epoch(metrics: dict[str, Any], total: int) -> None:
    val = metrics.get("val_acc", math.nan)
    test = ""  # a racing worker has no test set
    if "test_acc" in metrics:
        test = f"test loss {metrics['test_loss']:.4f} acc {metrics['test_acc']:6.2f}%  "
    print(
        f"epoch {metrics['epoch']:2d}/{total}  lr {metrics['lr']:.4f}  "
        f"train loss {metrics['train_loss']:.4f} acc {metrics['train_acc']:6.2f}%  "
        + (f"val acc {val:6.2f}%  " if math.isfinite(val) else "")
        + test
        + f"{metrics['epoch_s']:5.1f}s"
        + _left(metrics["epoch_s"] * (total - metrics["epoch"])),
        flush=True,
    )


def _left(seconds: float) -> str:
    """The run's ETA at this epoch's pace: minutes of work need a number, not a guess."""
    if seconds <= 0:
        return ""
    return f"  ~{seconds / 60:.1f} min left" if seconds >= 60 else f"  ~{seconds:.0f}s left"
