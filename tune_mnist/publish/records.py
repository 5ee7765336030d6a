"""What a confirmation leaves behind: each trial's model card (JSON and Markdown) and weights
links, and the rows appended to confirmations.parquet and confirmation_epochs.parquet, where a
seed retrained again supersedes its old row (moved to the *_history tables)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pyarrow

from tune_mnist.files import atomic_write_text, write_json
from tune_mnist.publish.confirm import InputError, selection_of, train_command
from tune_mnist.tables import TableError, read_parquet, write_parquet
from tune_mnist.train.modelfile import save_model
from tune_mnist.train.models import build_from_config


def write_card(out: Path, row, config, runs, summary, prov, command: str) -> None:
    """Weights of every seed (model.pt = the first seed, not the luckiest) and the card."""

    for run in runs:
        model = build_from_config(config.replace(seed=run.seed))
        model.load_state_dict(run.state_dict)
        seed_config = config.replace(seed=run.seed, device="cpu")
        extra = {"final_test_acc": run.final_test_acc, "params": run.params, **prov}
        save_model(out / f"seed{run.seed}.pt", model, seed_config, **extra)
    link(out / "model.pt", f"seed{runs[0].seed}.pt")  # what load_model(out) reads
    card = {
        "trial_id": str(row["trial_id"]),
        "arch": config.arch,
        "params": runs[0].params,
        "config": config.to_dict(),
        **summary,
        "selected_on": selection_of(row),
        "search_val_acc": float(row.get("final_val_acc", float("nan"))),
        "search_test_acc": float(row["final_test_acc"]),
        "search_seed": int(row["seed"]),
        "search_epochs": int(row.get("epochs_run", row["epochs"])),
        "device": runs[0].device,
        **prov,
        "reproduce": command,
        "train_one_seed": train_command(config),
    }
    write_json(out / "model_card.json", card)
    atomic_write_text(out / "model_card.md", card_markdown(card))


def link(path: Path, target: str | Path) -> None:
    """`path` becomes a relative symlink to `target`, atomically (a crash leaves the old
    entry or the new one); an old copy in its place (a folder, a file) is replaced."""

    tmp = path.with_name(f".{path.name}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    if path.is_dir() and not path.is_symlink():  # a copy in its place
        shutil.rmtree(path)
    os.replace(tmp, path)


def card_markdown(card: dict) -> str:
    seeds = "\n".join(
        f"| {s} | {a:.2f}% | {t:.0f} s |"
        for s, a, t in zip(
            card["seeds"], card["final_test_acc"], card["train_seconds"], strict=True
        )
    )
    verdict = "passed" if card["all_seeds_passed"] else "did NOT pass"
    return f"""# Model card: {card["arch"]} ({card["params"]:,} parameters)

Every seed {verdict} the target of {card["target_acc"]}% final-epoch test accuracy
(budget {card["max_params"]:,} parameters).

| seed | final test accuracy | training time |
| --- | --- | --- |
{seeds}

Mean {card["mean_test_acc"]:.2f}% ± {card["std_test_acc"]:.2f} (std over seeds), min
{card["min_test_acc"]:.2f}%. {_chosen(card)}

- config: `{json.dumps(card["config"])}`
- device: {card["device"]} ({card["device_name"]}); torch {card["torch_version"]},
  ray {card["ray_version"]}, optuna {card["optuna_version"]}; commit {card["commit"]}
- reproduce: `{card["reproduce"]}`
- one seed with the training CLI: `{card["train_one_seed"]}`
- load: `tune_mnist.load_model("<this folder>")` (weights_only: no pickled objects)
"""


def _chosen(card: dict) -> str:
    """What the numbers above were selected on, in words."""
    run = f"the search's own run (seed {card['search_seed']}, {card['search_epochs']} epochs)"
    if card["selected_on"] == "val_acc":
        return (
            f"This config was chosen on the validation accuracy of {run}, "
            f"{card['search_val_acc']:.2f}% on images held out of the training set; the seeds "
            f"above were then trained on all 60,000 training images and only report on test."
        )
    return (
        f"This config was chosen on the TEST accuracy of {run}, {card['search_test_acc']:.2f}% "
        "(a search made before the validation split): the figures above are not independent "
        "of that choice."
    )


TABLES = ("confirmations.parquet", "confirmation_epochs.parquet")
REQUIRED = {"confirmations.parquet": ("trial_id", "seed"), "confirmation_epochs.parquet": ()}
SIDE = ".unwritten-"  # rows a table could not take: <table>.unwritten-<stamp>.parquet


def table_problem(path: Path, required: tuple[str, ...] = ()) -> str | None:
    """What is wrong with a parquet table that a command will read or append to, in a few
    words (None: readable, or absent, which is fine for a table made on first append)."""

    if not path.exists():
        return None
    try:
        frame = read_parquet(path)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    except TableError as exc:
        return exc.problem
    except (pyarrow.ArrowException, ValueError):
        return "cut short or damaged"
    missing = [c for c in required if c not in frame.columns]
    return f"missing column {missing[0]}" if missing else None


def check_tables(folder: Path) -> None:
    """Refuse, before anything is trained, a confirmation table that could not take rows."""
    for name in TABLES:
        problem = table_problem(folder / name, REQUIRED[name])
        if problem:
            raise InputError(
                f"{folder / name}: {problem}; move it aside (its rows are lost with it, the "
                "seeds' weights and cards stay) and rerun: the command makes a new one"
            )


def append_confirmations(
    folder: Path, rows: list[dict], name: str = "confirmations.parquet"
) -> Path | None:
    """Read-append-replace under an exclusive lock: two retrain_best.py runs on the same
    experiment (say, --trials a and --trials b side by side) must not drop each other's rows.
    Rows a later retrain of the same seed supersedes then move to the history tables. Rows
    the table cannot take (a full disk, a file damaged meanwhile) go to a side file beside
    it, whose path is returned; the next append merges every side file back in, once."""

    path = folder / name
    with open(folder / ".confirmations.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sides = sorted(folder.glob(f"{name}{SIDE}*.parquet"))
        frame = pd.concat(
            [*(read_parquet(p) for p in sides), pd.DataFrame(rows)], ignore_index=True
        )
        try:
            if path.is_file():
                frame = pd.concat([read_parquet(path), frame], ignore_index=True)
            write_parquet(path, frame)
        except (OSError, pyarrow.ArrowException, ValueError):
            side = folder / f"{name}{SIDE}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.parquet"
            write_parquet(side, pd.DataFrame(rows))
            return side
        for merged in sides:  # in the table now: each row once
            merged.unlink()
        retire_superseded(folder)
    return None


HISTORY = {  # current table -> where its superseded rows go
    "confirmations.parquet": "confirmations_history.parquet",
    "confirmation_epochs.parquet": "confirmation_epochs_history.parquet",
}


def retire_superseded(folder: Path) -> int:
    """Move every confirmation row (and its curve) that a later retrain of the same trial and
    seed superseded (its seed<N>.pt now holds the newer run) to the history tables, so that
    a plain read of confirmations.parquet returns the current rows only. Returns how many
    rows moved. Called under the confirmations lock."""

    path = folder / "confirmations.parquet"
    if not path.is_file():
        return 0
    rows = read_parquet(path)
    if not {"trial_id", "seed"} <= set(rows.columns):
        return 0
    old = rows.duplicated(["trial_id", "seed"], keep="last")  # rows are appended in order
    if not old.any():
        return 0
    current = rows.loc[~old, [c for c in ("trial_id", "seed", "confirmed_at") if c in rows]]
    tables = {path: (rows[~old], rows[old])}
    curves_path = folder / "confirmation_epochs.parquet"
    if curves_path.is_file():
        curves = read_parquet(curves_path)
        keys = curves.merge(current, how="left", indicator=True)["_merge"] == "both"
        tables[curves_path] = (curves[keys.to_numpy()], curves[~keys.to_numpy()])
    for table, (keep, retired) in tables.items():
        history = folder / HISTORY[table.name]
        if history.is_file():  # the history first: a crash between leaves rows in both
            retired = pd.concat([read_parquet(history), retired], ignore_index=True)
        write_parquet(history, retired.reset_index(drop=True))
        write_parquet(table, keep.reset_index(drop=True))
    return int(old.sum())
