"""Reading a search-space file: YAML with no duplicate keys, every block checked against
TrainConfig and the models before anything runs, into a `SearchSpace` (tune_mnist.search.space
has the format)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from tune_mnist.search import rungs
from tune_mnist.search.space import (
    KINDS,
    METRICS,
    MIN_VAL_SIZE,
    PROMOTIONS,
    REPORT_ONLY,
    RESERVED,
    SETTINGS_DEFAULTS,
    TOP_KEYS,
    Dist,
    SearchSpace,
    SpaceError,
    arch_of,
    constants,
    settled,
)
from tune_mnist.train.config import (
    CPU_STEPS,
    ConfigError,
    TrainConfig,
)
from tune_mnist.train.models import MODELS, model_param_names


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
    for branch, block in branches_doc.items():
        arch = arch_of(str(branch))
        if not re.fullmatch(r"[a-z0-9_]+(-[a-z0-9_]+)?", str(branch)):
            raise SpaceError(
                f"arch.{branch}: a branch is an architecture's name or <arch>-<name> "
                "(lowercase letters, digits, _)"
            )
        if arch not in MODELS:
            raise SpaceError(
                f"arch.{branch}: unknown architecture; valid: {sorted(MODELS)} "
                "(a variant: <arch>-<name>)"
            )
        branches[branch] = _fields(f"arch.{branch}", block, model_param_names(arch), arch)
    _check_variants(branches, fixed)
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
    if settings["promotion"] not in PROMOTIONS:
        raise SpaceError(
            f"settings.promotion: {settings['promotion']!r}; allowed: {', '.join(PROMOTIONS)}"
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


def _check_variants(branches: dict[str, dict[str, Dist]], fixed: dict[str, Any]) -> None:
    """Branches of one architecture must differ in a constant: a trial's row holds its
    model, not its branch, and the constants tell the branch back (SearchSpace.branch_of)."""
    groups: dict[str, list[str]] = {}
    for branch in sorted(branches):
        groups.setdefault(arch_of(branch), []).append(branch)
    for arch, group in groups.items():
        keys = sorted({k for b in group for k in constants(branches[b])})
        seen: dict[tuple, str] = {}
        for branch in group:
            told = settled(constants(branches[branch]), fixed, keys)
            if told in seen:
                raise SpaceError(
                    f"arch.{branch}: a variant of {arch} needs a constant that differs from "
                    f"arch.{seen[told]}'s (e.g. separable_late: true)"
                )
            seen[told] = branch


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
        own = constants(branches[point["arch"]])
        try:
            TrainConfig.from_dict({**fixed, **own, **point, "arch": arch_of(point["arch"])})
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
