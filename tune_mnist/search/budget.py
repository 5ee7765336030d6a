"""A space shaped to a parameter budget (`--max-params N`), and the share of its draws that
would be over it.

A space's widths are written for its own `settings.max_params`. For another budget N every
width range (`width1`..`width5`, `squeeze_width`) is scaled by sqrt(N / max_params), since a
conv's parameters grow with the product of its two widths; an architecture of fixed size
that is over N (the reference three) leaves the space, and so does a listed point that no
longer fits the box. The share over budget is then measured, not assumed: 400 random draws
from the shaped space, each model built and counted (nothing trained).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tune_mnist import rule
from tune_mnist.search.space import SETTINGS_DEFAULTS, SearchSpace, SpaceError, arch_of
from tune_mnist.search.space_file import read_yaml
from tune_mnist.train.config import TrainConfig
from tune_mnist.train.models import build_from_config, count_params

WIDTHS = ("width1", "width2", "width3", "width4", "width5", "squeeze_width")
DRAWS = 400
MAX_OVER = 0.20  # a shaped space should waste at most this share of its trials


def _scale(spec: Any, factor: float) -> Any:
    if isinstance(spec, int) and not isinstance(spec, bool):
        return min(64, max(2, round(spec * factor)))
    if isinstance(spec, dict) and "int" in spec:
        low, high = (min(64, max(2, round(v * factor))) for v in spec["int"])
        return {**spec, "int": [low, max(low, high)]}
    return spec


def _fits(point: dict, branch: dict) -> bool:
    for name, spec in branch.items():
        if name in point and isinstance(spec, dict) and "int" in spec:
            low, high = spec["int"]
            if not low <= point[name] <= high:
                return False
    return True


def shaped_doc(doc: dict, max_params: int) -> tuple[dict, float]:
    """(the space's YAML mapping shaped to `max_params`, the width factor)."""

    settings = dict(doc.get("settings") or {})
    written = settings.get("max_params", SETTINGS_DEFAULTS["max_params"])
    factor = math.sqrt(max_params / written)
    branches = {}
    for arch, block in (doc.get("arch") or {}).items():
        block = dict(block or {})
        if any(name in block for name in WIDTHS):
            branches[arch] = {k: _scale(v, factor) if k in WIDTHS else v for k, v in block.items()}
        elif rule.within(
            count_params(build_from_config(TrainConfig(arch=arch_of(arch)))), max_params
        ):
            branches[arch] = block  # a fixed-size model: kept only where it fits
    if not branches:
        raise SpaceError(f"--max-params {max_params}: no architecture of the space fits")
    points = [
        p
        for p in doc.get("points_to_evaluate") or []
        if p.get("arch") in branches and _fits(p, branches[p["arch"]])
    ]
    out = {**doc, "settings": {**settings, "max_params": max_params}, "arch": branches}
    out["points_to_evaluate"] = points
    return out, factor


def shaped_file(path: Path, max_params: int) -> tuple[Path, float]:
    """The space at `path` shaped to `max_params`, written to a temporary YAML file (the
    search keeps a copy in its results folder, as for any space)."""
    try:
        doc = read_yaml(path)
    except (OSError, yaml.YAMLError):
        return path, 1.0  # load_space gives the one-line reason
    if not isinstance(doc, dict):
        return path, 1.0
    out, factor = shaped_doc(doc, max_params)
    note = f" Shaped to {max_params:,} parameters by --max-params (widths x{factor:.2f})."
    out["description"] = str(out.get("description") or "").strip() + note
    handle = tempfile.NamedTemporaryFile(
        "w", suffix=f"-{path.stem}.yaml", prefix="space-", delete=False
    )
    with handle:
        yaml.safe_dump(out, handle, sort_keys=False)
    return Path(handle.name), factor


def over_budget_share(space: SearchSpace, draws: int = DRAWS, seed: int = 0) -> float:
    """The share of `draws` uniform random configurations of `space` over its budget."""
    import optuna  # lazy: Optuna loads only where a study is read or written

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    over = 0
    for _ in range(draws):
        trial = study.ask()
        constants = space.define_by_run(trial)
        config = space.train_config({**trial.params, **constants}, device="cpu")
        over += not rule.within(
            count_params(build_from_config(config)), space.settings["max_params"]
        )
        study.tell(trial, 0.0)
    return over / draws
