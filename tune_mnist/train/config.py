"""The one typed source of defaults: `TrainConfig`.

Every knob of a training run lives here, with its unit or range. A search space, a CLI
override or a parquet row is turned into a `TrainConfig` with `TrainConfig.from_dict`, which
rejects unknown keys and out-of-range values with a one-line message.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


def field_docs() -> dict[str, str]:
    """Each TrainConfig field's comment in this file (its meaning, unit or range): the help
    text of every command-line flag made from the field, so there is one place to say it."""

    field = re.compile(r"^    (\w+): [\w|. ]+ = .+?(?:  # (.+))?$")
    docs, above = {}, []  # above: the comment lines just before a field, if any
    for text in Path(__file__).read_text().splitlines():
        m = field.match(text)
        if m:
            docs[m.group(1)] = m.group(2) or " ".join(above).rstrip(":")
        above = [*above, text.strip()[2:]] if text.strip().startswith("# ") and not m else []
    return {name: doc for name, doc in docs.items() if doc}


# Images per forward pass at evaluation. Every run before TrainConfig.eval_batch took 5,000
# (its default, so an old row rebuilds as it ran); on a CPU 500 keeps a layer's activations
# in cache, 2.5x faster with the same predictions (docs/history.md, "Evaluation in cache").
DEFAULT_EVAL_BATCH = 5000
CPU_EVAL_BATCH = 500


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message says which and what is allowed."""


@dataclass(frozen=True)
class TrainConfig:
    # --- model ---
    arch: str = "super_light"  # name in tune_mnist.train.models.MODELS
    width1: int = 8  # channels of stage 1 (tiny) / of the 1st conv (slim, lean), 2..64
    width2: int = 12  # channels of stage 2 (tiny) / of the 2nd conv (slim, lean), 2..64
    width3: int = 16  # tiny: stage 3; slim: separable blocks; lean: 3rd conv; loop: shared, 2..64
    width4: int = 12  # channels of the 4th conv (arch=lean only), 2..64
    width5: int = 16  # channels of the 5th conv (arch=lean only), 2..64
    squeeze_width: int = 8  # channels of the 1x1 after the pool (arch=lean only), 2..64
    pool2: bool = False  # a second max-pool before the last 3x3 conv (arch=lean only)
    activation: str = "relu"  # nonlinearity after each BatchNorm: relu | silu (arch=lean only)
    separable2: bool = False  # 2nd conv depthwise-separable (arch=lean only)
    separable_late: bool = False  # 4th and 5th convs depthwise-separable (arch=lean only)
    depth1: int = 2  # 3x3 convs in stage 1 (arch=tiny only), 1..4
    depth2: int = 2  # tiny: convs in stage 2; slim: separable blocks; loop: shared uses, 1..4
    depth3: int = 1  # 3x3 convs in stage 3 (arch=tiny only), 0..4; 0 = two stages
    squeeze: bool = True  # 1x1 conv halving channels after each pool (arch=tiny only)
    dropout: float = 0.0  # probability after each conv block, [0, 0.5]
    # --- optimiser: AdamW (or SGD) + OneCycleLR stepped per batch ---
    optimizer: str = "adamw"  # adamw | sgd (plain, or with `momentum`; a region of small nets)
    momentum: float = 0.0  # SGD momentum, held fixed (not cycled), [0, 0.99]; adamw ignores it
    max_lr: float = 0.04  # peak learning rate of the one-cycle schedule, (0, 1e9]
    weight_decay: float = 1e-4  # AdamW: decoupled; SGD: L2 added to the gradient, [0, 1]
    pct_start: float = 0.25  # fraction of steps spent warming up, (0, 1); onecycle only
    # onecycle: torch's one-cycle over all epochs | wsd: warmup-stable-decay, a linear
    # warm-up of one epoch, the peak rate held, then its last fifth of epochs (at least one)
    # decaying as 1 - sqrt to zero; its first epochs do not depend on its length, so a run
    # branched off another's checkpoint continues it exactly (tune_mnist.fidelity)
    schedule: str = "onecycle"
    label_smoothing: float = 0.0  # cross-entropy label smoothing, [0, 0.5]
    ema_decay: float = 0.0  # per-step weight + BN-stat average that is evaluated; 0 = off, [0, 1)
    batch_size: int = 128  # images per step, 1..60000
    epochs: int = 15  # passes over the training set, 1..100
    # --- augmentation (applied per sample on the training device; 0 = off) ---
    rotate_deg: float = 7.5  # max |rotation| in degrees, [0, 180]
    translate_frac: float = 0.08  # max |shift| as a fraction of the side, [0, 0.5]
    scale_min: float = 0.9  # smallest zoom factor, (0, scale_max]
    scale_max: float = 1.1  # largest zoom factor, [scale_min, 4]
    shear_deg: float = 0.0  # max |x-shear| in degrees, [0, 60]
    perspective: float = 0.0  # corner distortion as a fraction of half the side, [0, 1)
    perspective_p: float = 0.0  # probability a sample gets the perspective warp, [0, 1]
    brightness: float = 0.0  # max |intensity shift| after the warp, fraction of white, [0, 1]
    contrast: float = 0.0  # max |contrast change|: intensities x (1 +- contrast), [0, 0.99]
    photometric_p: float = 0.0  # probability a sample gets brightness/contrast, [0, 1]
    clean_epochs: int = 0  # the last N epochs train on unwarped images (all if N >= epochs), 0..100
    # --- run ---
    seed: int = 0  # seeds model init, batch order and augmentation
    # seeds trained at once as one fused network: seed, seed + 1, ..., seed + cohort - 1;
    # each member starts and trains on its seed's own weights, batches and warps, 1..256
    cohort: int = 1
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:N"
    # the last N of the 60,000 training images, held out for validation (never trained on):
    # searches select on them so the test set only reports; 0 = train on all 60,000, 0..30000
    val_size: int = 0
    # which val_size images: 0 = the last ones (every search, every confirmation); N >= 1 = a
    # random val_size drawn with seed N (a race's seed N: its mean then averages over held-out
    # images as well as seeds, where a fixed set's sampling error is shared), 0..2**31 - 1
    val_split: int = 0
    train_subset: int = 0  # use only the first N training images (after val_size); 0 = all
    test_subset: int = 0  # evaluate on the first N test images; 0 = all 10,000
    threads: int = 0  # torch CPU threads; 0 = leave torch's default
    # CUDA only (ignored on CPU): capture each training step in one CUDA graph (see steps.py)
    cuda_graph: bool = True
    precision: str = "fp32"  # fp32 | bf16 (forward and loss autocast to bfloat16; weights fp32)
    # conv weights and activations stored NHWC (torch.channels_last): the same arithmetic in
    # another order, so other float rounding; on a CPU the faster layout (README, The CPU step)
    channels_last: bool = False
    # images per forward pass at evaluation, 1..60000: 5,000 ran every run recorded before
    # the field; a search's and a race's CPU runs take CPU_EVAL_BATCH (evaluation's float
    # order only: the training, its weights and its batches are the same)
    eval_batch: int = DEFAULT_EVAL_BATCH

    def __post_init__(self) -> None:
        for name, (low, high) in _RANGES.items():
            value = getattr(self, name)
            if not (low <= value <= high) or (isinstance(value, float) and math.isnan(value)):
                raise ConfigError(f"{name}={value!r} is out of range: allowed {low}..{high}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer={self.optimizer!r} is not known: valid names are "
                f"{', '.join(OPTIMIZERS)}"
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"schedule={self.schedule!r} is not known: valid names are {', '.join(SCHEDULES)}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision={self.precision!r} is not known: valid names are "
                f"{', '.join(PRECISIONS)}"
            )
        if not self.max_lr > 0:
            raise ConfigError(f"max_lr={self.max_lr!r} must be > 0")
        if not 0 < self.pct_start < 1:
            raise ConfigError(f"pct_start={self.pct_start!r} must be strictly between 0 and 1")
        if not 0 < self.scale_min <= self.scale_max:
            raise ConfigError(
                f"scale_min={self.scale_min!r}, scale_max={self.scale_max!r}: "
                "need 0 < scale_min <= scale_max"
            )
        if not self.perspective < 1:
            raise ConfigError(f"perspective={self.perspective!r} must be < 1")
        if self.device != "auto" and not (
            self.device == "cpu" or self.device.startswith("cuda") or self.device == "mps"
        ):
            raise ConfigError(f"device={self.device!r}: use auto, cpu, cuda, cuda:N or mps")
        from tune_mnist.train.models import ACTIVATIONS, MODELS  # late import: models import torch

        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"activation={self.activation!r} is not known: valid names are "
                f"{', '.join(sorted(ACTIVATIONS))}"
            )

        if self.arch not in MODELS:
            raise ConfigError(
                f"arch={self.arch!r} is not a model: valid names are {', '.join(sorted(MODELS))}"
            )

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a trial dict / parquet row; unknown keys and bad types are errors."""
        names = cls.field_names()
        unknown = [k for k in values if k not in names]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, names, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(
                f"unknown config key(s) {', '.join(hints)}; valid keys: {', '.join(names)}"
            )
        kwargs = {k: _coerce(k, v) for k, v in values.items()}
        return cls(**kwargs)

    def replace(self, **changes: Any) -> TrainConfig:
        return self.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Inclusive numeric ranges checked on construction (the comments above say the same).
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "wsd")
PRECISIONS = ("fp32", "bf16")

_RANGES: dict[str, tuple[float, float]] = {
    "width1": (2, 64),
    "width2": (2, 64),
    "width3": (2, 64),
    "width4": (2, 64),
    "width5": (2, 64),
    "squeeze_width": (2, 64),
    "depth1": (1, 4),
    "depth2": (1, 4),
    "depth3": (0, 4),
    "dropout": (0.0, 0.5),
    "momentum": (0.0, 0.99),
    "max_lr": (0.0, 1e9),
    "weight_decay": (0.0, 1.0),
    "label_smoothing": (0.0, 0.5),
    "ema_decay": (0.0, 0.99999),
    "batch_size": (1, 60000),
    "epochs": (1, 100),
    "rotate_deg": (0.0, 180.0),
    "translate_frac": (0.0, 0.5),
    "scale_max": (0.0, 4.0),
    "shear_deg": (0.0, 60.0),
    "perspective": (0.0, 1.0),
    "perspective_p": (0.0, 1.0),
    "brightness": (0.0, 1.0),
    "contrast": (0.0, 0.99),
    "photometric_p": (0.0, 1.0),
    "clean_epochs": (0, 100),
    "seed": (0, 2**63 - 1),
    "cohort": (1, 256),
    "val_size": (0, 30000),
    "val_split": (0, 2**31 - 1),
    "train_subset": (0, 60000),
    "test_subset": (0, 10000),
    "threads": (0, 1024),
    "eval_batch": (1, 60000),
}

# The step variants a search may run its CPU trials in (settings.cpu_step, --cpu-step), as
# the TrainConfig fields each sets. `auto` is the fastest variant whose accuracy was measured
# to hold (README, "The CPU step"): channels-last, in fp32. bf16 is opt-in: it gained nothing
# over channels-last on AMD Zen 5, and its accuracy is not yet measured on 5 seeds.
CPU_STEPS: dict[str, dict[str, object]] = {
    "plain": {"precision": "fp32", "channels_last": False},  # every row published before
    "channels_last": {"precision": "fp32", "channels_last": True},
    "bf16": {"precision": "bf16", "channels_last": False},
    "bf16_channels_last": {"precision": "bf16", "channels_last": True},
}
AUTO_CPU_STEP = "channels_last"


def schedule_problem(epochs: int, batch_size: int, pct_start: float, n_train: int) -> str | None:
    """Why the one-cycle schedule cannot run this recipe, or None. torch's OneCycleLR divides
    by (warm-up steps - 1): a warm-up of exactly one step fails at the first step."""
    total = epochs * math.ceil(n_train / batch_size)
    if float(pct_start * total) - 1 == 0:
        return (
            f"{total} steps with pct_start {pct_start} make a warm-up of exactly one step, "
            "which the one-cycle schedule cannot take: change the images, epochs, batch size "
            "or pct_start"
        )
    return None


def cpu_eval_fields(device: str) -> dict[str, object]:
    """What a new CPU run evaluates in: CPU_EVAL_BATCH images a pass (none on a GPU)."""
    return {"eval_batch": CPU_EVAL_BATCH} if device.startswith("cpu") else {}


def cpu_step_of(config: TrainConfig) -> str:
    """The name in CPU_STEPS of the variant `config` runs its CPU steps in."""
    mine = {"precision": config.precision, "channels_last": config.channels_last}
    return next(name for name, fields in CPU_STEPS.items() if fields == mine)


def cpu_step_fields(name: str, device: str) -> dict[str, object]:
    """The TrainConfig fields of step variant `name` (or `auto`) for a run on `device`: none
    on a GPU, whose step is a CUDA graph (bf16 there is the config's own choice)."""
    if not device.startswith("cpu"):
        return {}
    return dict(CPU_STEPS[AUTO_CPU_STEP if name == "auto" else name])


_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def _coerce(name: str, value: Any) -> Any:
    """Accept numpy/pandas scalars and ints for floats; refuse anything else of the wrong type."""
    kind = _TYPES[name]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy / pandas scalar from a parquet row
    if kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind == "str":
        if isinstance(value, str):
            return value
    raise ConfigError(f"{name}={value!r} has the wrong type: expected {kind}")
