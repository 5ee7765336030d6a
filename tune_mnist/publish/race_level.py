"""What the race's level (tune_mnist.publish.race.LEVEL) rests on: every contender a race
measured and that 5 or more fresh seeds then confirmed on the test set, with the gap between
its test mean and its race mean, by the images the race read (`python -m
tune_mnist.publish.race_level [--plot docs/race-level.png]` prints them and draws them;
docs/protocol.md, "The race's level")."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from tune_mnist.confirmed import confirmed_rows
from tune_mnist.parser import Parser
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


def plot(table: pd.DataFrame, path: Path) -> None:
    """Test mean against race mean, one colour for each kind of images: the diagonal is a
    race that reads at the test set's level."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for kind, rows in table.groupby("val_images"):
        ax.scatter(rows["race_mean"], rows["test_mean"], label=f"race on {kind} images")
    low = min(table["race_mean"].min(), table["test_mean"].min()) - 0.05
    high = max(table["race_mean"].max(), table["test_mean"].max()) + 0.05
    ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
    ax.axhline(99.4, color="red", linewidth=0.8, linestyle=":")
    ax.set(xlabel="race mean, validation (%)", ylabel="5 fresh seeds' mean, test (%)")
    ax.set_title("The race's level: picks confirmed on test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m tune_mnist.publish.race_level")
    parser.add_argument("--plot", type=Path, help="also draw them into this PNG")
    args = parser.parse_args(argv)
    table = measured()
    if table.empty:
        print("no raced contender is confirmed on 5 or more seeds under this results folder")
        return 1
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    by = table.groupby("val_images")["gap"]
    print(pd.DataFrame({"picks": by.size(), "mean gap": by.mean(), "sd": by.std()}).round(3))
    if args.plot:
        plot(table, args.plot)
        print(f"written: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
