"""Low fidelities: cheaper runs of a configuration that stand in for its full 15-epoch run.

A fidelity is a rule that turns a full-fidelity `TrainConfig` into the cheaper run it
measures, with the share of a full run's training steps it costs. The fidelity study
(`scripts/fidelity_study.py`, docs/fidelity.md) measures how well each ranks; the search's
rungs (`settings.rungs`) are built from the same rules, so a figure in the tables names the
fidelity it was measured at.

- `full`: the run itself.
- `compressed<E>`: the whole one-cycle schedule compressed into E epochs (BOHB's budgets);
  clean epochs shrink in proportion, rounded.
- `subset<P>`: P percent of the training images, the full schedule (SMAC, Fabolas).
- `wsd<E>`: a warmup-stable-decay run branched at epoch E: the stable phase to E, then a
  one-epoch cool-down (Hägele et al. 2024); the trunk is shared by every branch.
"""

from __future__ import annotations

import re

from tune_mnist.train.config import ConfigError, TrainConfig

FULL = "full"
_PATTERN = re.compile(r"^(full|compressed(\d+)|subset(\d+)|wsd(\d+))$")


def parse(name: str) -> tuple[str, int]:
    """(kind, amount) of a fidelity name: ('compressed', 3), ('subset', 25), ('full', 0)."""
    match = _PATTERN.match(name)
    if not match:
        raise ConfigError(
            f"fidelity {name!r} is not known: use full, compressed<E>, subset<P> or wsd<E>"
        )
    if name == FULL:
        return FULL, 0
    kind = re.sub(r"\d+$", "", name)
    amount = int(name[len(kind) :])
    if amount < 1 or (kind == "subset" and amount > 100):
        raise ConfigError(f"fidelity {name!r}: the number must be 1..100 (percent) or >= 1 epochs")
    return kind, amount


def scaled_clean(config: TrainConfig, epochs: int) -> int:
    """Clean epochs kept in proportion when the schedule is compressed into `epochs`."""
    return min(epochs, round(config.clean_epochs * epochs / config.epochs))


def config_at(config: TrainConfig, name: str, n_train: int) -> TrainConfig:
    """The run that measures `config` at fidelity `name` (`n_train`: its training images)."""
    kind, amount = parse(name)
    if kind == "compressed":
        return config.replace(epochs=amount, clean_epochs=scaled_clean(config, amount))
    if kind == "subset":
        return config.replace(train_subset=max(1, n_train * amount // 100))
    if kind == "wsd":  # the branch: stable to `amount`, one epoch of cool-down
        return config.replace(
            schedule="wsd", epochs=amount + 1, clean_epochs=min(1, config.clean_epochs)
        )
    return config


def nominal_cost(config: TrainConfig, name: str) -> float:
    """Training steps as a share of the full run's (evaluation excluded)."""
    kind, amount = parse(name)
    if kind == "compressed":
        return amount / config.epochs
    if kind == "subset":
        return amount / 100
    if kind == "wsd":
        return (amount + 1) / config.epochs
    return 1.0
