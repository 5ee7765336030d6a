"""Bring every `confirmations.parquet` under a results folder to the current columns, once:
rows that left `selected_on` empty (searches before the validation split, chosen on test)
get `test_acc`, and rows that left the CPU step's fields empty (every run before the step
was recorded trained the plain step) get the plain step's `precision` and `channels_last`.
Figures are never touched. `--check` lists what would change and exits 1 if anything would.

    python scripts/migrate_confirmations.py [--check] [--results-dir results]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from tune_mnist.parser import Parser
from tune_mnist.paths import RESULTS_DIR_HELP, results_root, shown
from tune_mnist.tables import MIGRATE, write_parquet
from tune_mnist.train.config import CPU_STEPS

# column -> the value an empty cell stands for (the columns: tables.MIGRATE's)
VALUES = {"selected_on": "test_acc", **CPU_STEPS["plain"]}
FILLS = {column: VALUES[column] for column in MIGRATE["confirmations.parquet"][1]}


def migrated(rows: pd.DataFrame) -> pd.DataFrame | None:
    """`rows` with every empty cell of FILLS filled, or None when none is empty."""
    if all(column in rows and rows[column].notna().all() for column in FILLS):
        return None
    out = rows.copy()
    for column, value in FILLS.items():
        if column not in out:
            out[column] = value
        elif out[column].isna().any():
            out[column] = out[column].astype(object).where(out[column].notna(), value)
            out[column] = out[column].astype(type(value))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", help=RESULTS_DIR_HELP)
    parser.add_argument("--check", action="store_true", help="list, change nothing (exit 1 if any)")
    parser.add_argument("--smoke", action="store_true", help="list, change nothing (exit 0)")
    args = parser.parse_args(argv)
    root = Path(args.results_dir) if args.results_dir else results_root()
    if not root.is_dir():
        print(f"error: {root} is not a folder; pass --results-dir", file=sys.stderr)
        return 2
    changed = []
    for path in sorted(root.glob("*/confirmations.parquet")):
        try:  # pandas itself: read_parquet refuses a table without these columns
            new = migrated(pd.read_parquet(path))
        except (OSError, ValueError) as exc:
            print(f"error: {path}: cannot read it ({type(exc).__name__})", file=sys.stderr)
            return 2
        if new is not None:
            changed.append(path)
            if not (args.check or args.smoke):
                write_parquet(path, new)
    for path in changed:
        print(("would migrate " if args.check or args.smoke else "migrated ") + str(shown(path)))
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
