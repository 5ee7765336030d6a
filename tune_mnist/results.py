"""Search results as parquet: trials.parquet, epochs.parquet, passing.parquet.

The tables are rebuilt from the search's journal (tune_mnist.search.journal) whenever a trial ends,
and written atomically (temp file, then rename), so a reader never sees half a file and a
crash loses nothing that was journaled. `load(path)` returns them as DataFrames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tune_mnist import rule
from tune_mnist.fidelity import FULL, parse
from tune_mnist.tables import read_parquet, write_parquet
from tune_mnist.train.config import TrainConfig

EPOCH_COLUMNS = [
    "trial_id",
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    # a cohort trial's members (settings.seeds_per_trial > 1; empty for one seed): the
    # accuracies above are then their means, these their min, std and per-seed lists
    "val_acc_min",
    "val_acc_std",
    "val_acc_seeds",
    "test_acc_min",
    "test_acc_seeds",
    "lr",
    "epoch_s",
    "params",
    "diverged",
    "start_epoch",
    # trained before a kill, reported after it from the checkpoint's copy of the report
    "replayed",
    "graphed",  # its full batches ran from a captured CUDA graph (False on CPU; steps.py)
    "precision",  # what its steps ran in: fp32 or bf16 (bf16 falls back where unsupported)
    "node_id",  # the Ray node that trained the epoch (a retried trial may change node)
    # the run the epoch belongs to (settings.rungs; tune_mnist.fidelity): full, or a cheaper
    # rung such as compressed3; its index, and the epoch within that run (`epoch` counts
    # the trial's epochs across rungs)
    "fidelity",
    "rung",
    "rung_epoch",
]
_DTYPES = {"bool": "bool", "int": "int64", "float": "float64", "str": "string"}


@dataclass
class Results:
    trials: pd.DataFrame
    epochs: pd.DataFrame
    passing: pd.DataFrame
    confirmations: pd.DataFrame | None
    path: Path


def epoch_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch; a resumed trial may have logged an epoch twice (reported, then
    killed before Ray saved its state): the last one wins."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for row in results:
        epoch = row.get("epoch")
        if epoch is not None and epoch == epoch and epoch >= 1:  # epoch == epoch: not NaN
            by_epoch[int(epoch)] = {k: row.get(k) for k in EPOCH_COLUMNS[1:]}
            by_epoch[int(epoch)]["replayed"] = bool(row.get("replayed", False))
            by_epoch[int(epoch)]["graphed"] = bool(row.get("graphed", False))
            by_epoch[int(epoch)]["fidelity"] = row.get("fidelity") or FULL
            by_epoch[int(epoch)]["rung"] = int(row.get("rung") or 0)
            by_epoch[int(epoch)]["rung_epoch"] = int(row.get("rung_epoch") or epoch)
    return [by_epoch[e] for e in sorted(by_epoch)]


def trial_status(ray_status: str, last: dict[str, Any], epochs: list[dict], max_epochs: int):
    """completed, asha_stopped, over_budget, diverged, error; running / pending while the
    search runs; interrupted when a Ctrl-C or a kill stopped it (`--resume` continues it);
    lost when a kill came before Ray's state named it (never resumable).
    Only `completed` is a full run that may pass."""
    if ray_status == "ERROR":
        return "error"
    if ray_status == "LOST":
        return "lost"
    if ray_status in ("PENDING", "PAUSED"):
        return "pending"
    if ray_status == "INTERRUPTED":
        return "interrupted"
    if last.get("over_budget"):
        return "over_budget"
    if any(e.get("diverged") for e in epochs):
        return "diverged"
    if ray_status == "RUNNING":
        return "running"
    return "completed" if len(epochs) >= max_epochs else "asha_stopped"


@dataclass
class TrialView:
    """What a results row needs of a trial (built from its journal, tune_mnist.search.writer)."""

    trial_id: str
    status: str  # Ray's PENDING, RUNNING, PAUSED, TERMINATED, ERROR; or INTERRUPTED
    config: dict[str, Any]
    last_result: dict[str, Any]
    results: list[dict[str, Any]]  # everything the trial reported, in order
    error: str = ""
    provenance: dict[str, str] = field(default_factory=dict)  # of the driver that started it


def trial_row(trial: TrialView, space, cpus: int, provenance: dict) -> tuple[dict, list[dict]]:
    settings = space.settings
    epochs = epoch_rows(trial.results)
    last = trial.last_result or {}
    status = trial_status(trial.status, last, epochs, space.trial_epochs)
    device = last.get("device") or "cpu"
    config = space.train_config(trial.config, device=device, threads=cpus)
    # selection figures come from the validation images; the test figure is only reported
    vals = [float("nan") if e.get("val_acc") is None else e["val_acc"] for e in epochs]
    best = max(range(len(vals)), key=lambda i: _or_low(vals[i])) if vals else None
    final_val = vals[-1] if vals else float("nan")
    # every seed of a cohort must reach the target: its worst member decides
    worst = epochs[-1].get("val_acc_min") if epochs else None
    final_min = final_val if worst is None else worst
    params = int(last.get("params") or (epochs[-1]["params"] if epochs else -1))
    row = {
        "trial_id": trial.trial_id,
        "status": status,
        **config.to_dict(),
        "params": params,
        "epochs_run": len(epochs),
        "final_val_acc": final_val,
        "best_val_acc": vals[best] if vals else float("nan"),
        "best_epoch": best + 1 if vals else 0,  # by validation accuracy
        "final_val_acc_min": final_min,  # = final_val_acc for one seed
        "final_test_acc": epochs[-1]["test_acc"] if epochs else float("nan"),
        "final_test_acc_seeds": epochs[-1].get("test_acc_seeds") if epochs else None,
        "passed": bool(
            status == "completed"
            and final_min >= settings["target_acc"]
            and rule.within(params, settings["max_params"])
        ),
        "train_s": float(sum(e["epoch_s"] or 0 for e in epochs)),
        # what its full run alone takes (or would have): full_fidelity_share's denominator
        "full_fidelity_s": full_run_s(epochs, settings["epochs"]),
        # over budget: the trainable's own clock (Ray's also counts the worker's start-up)
        "wall_s": float(last.get("trial_s") or last.get("time_total_s") or 0.0),
        "error": trial.error if status == "error" else "",
        # where it ran last: Ray's node and the share of a GPU it held (0: CPU trial)
        "node_id": last.get("node_id") or "",
        "gpu_share": float(last.get("gpu_share") or 0.0),
        **provenance,
        **trial.provenance,  # a resumed search keeps each trial's own
    }
    return row, [{"trial_id": trial.trial_id, **e} for e in epochs]


def full_run_s(epochs: list[dict], full_epochs: int) -> float:
    """Seconds of a full run of the trial: its median epoch at all its images (a subset
    rung's epochs scaled up), times the full run's epochs; 0 when it trained nothing."""
    per_epoch = []
    for e in epochs:
        kind, amount = parse(e.get("fidelity") or FULL)
        share = amount / 100 if kind == "subset" else 1.0
        per_epoch.append((e.get("epoch_s") or 0.0) / share)
    return float(pd.Series(per_epoch).median() * full_epochs) if per_epoch else 0.0


def _or_low(value: float) -> float:
    """A NaN accuracy (no validation images) ranks below every real one."""
    return value if value == value else float("-inf")


def build_tables(trials, space, cpus: int, provenance: dict[str, str]):
    rows, epoch_rows = [], []
    for trial in trials:
        row, epochs = trial_row(trial, space, cpus, provenance)
        rows.append(row)
        epoch_rows.extend(epochs)
    trials_df = typed_trials(pd.DataFrame(rows))
    if len(trials_df):
        trials_df["on_front"] = on_front(trials_df)
    epochs_df = pd.DataFrame(epoch_rows, columns=EPOCH_COLUMNS).astype(
        {
            "trial_id": "string",
            "epoch": "int64",
            "params": "int64",
            "diverged": "bool",
            "start_epoch": "int64",
            "replayed": "bool",
            "graphed": "bool",
            "precision": "string",
            "node_id": "string",
        }
    )
    passing = trials_df[trials_df["passed"]].sort_values(
        ["params", "final_val_acc"], ascending=[True, False]
    )
    return trials_df, epochs_df, passing.reset_index(drop=True)


def on_front(trials: pd.DataFrame) -> pd.Series:
    """Completed trials that no other completed trial matches or beats on both final
    validation accuracy (a cohort's mean) and parameter count: the trade-offs found."""
    done = trials[(trials["status"] == "completed") & trials["final_val_acc"].notna()]
    params, acc = done["params"], done["final_val_acc"]
    front = pd.Series(False, index=trials.index)
    for index, row in done.iterrows():
        no_worse = (params <= row["params"]) & (acc >= row["final_val_acc"])
        better = (params < row["params"]) | (acc > row["final_val_acc"])
        front[index] = not (no_worse & better).any()
    return front


def typed_trials(frame: pd.DataFrame) -> pd.DataFrame:
    """Every config field as its own typed column (not object), whatever the row order."""
    types = {f: _DTYPES[t] for f, t in TrainConfig.__annotations__.items()}
    types |= {
        "trial_id": "string",
        "status": "string",
        "params": "int64",
        "epochs_run": "int64",
        "best_epoch": "int64",
        "passed": "bool",
        "error": "string",
        "node_id": "string",
        "gpu_share": "float64",
    }
    present = {k: v for k, v in types.items() if k in frame.columns}
    return frame.astype(present)


def write_tables(folder: Path, trials_df, epochs_df, passing) -> list[Path]:
    """trials.parquet goes last: a reader (or a kill between two files) that finds it always
    finds epochs and passing tables at least as new beside it, never missing ones."""
    paths = [folder / "epochs.parquet", folder / "passing.parquet", folder / "trials.parquet"]
    for path, frame in zip(paths, (epochs_df, passing, trials_df), strict=True):
        write_parquet(path, frame)
    return paths


def load(path: str | Path) -> Results:
    """The tables of one experiment folder (results/<name>) as DataFrames."""
    folder = Path(path)
    if not (folder / "trials.parquet").is_file():
        raise FileNotFoundError(f"{folder}: no trials.parquet; run scripts/search.py first")
    confirmations = folder / "confirmations.parquet"
    return Results(
        trials=read_parquet(folder / "trials.parquet"),
        epochs=read_parquet(folder / "epochs.parquet"),
        passing=read_parquet(folder / "passing.parquet"),
        confirmations=read_parquet(confirmations) if confirmations.is_file() else None,
        path=folder,
    )


def config_of(row: pd.Series | dict, **changes: Any) -> TrainConfig:
    """Rebuild the TrainConfig from a results row (its config columns are the fields).

    A field the row lacks was added to TrainConfig after the row was written; it keeps its
    default, which is what that run used (a new field never changes an old model)."""
    values = {name: row[name] for name in TrainConfig.field_names() if name in row}
    values = {name: value for name, value in values.items() if not _missing(value)}
    return TrainConfig.from_dict({**values, **changes})


def _missing(value: Any) -> bool:
    """NaN / None: a column that another experiment's rows brought in, not this row's value."""
    return value is None or (isinstance(value, float) and value != value)
