"""When a rung promotes: a search's first-rung figures in the order they arrived, and which
trials each promotion rule would send on (docs/fidelity.md, "When a rung promotes").

    python -m tune_mnist.study.arrivals results/cold-4k-r8

reads the search's journal (kept where it ran; a clone has the table this writes), writes
`first_rung.csv` beside the tables (trial, arrival order, first-rung figure, whether it went
on) and prints the replay: greedy promotion (the best floor(n / factor) of the n figures seen
at each arrival) against promotion at the end (the best quarter of all). Given only the
folder's `first_rung.csv`, it replays from that. Nothing is trained.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from tune_mnist.parser import Parser
from tune_mnist.search.promotion import promotions
from tune_mnist.tables import read_search_record

FILE = "first_rung.csv"


def arrivals(folder: Path) -> list[dict]:
    """Each trial's figure at the end of its first rung, oldest first."""
    if not (folder / "journal").is_dir():
        with open(folder / FILE) as f:
            return [
                {
                    **r,
                    "order": int(r["order"]),
                    "val_acc": float(r["val_acc"]),
                    "went_on": r["went_on"] == "True",
                }
                for r in csv.DictReader(f)
            ]
    rows = []
    for path in (folder / "journal").glob("*.jsonl"):
        results = [
            json.loads(line)["result"]
            for line in path.read_text().splitlines()
            if '"kind": "epoch"' in line
        ]
        ends = [r for r in results if r.get("rung") == 0 and r.get("level", 0) >= 1]
        if ends:
            went_on = any(r.get("rung", 0) > 0 for r in results)
            rows.append(
                {
                    "trial_id": path.stem,
                    "timestamp": ends[0]["timestamp"],
                    "val_acc": ends[0]["val_acc"],
                    "went_on": went_on,
                }
            )
    rows.sort(key=lambda r: (r["timestamp"], r["trial_id"]))
    return [{"order": i + 1, **r} for i, r in enumerate(rows)]


def greedy(figures: list[float], factor: int) -> list[int]:
    """Indices promoted when each arrival lets the rung promote, by the scheduler's own rule
    (tune_mnist.search.promotion.promotions; ties go to the earlier arrival)."""
    seen: dict[int, float] = {}
    promoted: list[int] = []
    for i, figure in enumerate(figures):
        seen[i] = figure
        promoted += promotions(seen, set(promoted), factor)
    return promoted


def searched_factor(folder: Path) -> int:
    """The reduction factor the search ran with (its search.json), 4 where none is recorded."""
    try:
        settings = read_search_record(folder)["settings"]
    except ValueError:  # TableError: no record, or a damaged one
        return 4
    return int(settings.get("reduction_factor") or 4)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        prog="python -m tune_mnist.study.arrivals",
        description=__doc__.split("\n")[0],
    )
    parser.add_argument("folder", type=Path, help="a search's results folder")
    parser.add_argument(
        "--factor",
        type=int,
        help="reduction factor (default: the search's own, from its search.json; else 4)",
    )
    args = parser.parse_args(argv)
    if not (args.folder / "journal").is_dir() and not (args.folder / FILE).is_file():
        print(f"error: {args.folder} holds neither a journal/ nor {FILE}", file=sys.stderr)
        return 2
    args.factor = args.factor or searched_factor(args.folder)
    rows = arrivals(args.folder)
    if (args.folder / "journal").is_dir():
        with open(args.folder / FILE, "w", newline="") as f:
            writer = csv.DictWriter(f, ["order", "trial_id", "timestamp", "val_acc", "went_on"])
            writer.writeheader()
            writer.writerows(rows)
    figures = [r["val_acc"] for r in rows]
    quota = len(figures) // args.factor
    best = sorted(range(len(figures)), key=lambda i: -figures[i])[:quota]
    chosen = {"greedy": greedy(figures, args.factor), "at the end": best}
    went = [i for i, r in enumerate(rows) if r["went_on"]]
    print(f"{args.folder.name}: {len(figures)} first-rung figures, a quota of {quota}")
    for name, picked in [*chosen.items(), ("recorded", went)]:
        mean = sum(figures[i] for i in picked) / len(picked) if picked else float("nan")
        print(
            f"  {name:10s} {len(picked):2d} sent on, {len(set(picked) & set(best)):2d} of them "
            f"among the best {quota}, first-rung mean {mean:.3f}%"
        )
    print(f"  the best {quota} arrived at: {sorted(rows[i]['order'] for i in best)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
