"""Which cheap evaluation ranks configurations like their full 15-epoch run?

The configurations are the campaign searches' trials (results/campaign3-*): every trial
that trained 15 epochs, and a spread of those ASHA stopped at epoch 12, trained to 15 here.
Each is measured at the low fidelities of `tune_mnist.fidelity` (compressed one-cycle,
a subset of the images, warmup-stable-decay branches), every run a Ray task on one core,
recorded like a trial (config, seed, fidelity, seconds, versions, commit, CPU) in
results/fidelity-study/runs.parquet. An interrupted study continues where it stopped: a
run already recorded is never trained again.

    python scripts/fidelity_study.py run                 # the whole queue, in order
    python scripts/fidelity_study.py run --only full,compressed5 --limit 4
    python scripts/fidelity_study.py analyse             # docs/fidelity.md and its figures
    python scripts/fidelity_study.py run --smoke         # 2 configurations, 2,000 images

Exit status: 0 the queue ran (or the page was written), 1 a run failed, 2 bad input,
130 Ctrl-C (what finished is kept).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from tune_mnist.fidelity import FULL, config_at, parse
from tune_mnist.parser import Parser
from tune_mnist.results import config_of
from tune_mnist.study import fidelity_runs as runs
from tune_mnist.train.config import ConfigError
from tune_mnist.train.data import DATA_DIR_HELP, DataError

# what the queue measures, in the order it runs (the cheap ranks first)
QUEUE = (
    "full",  # the ASHA-stopped configurations, trained to 15 epochs
    "compressed3",
    "subset25",
    "compressed5",
    "wsd",  # one trunk per configuration, branched at epochs 3 and 5
    "full:seed1",  # a second seed: the ceiling that seed noise sets
    "compressed2",
    "subset50",
)


def parse_args(argv):
    parser = Parser(prog="python scripts/fidelity_study.py", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train the queue's missing runs (Ray tasks, 1 core each)")
    run.add_argument("--only", help="comma-separated queue entries (default: all, in order)")
    run.add_argument("--limit", type=int, default=0, help="configurations per entry (0: all)")
    run.add_argument("--cpus", type=int, default=None, help="runs at once (default: all cores)")
    run.add_argument("--data-dir", help=DATA_DIR_HELP)
    run.add_argument("--smoke", action="store_true", help="2 configurations, 2,000 images")
    run.add_argument("--out", default=str(runs.DEFAULT_FOLDER), help="the study's folder")
    pilot = sub.add_parser("import", help="record figures measured before as runs")
    pilot.add_argument("csv", help="a CSV with search, trial_id, compressed2/3_val_acc columns")
    pilot.add_argument("--commit", required=True, help="the commit the figures were made at")
    pilot.add_argument("--cpu", required=True, help="the CPU they were made on")
    pilot.add_argument("--out", default=str(runs.DEFAULT_FOLDER))
    analyse = sub.add_parser("analyse", help="write docs/fidelity.md and its figures")
    analyse.add_argument("--out", default=str(runs.DEFAULT_FOLDER))
    analyse.add_argument("--page", default="docs/fidelity.md")
    return parser.parse_args(argv)


def jobs_for(entry: str, configs: pd.DataFrame, limit: int) -> list[runs.Job]:
    """The runs of one queue entry, skipping what its rule does not apply to."""
    name, _, seed = entry.partition(":seed")
    rows = configs
    if name == FULL and not seed:  # trials that trained 15 epochs have their run already
        rows = rows[rows["status"] != "completed"]
    if seed:
        rows = rows[rows["second_seed"]]
    if limit:
        rows = rows.head(limit)
    out = []
    for _, row in rows.iterrows():
        base = config_of(row, threads=1, device="cpu")
        if seed:
            base = base.replace(seed=int(seed))
        out.append(runs.Job(str(row["search"]), str(row["trial_id"]), name, base))
    return out


def command_run(args) -> int:
    folder = Path(args.out)
    configs = runs.configurations(smoke=args.smoke)
    entries = args.only.split(",") if args.only else list(QUEUE)
    for entry in entries:
        if entry.partition(":seed")[0] not in ("wsd", FULL):
            parse(entry.partition(":seed")[0])  # a bad name fails here, before Ray starts
        elif entry not in QUEUE:
            raise ConfigError(f"--only {entry!r}: the queue's entries are {', '.join(QUEUE)}")
    done = runs.recorded(folder)
    queue = [
        job
        for entry in entries
        for job in jobs_for(entry, configs, 2 if args.smoke else args.limit)
        if job.key not in done
    ]
    print(
        f"fidelity study: {len(configs)} configurations, {len(done)} runs recorded, "
        f"{len(queue)} to train in {folder}",
        flush=True,
    )
    if not queue:
        return 0
    return runs.train_queue(queue, folder, args)


def command_import(args) -> int:
    pilot = pd.read_csv(args.csv)
    configs = runs.configurations(smoke=False).set_index(["search", "trial_id"])
    rows = []
    for _, p in pilot.iterrows():
        source = configs.loc[(p["search"], p["trial_id"])]
        base = config_of(source, threads=1, device="cpu")
        for epochs in (2, 3):
            name = f"compressed{epochs}"
            config = config_at(base, name, runs.N_TRAIN)
            rows.append(
                runs.row(
                    runs.Job(p["search"], p["trial_id"], name, base),
                    config,
                    {"val_acc": float(p[f"{name}_val_acc"])},
                    seconds=float("nan"),
                    prov={"commit": args.commit, "cpu": args.cpu, "source": "pilot"},
                )
            )
    runs.append(Path(args.out), rows)
    print(f"recorded {len(rows)} runs from {args.csv}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        if args.command == "run":
            return command_run(args)
        if args.command == "import":
            return command_import(args)
        from tune_mnist.study.fidelity_page import write_page

        print(f"wrote {write_page(Path(args.out), Path(args.page))}")
        return 0
    except (ConfigError, DataError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"interrupted after {time.perf_counter() - started:.0f}s: every finished run is "
            "recorded; the same command continues",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
