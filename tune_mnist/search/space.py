"""Search spaces as data: a YAML file -> validated settings + an Optuna define-by-run function.

Format (see search_spaces/README.md)::

    settings: {metric: val_acc, mode: max, epochs: 15, grace_period: 3, reduction_factor: 3,
               max_params: 8000, target_acc: 99.4, samples: 24, val_size: 5000}
    fixed:  {batch_size: 128}                 # TrainConfig fields set for every trial
    params: {max_lr: {loguniform: [0.005, 0.05]}, dropout: 0.0}   # shared by every arch
    arch:                                     # conditional branches, one per architecture
      super_light: {}
      tiny: {width1: {int: [4, 12]}, squeeze: {choice: [true, false]}}
      tiny-flat: {squeeze: false, width1: {int: [8, 16]}}    # a variant: tiny, other box
    points_to_evaluate: [{arch: super_light, max_lr: 0.02}]

A distribution is `{choice: [...]}`, `{uniform: [lo, hi]}`, `{loguniform: [lo, hi]}` or
`{int: [lo, hi]}` (optional `step`); a bare value is a constant. Branch parameters get their
own Optuna names (`tiny:width1`) so one architecture's values never leak into another's.
A branch named `<arch>-<variant>` is a second box of the same architecture, told apart from
its siblings by a constant (`separable_late: true`): a field that changes the model's shape
needs its own width ranges, and one range per architecture would waste half its draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune_mnist import rule
from tune_mnist.search import rungs
from tune_mnist.train.config import (
    TrainConfig,
    cpu_eval_fields,
    cpu_step_fields,
    schedule_problem,
)


class SpaceError(ValueError):
    """A search-space file that cannot be used; the message names file, key and what is allowed."""


PROMOTIONS = ("greedy", "end")  # settings.promotion, and search.py --promotion
SETTINGS_DEFAULTS: dict[str, Any] = {
    "metric": "val_acc",  # reported metric the search optimises (never a test_* one)
    "mode": "max",  # max | min
    "asha_metric": None,  # what ASHA compares at its rungs (None = metric); see METRICS
    # true: Optuna optimises metric and parameter count together (multi-objective TPE) and
    # the search returns a front; ASHA still stops on the accuracy (asha_metric or metric)
    "pareto": False,
    "epochs": rule.EPOCHS,  # max_t: epochs of a full trial
    "grace_period": 3,  # ASHA: epochs every trial gets before it can be stopped
    "reduction_factor": 3,  # ASHA: keep 1/reduction_factor of trials at each rung
    "max_params": rule.MAX_PARAMS,  # configs above this are over_budget, never trained
    "target_acc": rule.TARGET_ACC,  # final validation accuracy (%) a full run must reach
    "samples": 24,  # trials to run
    "val_size": 5000,  # last N training images held out: what the search selects on
    "seeds_per_trial": 1,  # seeds each trial trains as one fused cohort; metrics = their mean
    "train_subset": 0,  # first N training images (0 = all); smoke spaces use a subset
    "test_subset": 0,  # first N test images (0 = all)
    # how CPU trials run their steps: plain (fp32, contiguous), channels_last, bf16,
    # bf16_channels_last, or auto (tune_mnist.train.steps.CPU_STEPS); a field the space fixes or
    # searches (precision, channels_last) wins. Absent = plain: the searches recorded before
    # it existed rebuild their rows as they ran
    "cpu_step": "plain",
    # fidelities each trial trains in turn, ASHA keeping the best 1/reduction_factor at each
    # rung's end, e.g. [compressed3, compressed5, full] (tune_mnist.search.rungs); absent:
    # the full run alone, ASHA stopping it at grace_period * reduction_factor^k epochs
    "rungs": None,
    # when a rung promotes: greedy (ASHA: the best floor(n / reduction_factor) of the n figures
    # seen so far, at once) or end (successive halving: every trial waits at its first rung
    # until sampling ends, then the best quarter goes on; Optuna learns each trial's first-rung
    # figure as it arrives; tune_mnist.search.screen)
    "promotion": "greedy",
}
# Per-epoch metrics a search may select on (Optuna) or stop on (ASHA), with the direction that
# is better. The *_avg3 means of the last 3 epochs are steadier at ASHA's rungs: while the
# one-cycle rate is high, accuracy swings by a percent or two between neighbouring epochs.
METRICS = {
    "val_acc": "max",
    "val_acc_avg3": "max",
    "val_loss": "min",
    "train_acc": "max",
    "train_loss": "min",
}
# Reported every epoch, never chosen on: a model picked on the test set is judged by the
# same images that picked it, and its figure is biased upward.
REPORT_ONLY = ("test_acc", "test_acc_avg3", "test_loss")
MIN_VAL_SIZE = 100  # fewer held-out images cannot rank models that differ by 0.1%
TOP_KEYS = {"description", "settings", "fixed", "params", "arch", "points_to_evaluate"}
KINDS = {"choice", "uniform", "loguniform", "int"}
# Fields owned by the search itself: the settings and the driver set them, never the space.
RESERVED = {
    *("epochs", "val_size", "train_subset", "test_subset", "device", "threads", "arch"),
    *("seed", "cohort"),  # a trial's seeds: 0 .. seeds_per_trial - 1
}


VARIANT = "-"  # `lean-late`: a branch of arch `lean` (no model name holds a hyphen)


def arch_of(branch: str) -> str:
    """The architecture a branch trains: `lean` for both `lean` and `lean-late`."""
    return branch.split(VARIANT, 1)[0]


def constants(dists: dict[str, Dist]) -> dict[str, Any]:
    """A block's constant fields and their values."""
    return {k: d.values[0] for k, d in dists.items() if d.kind == "const"}


def settled(own: dict[str, Any], fixed: dict[str, Any], keys) -> tuple:
    """What a branch with constants `own` sets each of `keys` to: its constant, else the
    space's fixed value, else TrainConfig's default. Siblings must differ here."""
    return tuple(own.get(k, fixed.get(k, getattr(TrainConfig, k))) for k in keys)


@dataclass(frozen=True)
class Dist:
    kind: str  # choice | uniform | loguniform | int | const
    values: tuple = ()  # choice values, (lo, hi) for ranges, (value,) for const
    step: int = 1

    def suggest(self, trial, name: str) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.values))
        if self.kind == "uniform":
            return trial.suggest_float(name, *self.values)
        if self.kind == "loguniform":
            return trial.suggest_float(name, *self.values, log=True)
        return trial.suggest_int(name, *self.values, step=self.step)

    def extremes(self) -> list[Any]:
        return list(self.values)


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    settings: dict[str, Any]
    fixed: dict[str, Any]
    shared: dict[str, Dist]
    branches: dict[str, dict[str, Dist]]
    points: list[dict[str, Any]] = field(default_factory=list)

    def define_by_run(self, trial) -> dict[str, Any]:
        """Optuna define-by-run: sample arch, then the shared and that arch's own params.
        Returns the constants; Ray merges them with the sampled values into the trial config."""
        arch = trial.suggest_categorical("arch", sorted(self.branches))
        constants = dict(self.fixed)
        for name, dist in self.shared.items():
            if dist.kind == "const":
                constants[name] = dist.values[0]
            else:
                dist.suggest(trial, name)
        for name, dist in self.branches[arch].items():
            if dist.kind == "const":
                constants[f"{arch}:{name}"] = dist.values[0]
            else:
                dist.suggest(trial, f"{arch}:{name}")
        return constants

    def optuna_points(self) -> list[dict[str, Any]]:
        """points_to_evaluate with branch fields renamed to their Optuna names."""
        out = []
        for point in self.points:
            arch = point["arch"]
            out.append(
                {(f"{arch}:{k}" if k in self.branches[arch] else k): v for k, v in point.items()}
            )
        return out

    def branch_of(self, row: dict[str, Any]) -> str | None:
        """The branch a recorded trial was drawn from. Rows hold the model's `arch` (`lean`),
        so a variant is the sibling whose constants the row carries; None: no branch of this
        space (a row of another search)."""
        siblings = [b for b in sorted(self.branches) if arch_of(b) == row.get("arch")]
        keys = sorted({k for b in siblings for k in self.constants(b)})
        recorded = tuple(row.get(k) for k in keys)
        for branch in siblings:
            if settled(self.constants(branch), self.fixed, keys) == recorded:
                return branch
        return None

    def constants(self, branch: str) -> dict[str, Any]:
        return constants(self.branches[branch])

    @property
    def trial_epochs(self) -> int:
        """Epochs a trial trains when it reaches its full run (every rung's)."""
        return rungs.trial_epochs(self.settings)

    def check_schedule(self, n_images: int) -> None:
        """Refuse, before Ray starts, a recipe whose fixed or listed values the one-cycle
        schedule cannot run on this many training images (every trial would fail at its
        first step); a rate range is checked by each trial as it starts."""
        n_train = n_images - self.settings["val_size"]
        if self.settings["train_subset"]:
            n_train = min(n_train, self.settings["train_subset"])
        runs = {(r.epochs, r.config.train_subset or n_train) for r in self._rungs(n_train)}
        for batch in self._listed("batch_size"):
            for start in self._listed("pct_start"):
                for epochs, images in sorted(runs):
                    problem = schedule_problem(epochs, batch, start, images)
                    if problem:
                        raise SpaceError(
                            f"{self.path}: epochs {epochs}, {images} training "
                            f"images, batch_size {batch}, pct_start {start}: {problem}"
                        )

    def _rungs(self, n_train: int) -> list[rungs.Rung]:
        base = TrainConfig(epochs=self.settings["epochs"], clean_epochs=0)
        return rungs.plan(base, self.settings, n_train)

    def _listed(self, name: str) -> list:
        """Every value `name` can take that is known before any trial: fixed, constant or a
        choice (a range gives none); the TrainConfig default where the space is silent."""
        if name in self.fixed:
            return [self.fixed[name]]
        dist = self.shared.get(name)
        if dist is None:
            return [getattr(TrainConfig, name)]
        return list(dist.values) if dist.kind in ("const", "choice") else []

    def train_config(self, trial_config: dict[str, Any], **run: Any) -> TrainConfig:
        """The TrainConfig of one trial: its sampled values, branch prefixes stripped, plus the
        run settings (epochs, subsets) and `run` overrides (device, threads)."""
        values = {key.split(":", 1)[-1]: v for key, v in trial_config.items()}
        if "arch" in values:
            values["arch"] = arch_of(values["arch"])
        values["epochs"] = self.settings["epochs"]
        values["val_size"] = self.settings["val_size"]
        values["cohort"] = self.settings["seeds_per_trial"]
        values["train_subset"] = self.settings["train_subset"]
        values["test_subset"] = self.settings["test_subset"]
        device = str(run.get("device", "cpu"))
        step = cpu_step_fields(self.settings["cpu_step"], device) | cpu_eval_fields(device)
        return TrainConfig.from_dict({**step, **values, **run})
