"""Every confirmed seed across a results folder, in one call, for a pandas user:

    from tune_mnist.confirmed import confirmed_rows
    seeds = confirmed_rows()             # results/ (or $TUNE_MNIST_RESULTS), or a folder
    seeds.groupby(["experiment", "trial_id"])["final_test_acc"].agg(["mean", "min"])

One row per seed of each full-data confirmation (`confirmations.parquet`; docs/tables.md has
its columns), with `experiment` (the search's folder name) and `passes`: whether that
model passes the README's rule (`tune_mnist.rule`), the verdict the leaderboard prints.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tune_mnist import rule
from tune_mnist.paths import results_root
from tune_mnist.tables import read_parquet

MODEL = ["experiment", "trial_id", "epochs"]  # one published model: its seeds share these


def last_seeds(rows: pd.DataFrame, trial_id: str, seeds: int = 0) -> pd.DataFrame:
    """One trial's confirmed seeds, each as its latest row (a seed confirmed again counts
    once), the last `seeds` of them (0: all)."""
    mine = rows[rows["trial_id"] == trial_id].drop_duplicates("seed", keep="last")
    return mine.tail(seeds) if seeds else mine


def confirmed_rows(root: str | Path | None = None) -> pd.DataFrame:
    """Every full-data confirmed seed under `root` (default: the results folder); an empty
    frame when there is none. A damaged table raises tables.TableError, naming it."""
    root = results_root() if root is None else Path(root)
    frames = []
    for path in sorted(root.glob("*/confirmations.parquet")):
        rows = read_parquet(path)
        rows.insert(0, "experiment", path.parent.name)
        frames.append(rows)
    if not frames:
        return pd.DataFrame(columns=[*MODEL, "seed", "selected_on", "passes"])
    seeds = pd.concat(frames, ignore_index=True)
    # a confirmation on a subset of the training or test images (--smoke) is a plumbing
    # check, never a figure
    for column in ("train_subset", "test_subset"):
        if column in seeds:
            seeds = seeds[seeds[column].fillna(0) == 0]
    # a seed confirmed twice counts once: the later run (same config, same seed)
    seeds = seeds.drop_duplicates([*MODEL, "seed"], keep="last").reset_index(drop=True)
    seeds["passes"] = False
    for _, group in seeds.groupby(MODEL, sort=False):
        seeds.loc[group.index, "passes"] = model_passes(group)
    return seeds


def chosen_on(selected_on: str) -> str:
    """`val`: picked on held-out training images; `test`: a search from before the split."""
    return "val" if selected_on == "val_acc" else "test"


def model_passes(group: pd.DataFrame) -> bool:
    """The README's rule over one model's seed rows."""
    return rule.passes(
        seeds=int(group["seed"].nunique()),
        min_acc=float(group["final_test_acc"].min()),
        completed=bool((group["status"] == "completed").all()),
        params=int(group["params"].iloc[0]),
        selected_on=chosen_on(group["selected_on"].iloc[0]),
    )
