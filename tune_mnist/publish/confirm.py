"""Confirm a search's winners: retrain each over several seeds, from its parquet row alone.

A search's best trial is one seed chosen on the validation images (held out of the training
set); this module retrains it on all 60,000 training images with fresh seeds, writes the
weights and a model card to results/<name>/best/, and appends one row per seed to
results/<name>/confirmations.parquet, so later analyses see who held up, and one row per seed
and epoch to confirmation_epochs.parquet (the curves behind each final number). The test set
only reports: nothing here ranks on it.
"""

from __future__ import annotations

import shlex
import statistics
import time
from pathlib import Path
from typing import Any

import pandas as pd

from tune_mnist import rule
from tune_mnist.publish.seeds import SeedRun
from tune_mnist.train.config import TrainConfig


class InputError(ValueError):
    """No results, no passing trial, unreadable parquet...: exit status 2, one line."""


def newest_experiment(results_root: Path) -> Path:
    """The search run most recently on this machine: a search leaves its lock file in
    results/.locks (never committed), so a folder that came with a checkout is never picked
    by chance; without one, a one-line refusal naming the folders there are."""
    mine = [
        (lock.stat().st_mtime, results_root / lock.stem)
        for lock in results_root.glob(".locks/*.lock")
        if (results_root / lock.stem / "trials.parquet").is_file()
    ]
    if mine:
        return max(mine)[1]
    found = sorted(p.parent.name for p in results_root.glob("*/trials.parquet"))
    if not found:
        raise InputError(f"no experiment under {results_root}: run scripts/search.py first")
    shown = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
    raise InputError(
        f"no search was run here under {results_root}; pass --results results/<name> "
        f"(there are: {shown})"
    )


def selection_of(frame: pd.DataFrame | pd.Series) -> str:
    """What a search's rows were chosen on: "val_acc", or "test_acc" for the searches made
    before the validation split (no validation figures in their tables)."""
    values = pd.Series(frame.get("final_val_acc"), dtype="float64")  # a row or a table
    return "val_acc" if values.notna().any() else "test_acc"


def pick(passing: pd.DataFrame, rank: str, top: int) -> pd.DataFrame:
    """`accuracy`: highest final validation accuracy, ties to fewer params; `params`: smallest
    first. Never the test accuracy: a search from before the validation split has nothing to
    rank on, so its trials are confirmed by name (--trials)."""
    if selection_of(passing) != "val_acc":
        raise InputError(
            "this search has no validation accuracies (it predates the validation split and "
            "was chosen on test): confirm named trials with --trials, or rerun the search"
        )
    if rank == "accuracy":
        order = passing.sort_values(["final_val_acc", "params"], ascending=[False, True])
    else:
        order = passing.sort_values(["params", "final_val_acc"], ascending=[True, False])
    return order.head(top).reset_index(drop=True)


def seed_summary(runs: list[SeedRun], target: float, max_params: int) -> dict[str, Any]:
    accs = [r.final_test_acc for r in runs]
    return {
        "target_acc": target,
        "max_params": max_params,
        "seeds": [r.seed for r in runs],
        "final_test_acc": accs,
        "mean_test_acc": statistics.fmean(accs),
        "std_test_acc": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "min_test_acc": min(accs),
        "all_seeds_passed": all(a >= target for a in accs)
        and all(r.status == "completed" for r in runs)
        and rule.within(runs[0].params, max_params),
        "train_seconds": [r.seconds for r in runs],
    }


def confirmation_rows(row, rank, runs, summary, config, prov) -> list[dict[str, Any]]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    out = []
    for run in runs:
        # cohort + cohort_first rebuild how it was trained: alone, or fused with its cohort
        values = {**config.to_dict(), "seed": run.seed, "device": run.device}
        values |= {"node_id": run.node_id}
        values |= {"cohort": run.cohort, "cohort_first": run.cohort_first}
        out.append(
            {
                "trial_id": row["trial_id"],
                "rank": rank,
                **values,
                "params": run.params,
                "status": run.status,
                "final_test_acc": run.final_test_acc,
                "passed": bool(run.final_test_acc >= summary["target_acc"]),
                "all_seeds_passed": summary["all_seeds_passed"],
                "search_test_acc": float(row["final_test_acc"]),
                "search_val_acc": float(row.get("final_val_acc", float("nan"))),
                "selected_on": selection_of(row),
                "train_s": run.seconds,
                "confirmed_at": stamp,
                **prov,
            }
        )
    return out


def confirmation_epoch_rows(
    confirmations: list[dict[str, Any]], runs: list[SeedRun]
) -> list[dict[str, Any]]:
    """One row per seed and epoch, keyed like its confirmation row (trial, seed, time)."""
    out = []
    for confirmation, run in zip(confirmations, runs, strict=True):
        key = {k: confirmation[k] for k in ("trial_id", "seed", "confirmed_at")}
        out.extend({**key, **metrics} for metrics in run.history)
    return out


def reproduce_command(
    results: str,
    trial_id: str,
    seeds: int,
    threads: int,
    epochs=None,
    subsets=(0, 0),
    cpu_step: str | None = None,
) -> str:
    """The retrain_best.py call that trains these seeds again with the same numbers: the
    thread count is part of it (1 and 2 threads give different sums, so other accuracies),
    and so are the image subsets of a quick look (0, 0: all images, not written) and the CPU
    step variant (None: a run on a GPU)."""
    parts = ["python", "scripts/retrain_best.py", "--results", results, "--trials", trial_id]
    parts += ["--seeds", str(seeds), "--threads", str(threads)]
    if epochs:
        parts += ["--epochs", str(epochs)]
    if cpu_step:
        parts += ["--cpu-step", cpu_step]
    for flag, size in zip(("--train-subset", "--test-subset"), subsets, strict=True):
        if size:
            parts += [flag, str(size)]
    return shlex.join(parts)


def train_command(config: TrainConfig) -> str:
    """`python -m tune_mnist.train ...` with every field that differs from the defaults."""
    default = TrainConfig()
    parts = ["python", "-m", "tune_mnist.train.command", "--arch", config.arch]
    for name, value in config.to_dict().items():
        if name in ("arch", "device") or value == getattr(default, name):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)
