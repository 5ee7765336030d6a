"""A search that starts from another's trials: `scripts/search.py --warm-start results/<name>`.

Optuna's study is told every recorded trial of the earlier search first, with the value that
search's sampler was told: its first-rung figure where promotions wait for the search's end
(tune_mnist.search.screen), else its last figure; an over-budget trial the worst value, as it
was reported. TPE then models the space from those trials at once, where a cold study spends
its first trials on random draws. Ray's OptunaSearch takes the filled study through its public
`storage` and `study_name` arguments; Ray keeps the study in the searcher's saved state, so a
resumed search keeps its warm start without reading the source again.

Each recorded trial is replayed through the new search's space: a trial that space cannot hold
(another architecture, a value outside its ranges) is left out and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune_mnist.search import rungs
from tune_mnist.search.optuna_journal import views_from_tables
from tune_mnist.search.plan import UsageError
from tune_mnist.tables import TableError, read_parquet

STUDY = "warm"  # the study's name in its in-memory storage
FAILED = {"diverged", "error", "lost"}  # told to Optuna as failures: nothing to learn from


@dataclass
class Warm:
    source: str  # the results folder, as the record names it
    storage: Any  # optuna InMemoryStorage holding the study `STUDY`
    told: int  # trials the study was given
    left_out: int  # recorded trials the new space cannot hold, or with no figure

    def record(self) -> dict:
        return {"from": self.source, "trials": self.told, "left_out": self.left_out}


def warm_study(folder: Path, space, shown: str) -> Warm:
    """The study of `folder`'s recorded trials as the new search's sampler would have been
    told them; UsageError when the folder holds no trial it can use."""
    import optuna  # lazy: Optuna loads only where a study is read or written

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per study made in memory
    try:
        trials = read_parquet(folder / "trials.parquet")
        epochs = read_parquet(folder / "epochs.parquet")
    except (OSError, TableError) as exc:
        raise UsageError(
            f"--warm-start {shown}: not a finished search's folder ({exc}); pass results/<name>"
        ) from None
    settings = space.settings
    directions = [settings["mode"] + "imize"] + (["minimize"] if settings["pareto"] else [])
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name=STUDY, storage=storage, directions=directions)
    status = dict(zip(trials["trial_id"], trials["status"], strict=True))
    params = dict(zip(trials["trial_id"], trials["params"], strict=True))
    told = 0
    for view in views_from_tables(space, trials, epochs):
        value = told_value(view.results, status[view.trial_id], settings)
        trial = _frozen(space, view.config, value, params[view.trial_id], settings)
        if trial is not None:
            study.add_trial(trial)
            told += 1
    if not told:
        raise UsageError(
            f"--warm-start {shown}: none of its {len(trials)} trials fits this search's space "
            "(another space or budget); warm-start from a search of the same space"
        )
    return Warm(shown, storage, told, len(trials) - told)


def warm_line(warm: Warm) -> str:
    """`warm start: Optuna is told the 64 trials of results/<name> first`."""
    left = f" ({warm.left_out} left out: failed, or outside this space)" if warm.left_out else ""
    return f"warm start: Optuna is told the {warm.told} trials of {warm.source} first{left}"


def told_value(results: list[dict], status: str, settings: dict) -> float | None:
    """The figure the earlier search's sampler was told for a trial (None: a failure)."""
    metric = settings["metric"]
    if status == "over_budget":
        return 0.0 if settings["mode"] == "max" else float("inf")
    if status in FAILED or not results:
        return None
    time_attr, ends, _ = rungs.milestones(settings)
    if settings.get("promotion") != "end" or not ends:  # told when the trial ended
        return float(results[-1][metric])
    # told at the first rung's end (screen.ScreenSearch), else where the trial ended
    if time_attr == rungs.LEVEL:  # the tables keep each figure's rung, not its level
        first = [r for r in results if int(r.get("rung") or 0) == 0]
    else:
        first = [r for r in results if int(r["epoch"]) <= ends[0]]
    return float((first or results)[-1][metric])


def _frozen(space, config: dict, value: float | None, params: int, settings: dict):
    """The trial as an Optuna FrozenTrial of the new space, or None where the space cannot
    replay it or it has no figure."""
    from optuna.trial import FixedTrial, TrialState, create_trial

    if value is None or value != value:
        return None
    replay = FixedTrial(config)
    try:
        space.define_by_run(replay)
        values = [value] + ([float(params)] if settings["pareto"] else [])
        return create_trial(
            state=TrialState.COMPLETE,
            params={k: config[k] for k in replay.distributions},
            distributions=replay.distributions,
            values=values,
        )
    except (ValueError, KeyError, TypeError):  # another space's trial, or out of its ranges
        return None
