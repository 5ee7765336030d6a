"""What a search-race-confirm chain cost, in core-minutes, read back from its tables.

Two figures, because they answer two questions. Training: the seconds each run spent in its
own loop (trials.parquet, race_runs.parquet, confirmations.parquet), summed; it counts every
core a run held (`threads`), and a resumed search keeps its earlier trials' seconds. Held: the
search's slots times its wall clock (summary.json), which adds Ray's start-up, trials waiting
at a rung and idle slots, summed over the search's invocations (a resume adds its own).
A search warm-started from another (`--warm-start`) adds all that one trained: it learned
from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tune_mnist.confirmed import last_seeds
from tune_mnist.search.summary import totals
from tune_mnist.tables import read_parquet

TABLES = ("trials.parquet", "race_runs.parquet", "confirmations.parquet")  # what trains


def _core_s(path: Path, trial_id: str | None = None, seeds: int = 0) -> float:
    """Training core-seconds recorded in one table (0 when it does not exist)."""
    if not path.is_file():
        return 0.0
    rows = read_parquet(path)
    if "train_s" not in rows:  # a table from before runs recorded their seconds
        return 0.0
    if trial_id is not None:
        rows = last_seeds(rows, trial_id, seeds)
    threads = rows["threads"] if "threads" in rows else pd.Series(1, index=rows.index)
    return float((rows["train_s"].fillna(0) * threads.fillna(1).clip(lower=1)).sum())


def chain_cost(
    folder: Path, pick: str | None = None, seeds: int = 0, later: list[Path] | None = None
) -> dict[str, float]:
    """Core-minutes of the search, the race and the confirmation of `pick` (its last
    `seeds` seeds) in `folder`, of the searches it warm-started from and of the chain's
    `later` stages (each one's own), and the search's held core-minutes and wall minutes."""
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    wall_s, held_s = totals(summary)
    cost = {
        "search": _core_s(folder / "trials.parquet") / 60,
        "race": _core_s(folder / "race_runs.parquet") / 60,
        "confirmation": 0.0,
        "search_wall": wall_s / 60,
        "search_held": held_s / 60,
    }
    if pick is not None:
        cost["confirmation"] = _core_s(folder / "confirmations.parquet", pick, seeds) / 60
    source = warm_source(folder)
    cost["warm"] = _spent(source) if source is not None else 0.0
    cost["later"] = sum(_own(f) for f in later or [] if f.resolve() != folder.resolve())
    parts = ("search", "race", "confirmation", "warm", "later")
    cost["total"] = sum(cost[k] for k in parts)
    return cost


def warm_source(folder: Path) -> Path | None:
    """The search a `--warm-start` search started from (search.json's `warm_start`, named
    relative to the folder holding the results root), or None."""
    try:
        meta = json.loads((folder / "search.json").read_text())
    except (OSError, ValueError):  # no record (a table-only folder): nothing before it
        return None
    named = (meta.get("warm_start") or {}).get("from")
    if not named:
        return None
    source = Path(named) if Path(named).is_absolute() else folder.parent.parent / named
    return source if source.resolve() != folder.resolve() else None


def _spent(folder: Path, depth: int = 0) -> float:
    """Core-minutes of everything a search it started from trained: its search, its race,
    every confirmation, and its own warm source's (a chain of warm starts, 10 at most)."""
    source = warm_source(folder) if depth < 10 else None
    return _own(folder) + (_spent(source, depth + 1) if source is not None else 0.0)


def _own(folder: Path) -> float:
    """Core-minutes of what one search's folder trained: search, race, confirmations."""
    return sum(_core_s(folder / name) for name in TABLES) / 60


def cost_line(cost: dict[str, float]) -> str:
    """`cost: 187 core-minutes of training (search 154, race 20, confirmation 17); ...`"""
    warm = cost.get("warm", 0.0)
    before = f", the search it warm-started from {warm:.0f}" if warm else ""
    later = cost.get("later", 0.0)
    before += f", the chain's later warm stages {later:.0f}" if later else ""
    return (
        f"cost: {cost['total']:.0f} core-minutes of training (search {cost['search']:.0f}, "
        f"race {cost['race']:.0f}, confirmation {cost['confirmation']:.0f}{before}); the search "
        f"held {cost['search_held']:.0f} core-minutes ({cost['search_wall']:.1f} min wall)"
    )
