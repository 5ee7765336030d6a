"""What the race's level (tune_mnist.publish.race.LEVEL) rests on: every contender a race
measured and that 5 or more fresh seeds then confirmed on the test set, with the gap between
its test mean and its race mean, by the images the race read (`python -m
tune_mnist.publish.race_level` prints them; docs/protocol.md, "The race's level")."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from tune_mnist.confirmed import confirmed_rows
from tune_mnist.paths import results_root
from tune_mnist.tables import read_parquet

MIN_CONFIRMED = 5  # seeds a test mean needs to calibrate with


def measured(root: str | Path | None = None) -> pd.DataFrame:
    """One row per raced and confirmed contender: experiment, trial_id, val_images, runs,
    race_mean, test_mean and gap (test mean minus race mean, in points)."""
    root = results_root() if root is None else Path(root)
    seeds = confirmed_rows(root)
    rows = []
    for path in sorted(root.glob("*/race.parquet")):
        tested = seeds[seeds["experiment"] == path.parent.name].groupby("trial_id")
        counts, means = tested.size(), tested["final_test_acc"].mean()
        for _, r in read_parquet(path).iterrows():
            if counts.get(r["trial_id"], 0) < MIN_CONFIRMED:
                continue
            test = float(means[r["trial_id"]])
            images = r["val_images"] if "val_images" in r and pd.notna(r["val_images"]) else None
            rows.append(
                {
                    "experiment": path.parent.name,
                    "trial_id": r["trial_id"],
                    "val_images": images or "search's",
                    "runs": int(r["seeds"]),
                    "race_mean": float(r["mean_val_acc"]),
                    "test_mean": test,
                    "gap": test - float(r["mean_val_acc"]),
                }
            )
    return pd.DataFrame(rows)


def main() -> int:
    table = measured()
    if table.empty:
        print("no raced contender is confirmed on 5 or more seeds under this results folder")
        return 1
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    by = table.groupby("val_images")["gap"]
    print(pd.DataFrame({"picks": by.size(), "mean gap": by.mean(), "sd": by.std()}).round(3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
