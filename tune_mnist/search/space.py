"""Search spaces as data: a YAML file -> validated settings + an Optuna define-by-run function.

Format (see search_spaces/README.md)::

    settings: {metric: val_acc, mode: max, epochs: 15, grace_period: 3, reduction_factor: 3,
               max_params: 8000, target_acc: 99.4, samples: 24, val_size: 5000}
    fixed:  {batch_size: 128}                 # TrainConfig fields set for every trial
    params: {max_lr: {loguniform: [0.005, 0.05]}, dropout: 0.0}   # shared by every arch
    arch:                                     # conditional branches, one per architecture
      super_light: {}
      tiny: {width1: {int: [4, 12]}, squeeze: {choice: [true, false]}}
    points_to_evaluate: [{arch: super_light, max_lr: 0.02}]

A distribution is `{choice: [...]}`, `{uniform: [lo, hi]}`, `{loguniform: [lo, hi]}` or
`{int: [lo, hi]}` (optional `step`); a bare value is a constant. Branch parameters get their
own Optuna names (`tiny:width1`) so one architecture's values never leak into another's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tune_mnist import rule
from tune_mnist.search import rungs
from tune_mnist.train.config import (
    CPU_STEPS,
    ConfigError,
    TrainConfig,
    cpu_step_fields,
    schedule_problem,
)
from tune_mnist.train.models import MODELS, model_param_names


class SpaceError(ValueError):
    """A search-space file that cannot be used; the message names file, key and what is allowed."""


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
        values["epochs"] = self.settings["epochs"]
        values["val_size"] = self.settings["val_size"]
        values["cohort"] = self.settings["seeds_per_trial"]
        values["train_subset"] = self.settings["train_subset"]
        values["test_subset"] = self.settings["test_subset"]
        step = cpu_step_fields(self.settings["cpu_step"], str(run.get("device", "cpu")))
        return TrainConfig.from_dict({**step, **values, **run})


def _dist(where: str, spec: Any) -> Dist:
    if not isinstance(spec, dict):
        if isinstance(spec, (list, tuple)):
            raise SpaceError(f"{where}: a list is ambiguous; write {{choice: [...]}}")
        return Dist("const", (spec,))
    if len(spec) != 1 and not (len(spec) == 2 and "int" in spec and "step" in spec):
        raise SpaceError(f"{where}: one of {sorted(KINDS)} expected, got keys {sorted(spec)}")
    kind = next(k for k in spec if k != "step")
    if kind not in KINDS:
        raise SpaceError(f"{where}: unknown distribution {kind!r}; allowed: {sorted(KINDS)}")
    values = spec[kind]
    if not isinstance(values, list) or not values:
        raise SpaceError(f"{where}.{kind}: expected a non-empty list")
    if kind == "choice":
        return Dist("choice", tuple(values))
    if len(values) != 2 or not all(isinstance(v, (int, float)) for v in values):
        raise SpaceError(f"{where}.{kind}: expected [low, high] numbers, got {values!r}")
    low, high = values
    if low > high:
        raise SpaceError(f"{where}.{kind}: low {low} > high {high}")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"{where}.loguniform: low must be > 0, got {low}")
    if kind == "int":
        if not all(isinstance(v, int) for v in values):
            raise SpaceError(f"{where}.int: bounds must be integers, got {values!r}")
        return Dist("int", (low, high), int(spec.get("step", 1)))
    return Dist(kind, (float(low), float(high)))


def _check_values(where: str, name: str, dist: Dist, arch: str | None) -> None:
    """Every extreme / choice of a distribution must make a valid TrainConfig."""
    for value in dist.extremes():
        try:
            TrainConfig.from_dict({name: value, **({"arch": arch} if arch else {})})
        except ConfigError as exc:
            raise SpaceError(f"{where}: {exc}") from None


def _fields(where: str, block: Any, allowed: list[str], arch: str | None) -> dict[str, Dist]:
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise SpaceError(f"{where}: expected a mapping of field: distribution")
    out = {}
    for name, spec in block.items():
        if name not in allowed:
            raise SpaceError(
                f"{where}.{name}: unknown key; allowed here: {', '.join(sorted(allowed))}"
            )
        out[name] = _dist(f"{where}.{name}", spec)
        _check_values(f"{where}.{name}", name, out[name], arch)
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping: the file would say
    two things, and plain YAML silently keeps the last."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKey(f"key {key!r} is given twice (lines {seen[key]} and {line})")
            seen[key] = line
        return super().construct_mapping(node, deep)


class DuplicateKey(yaml.YAMLError):
    pass


def read_yaml(path: Path):
    """A YAML file read with the safe loader, duplicate keys refused."""
    return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader: no objects


def load_space(path: str | Path) -> SearchSpace:
    """Parse and validate a search-space file (safe YAML loader only)."""
    path = Path(path)
    try:
        doc = read_yaml(path)
    except OSError as exc:
        raise SpaceError(f"{path}: cannot read ({exc.strerror})") from None
    except DuplicateKey as exc:
        raise SpaceError(f"{path}: {exc}; keep one") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpaceError(f"{path}: not valid YAML{where}") from None
    if not isinstance(doc, dict):
        raise SpaceError(f"{path}: expected a mapping with keys {sorted(TOP_KEYS)}")
    try:
        return _parse(path, doc)
    except SpaceError as exc:
        raise SpaceError(f"{path}: {exc}") from None


def _parse(path: Path, doc: dict[str, Any]) -> SearchSpace:
    unknown = set(doc) - TOP_KEYS
    if unknown:
        raise SpaceError(f"unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}")
    settings = _settings(doc.get("settings") or {})
    trainable = [n for n in TrainConfig.field_names() if n not in RESERVED]
    fixed_dists = _fields("fixed", doc.get("fixed"), trainable, None)
    fixed = {k: d.values[0] for k, d in fixed_dists.items() if d.kind == "const"}
    if len(fixed) != len(fixed_dists):
        raise SpaceError("fixed: values must be constants (use params: for distributions)")
    branches_doc = doc.get("arch")
    if not isinstance(branches_doc, dict) or not branches_doc:
        raise SpaceError(f"arch: expected a mapping of architecture names ({sorted(MODELS)})")
    branches = {}
    for arch, block in branches_doc.items():
        if arch not in MODELS:
            raise SpaceError(f"arch.{arch}: unknown architecture; valid: {sorted(MODELS)}")
        branches[arch] = _fields(f"arch.{arch}", block, model_param_names(arch), arch)
    shared_allowed = [n for n in trainable if not any(n in b for b in branches.values())]
    shared = _fields("params", doc.get("params"), shared_allowed, None)
    points = _points(doc.get("points_to_evaluate") or [], shared, branches, fixed)
    return SearchSpace(path, settings, fixed, shared, branches, points)


def _settings(block: Any) -> dict[str, Any]:
    if not isinstance(block, dict):
        raise SpaceError("settings: expected a mapping")
    unknown = set(block) - set(SETTINGS_DEFAULTS)
    if unknown:
        raise SpaceError(
            f"settings.{sorted(unknown)[0]}: unknown key; allowed: {sorted(SETTINGS_DEFAULTS)}"
        )
    settings = {**SETTINGS_DEFAULTS, **block}
    if settings["mode"] not in ("max", "min"):
        raise SpaceError(f"settings.mode: {settings['mode']!r}; allowed: max, min")
    for key in ("metric", "asha_metric"):
        if settings[key] in REPORT_ONLY:
            raise SpaceError(
                f"settings.{key}: {settings[key]!r} is reported, never selected on (the test "
                "set only reports); use val_acc or val_acc_avg3"
            )
        if settings[key] is not None and settings[key] not in METRICS:
            raise SpaceError(f"settings.{key}: {settings[key]!r}; allowed: {sorted(METRICS)}")
    if not (isinstance(settings["val_size"], int) and settings["val_size"] >= MIN_VAL_SIZE):
        raise SpaceError(
            f"settings.val_size: {settings['val_size']!r}; the search selects on held-out "
            f"training images: an integer >= {MIN_VAL_SIZE} (5000 is the default)"
        )
    for key in ("epochs", "grace_period", "samples", "max_params", "seeds_per_trial"):
        if not isinstance(settings[key], int) or settings[key] < 1:
            raise SpaceError(f"settings.{key}: {settings[key]!r}; must be an integer >= 1")
    if settings["grace_period"] > settings["epochs"]:
        raise SpaceError("settings.grace_period: must be <= settings.epochs")
    if not settings["reduction_factor"] > 1:
        raise SpaceError("settings.reduction_factor: must be > 1")
    if settings["cpu_step"] != "auto" and settings["cpu_step"] not in CPU_STEPS:
        raise SpaceError(
            f"settings.cpu_step: {settings['cpu_step']!r}; allowed: auto, {', '.join(CPU_STEPS)}"
        )
    if not isinstance(settings["pareto"], bool):
        raise SpaceError(f"settings.pareto: {settings['pareto']!r}; must be true or false")
    if not (isinstance(settings["target_acc"], (int, float)) and 0 < settings["target_acc"] <= 100):
        raise SpaceError("settings.target_acc: a percentage in (0, 100]")
    try:
        rungs.check(settings)
    except ConfigError as exc:
        raise SpaceError(f"settings.{exc}") from None
    run_keys = ("epochs", "val_size", "train_subset", "test_subset")
    try:
        TrainConfig.from_dict({k: settings[k] for k in run_keys})
        TrainConfig(cohort=settings["seeds_per_trial"])
    except ConfigError as exc:
        raise SpaceError(f"settings: {exc}") from None
    return settings


def _points(points: Any, shared, branches, fixed) -> list[dict[str, Any]]:
    if not isinstance(points, list):
        raise SpaceError("points_to_evaluate: expected a list of mappings")
    for i, point in enumerate(points):
        where = f"points_to_evaluate[{i}]"
        if not isinstance(point, dict) or point.get("arch") not in branches:
            raise SpaceError(f"{where}: needs arch: one of {sorted(branches)}")
        searched = {n for n, d in shared.items() if d.kind != "const"}
        searched |= {n for n, d in branches[point["arch"]].items() if d.kind != "const"}
        extra = set(point) - searched - {"arch"}
        if extra:
            raise SpaceError(
                f"{where}.{sorted(extra)[0]}: not a searched parameter of arch "
                f"{point['arch']}; searched: {sorted(searched)}"
            )
        try:
            TrainConfig.from_dict({**fixed, **point})
        except ConfigError as exc:
            raise SpaceError(f"{where}: {exc}") from None
        for name, value in point.items():
            dist = shared.get(name) or branches[point["arch"]].get(name)
            if dist and dist.kind in ("uniform", "loguniform", "int"):
                low, high = dist.values
                if not (low <= value <= high) or (isinstance(value, float) and math.isnan(value)):
                    raise SpaceError(f"{where}.{name}: {value} outside [{low}, {high}]")
            elif dist and dist.kind == "choice" and value not in dist.values:
                raise SpaceError(f"{where}.{name}: {value!r} not in {list(dist.values)}")
    return points
