"""A search's rungs: cheap fresh runs of a trial before its full one (settings.rungs).

`rungs: [compressed3, compressed5, full]` trains every trial's configuration with its
one-cycle schedule compressed into 3 epochs; ASHA keeps the best 1/reduction_factor of them
for a fresh 5-epoch run, and the best of those for the full run (the default space runs
`[compressed3, full]`). Each rung is a complete run
of the same recipe (BOHB's budgets), so its figure ranks like a finished model, where the
prefix of a one-cycle run does not (docs/fidelity.md). The full rung is the ordinary
15-epoch one-cycle run: what a trial passes on, and what is published, is unchanged.

ASHA reads `level`: reduction_factor ** rung at a rung's last epoch, the level of the rung
before while a rung trains (ASHA has recorded it there already, so it does nothing), which
puts ASHA's geometric milestones exactly at the rungs' ends. A space without `rungs` has the
one rung `full`, and ASHA reads the epoch, as before (grace_period, epochs).

Every report names its `fidelity`, its `rung` and its `rung_epoch`; `epoch` counts the
trial's epochs across rungs, so each is one row of epochs.parquet.
"""

from __future__ import annotations

from dataclasses import dataclass

from tune_mnist.fidelity import FULL, config_at, nominal_cost, parse
from tune_mnist.train.config import ConfigError, TrainConfig

LEVEL = "level"


@dataclass(frozen=True)
class Rung:
    index: int
    fidelity: str
    config: TrainConfig  # the run this rung trains
    offset: int  # the trial's epochs before this rung

    @property
    def epochs(self) -> int:
        return self.config.epochs


def names(settings: dict) -> list[str]:
    return list(settings.get("rungs") or [FULL])


def staged(settings: dict) -> bool:
    """Whether the trial trains several rungs (ASHA reads `level`, not the epoch)."""
    return len(names(settings)) > 1


def check(settings: dict) -> None:
    """A rung list the search can run: known fidelities of rising cost, ending in full."""
    listed = settings.get("rungs")
    if listed is None:
        return
    if not isinstance(listed, list) or not listed or listed[-1] != FULL:
        raise ConfigError(f"rungs: {listed!r}; a list of fidelities ending in full")
    epochs, costs = settings["epochs"], []
    for name in listed:
        kind, amount = parse(str(name))
        if kind == "wsd":
            raise ConfigError(f"rungs: {name}: a search's rungs are compressed<E>, subset<P>, full")
        if kind == "compressed" and amount >= epochs:
            raise ConfigError(f"rungs: {name}: fewer epochs than the full run's {epochs}")
        costs.append(nominal_cost(TrainConfig(epochs=epochs), str(name)))
    if costs != sorted(set(costs)):
        raise ConfigError(f"rungs: {listed}: each rung must cost more than the one before")


def plan(config: TrainConfig, settings: dict, n_train: int) -> list[Rung]:
    """The runs a trial of `config` (its full-fidelity config) trains, in order."""
    out, offset = [], 0
    for index, name in enumerate(names(settings)):
        rung = config_at(config, name, n_train)
        out.append(Rung(index, name, rung, offset))
        offset += rung.epochs
    return out


def trial_epochs(settings: dict) -> int:
    """Epochs a trial trains when it reaches its full run (every rung's)."""
    config = TrainConfig(epochs=settings["epochs"])
    return sum(r.epochs for r in plan(config, settings, 60_000))


def level(settings: dict, rung: int, done: bool) -> float:
    """What ASHA reads after an epoch of rung `rung` (`done`: the rung's last epoch)."""
    factor = settings["reduction_factor"]
    if done:
        return float(factor**rung)
    return float(factor ** (rung - 1)) if rung else 0.0


def max_level(settings: dict) -> float:
    return level(settings, len(names(settings)) - 1, done=True)


def quotas(arrivals: float, factor: float, later_rungs: int) -> list[int]:
    """The most trials each rung after the first can ever take, from `arrivals` figures at
    the first: a 1/factor share of the rung before's, and at least one (the search's end
    promotes one). The scheduler's ceiling and the search's ETA both read it."""
    out: list[int] = []
    for _ in range(later_rungs):
        arrivals = max(1, int(arrivals // factor))
        out.append(arrivals)
    return out


def milestones(settings: dict) -> tuple[str, list[float], float]:
    """(what ASHA reads, where it judges, where a trial ends): each rung's end, else ASHA's
    geometric epochs from grace_period below the last epoch. The first is where the first
    rung ends: a study told first-rung figures (screen.ScreenSearch, warm.told_value)
    reads it."""
    factor = settings["reduction_factor"]
    if staged(settings):
        ends = [level(settings, i, done=True) for i in range(len(names(settings)))]
        return LEVEL, ends[:-1], max_level(settings)
    epochs, at, out = settings["epochs"], settings["grace_period"], []
    while at < epochs:
        out.append(float(at))
        at *= factor
    return "epoch", out, float(epochs)
