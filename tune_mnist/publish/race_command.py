"""`python scripts/race.py --results results/<name>`: race a search's best trials on more
validation runs (tune_mnist.publish.race), then name the one to confirm on test.

Exit status: 0 the race ran (its winner, or when the budget ran out the one most likely to
pass, is named with the command that confirms it); 2 bad input (no such folder, no completed
trial, a damaged table); 130 Ctrl-C (every finished run is recorded: the same command
continues).
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from tune_mnist.machine import provenance
from tune_mnist.parser import Parser
from tune_mnist.publish import race
from tune_mnist.publish.seeds import train_groups
from tune_mnist.search.ray_door import start_ray, stop_ray
from tune_mnist.search.stops import stop_code
from tune_mnist.tables import read_parquet, read_search_record
from tune_mnist.train.config import cpu_eval_fields
from tune_mnist.train.data import DATA_DIR_HELP, DataError, load_mnist

TOP = race.TOP
RUNS = race.RUNS
UNWRITTEN: list[Path] = []  # side files this run wrote (exit status 1)
HOPELESS = 0.01  # a pass chance under this is no chance: said when the race ends


def parse_args(argv):
    parser = Parser(
        prog="python scripts/race.py",
        description="Race a search's best trials on more validation runs before any test "
        "figure; the winner is the one to confirm (retrain_best.py).",
    )
    parser.add_argument(
        "--results", required=True, help="the search's folder: results/<name> (required)"
    )
    parser.add_argument("--top", type=int, default=TOP, help=f"contenders (default {TOP})")
    parser.add_argument(
        "--runs", type=int, default=RUNS, help=f"the race's budget of seed runs (default {RUNS})"
    )
    parser.add_argument(
        "--max-params",
        type=int,
        default=None,
        help="race only trials under this many parameters (default: the search's budget), "
        "to find the best under a smaller budget among runs already recorded",
    )
    parser.add_argument("--cpus", type=int, default=None, help="runs at once (default: all)")
    parser.add_argument(
        "--address",
        help="run the seeds as Ray tasks on this existing cluster "
        "(default: $RAY_ADDRESS, else a Ray of its own)",
    )
    parser.add_argument(
        "--val-images",
        choices=("own", "search"),
        default="own",
        help="own (default): run N holds out its own val_size images, drawn with seed N "
        "(val_split N), and the search's figure is left out of the mean; search: every run "
        "holds out the search's images (the last val_size), and its figure counts",
    )
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="read the search and its recorded runs and print the field: trains and writes nothing",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs = 0
    if args.top < 2 or args.runs < 0 or (args.cpus is not None and args.cpus < 1):
        parser.error("--top needs 2 or more contenders, --runs 0 or more, --cpus 1 or more")
    if args.max_params is not None and args.max_params < 1:
        parser.error("--max-params needs 1 or more")
    return args


def load_field(folder: Path, top: int, max_params: int | None = None, resampled: bool = True):
    # a damaged table is refused by its reader in one line (tables.TableError)
    if not folder.is_dir():
        raise ValueError(f"--results {folder}: no such folder; pass results/<name>")
    settings = read_search_record(folder)["settings"]
    trials = read_parquet(folder / "trials.parquet")
    budget = max_params or settings["max_params"]
    field = race.contenders(trials, top, budget, resampled, settings["val_size"])
    if not field:
        raise ValueError(f"{folder}: no completed trial under {budget:,} parameters to race")
    done = race.recorded_runs(folder)
    if len(done):
        done = done[race.own_images(done) == resampled]  # this race's kind of run
        for c in field:
            mine = done[done["trial_id"] == c.trial_id].sort_values("seed")
            c.vals += [float(v) for v in mine["val_acc"]]
    return field, settings


def train_round(alive, data, folder: Path, resample: bool) -> None:
    """One more seed of each contender in `alive`, side by side as Ray tasks. With
    `resample`, run N holds out its own images (val_split N); else every run holds out the
    search's. A worker gets no test set (race.validation_only)."""

    prov, held = provenance("cpu"), race.validation_only(data)
    seeds = sorted({len(c.vals) + 1 for c in alive})  # one a round, unless resumed midway
    for seed in seeds:
        group = [c for c in alive if len(c.vals) + 1 == seed]
        split = seed if resample else 0
        configs = [race_run(c.config, seed, split) for c in group]
        done = train_groups([[config] for config in configs], held, {"num_cpus": 1})
        for c, config, [run] in zip(group, configs, done, strict=True):
            _record(c, config, run, prov, folder)


def _record(c, config, run, prov: dict, folder: Path) -> None:
    val = float(run.history[-1]["val_acc"])
    row = {**config.to_dict(), "trial_id": c.trial_id, "params": c.params}
    row |= {"val_acc": val, "train_s": run.seconds, "status": run.status, **prov}
    row |= {"node_id": run.node_id}  # the Ray node that trained it
    side = race.append_runs(folder, [row])
    if side is not None:  # a full disk, a table damaged meanwhile: the run is kept
        print(
            f"error: {race.RUNS_TABLE} could not take trial {c.trial_id}'s run; it is in "
            f"{side} (counted by the race, merged in by its next append)",
            file=sys.stderr,
            flush=True,
        )
        UNWRITTEN.append(side)
    c.vals.append(val)


def next_round(field, left: int):
    """Who trains this round: every contender still racing, the fewest runs and then the best
    mean first when the budget cannot cover them all."""
    alive = [c for c in field if c.status == "racing"]
    return sorted(alive, key=lambda c: (len(c.vals), -c.mean))[:left]


def eta(left: int, run_s: float | None) -> str:
    """At most: the budget's runs left, each at the last round's wall seconds per run (a
    decided race stops sooner); nothing before a round has run."""
    return f", at most about {left * run_s / 60:.0f} min" if run_s else ""


def dropped_line(field, racing: set[str]) -> str | None:
    """Who a round's judgement dropped (below the leader, or the lower half as the field
    halves), of those `racing` before it; None when no one."""
    gone = [c.trial_id for c in field if c.trial_id in racing and c.status == "dropped"]
    if not gone:
        return None
    left = sum(c.status == "racing" for c in field)
    return f"dropped {', '.join(gone)} ({left} still racing)"


def race_run(config, seed: int, split: int):
    run = {"seed": seed, "val_split": split, "threads": 1, "device": "cpu"}
    return config.replace(**run, **cpu_eval_fields("cpu"))


def show(table) -> str:
    lines = ["  trial      params  runs  on images  mean val  std   pass chance  status   search"]
    for _, r in table.iterrows():
        lines.append(
            f"  {r['trial_id']:<9} {r['params']:>6,}  {r['seeds']:>4}  {r['val_images']:<9}  "
            f"{r['mean_val_acc']:7.3f}% {r['std_val_acc']:5.3f}  {r['pass_chance']:11.3f}  "
            f"{r['status']:<7}  {r['search_val_acc']:.2f}%"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    return run(argv)[0]


def run(argv=None) -> tuple[int, str | None]:
    """(exit status, the trial to confirm: the winner, or when the budget ran out the one
    most likely to pass; None when the race did not run)."""

    started = time.perf_counter()
    UNWRITTEN.clear()
    try:
        args = parse_args(argv)
        folder = Path(args.results)
        resampled = args.val_images == "own"
        field, settings = load_field(folder, args.top, args.max_params, resampled)
        data = load_mnist(args.data_dir)
    except (OSError, ValueError, KeyError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2, None
    target = settings["target_acc"]
    spent, ray_up = sum(len(c.vals) for c in field), False
    try:
        decided, run_s = race.judge(field, target), None
        while not decided and spent < args.runs:
            alive = next_round(field, args.runs - spent)
            left = args.runs - spent
            runs = f"{len(alive)} run" + ("s" if len(alive) > 1 else "")
            print(f"race round: {runs}, {left} left in the budget{eta(left, run_s)}", flush=True)
            if not ray_up:
                start_ray(args.address, cpus=None if args.address else args.cpus)
                ray_up = True
            begun = time.perf_counter()
            train_round(alive, data, folder, resampled)
            run_s = (time.perf_counter() - begun) / len(alive)  # the field shrinks as it halves
            spent += len(alive)
            racing = {c.trial_id for c in field if c.status == "racing"}
            decided = race.judge(field, target)
            if line := dropped_line(field, racing):
                print(line, flush=True)
    except KeyboardInterrupt:
        print("interrupted: every finished run is recorded; rerun to continue", file=sys.stderr)
        return stop_code() or 130, None  # 143 for a SIGTERM in a chain
    finally:
        if ray_up:
            stop_ray()
    leader = race.pick(field, target)
    table = race.summary_rows(field, target)
    try:
        if not args.smoke:
            race.write_summary(folder, field, target)
    except OSError as exc:  # every run is in race_runs.parquet (or its side file)
        print(
            f"error: cannot write {folder / 'race.parquet'} ({exc.strerror or exc}); every run "
            "is recorded: free space and run the race again to write it (nothing retrains)",
            file=sys.stderr,
        )
        UNWRITTEN.append(folder / "race.parquet")
    why = "decided" if decided else f"budget of {args.runs} runs spent"
    if max(race.pass_chance(c, target) for c in field) < HOPELESS:
        why += f"; no contender's pass chance reaches {HOPELESS:.0%}"
    why = "smoke: nothing trained or written" if args.smoke else why
    print(f"race over ({why}, {time.perf_counter() - started:.0f}s):\n{show(table)}")
    command = ["python", "scripts/retrain_best.py", "--results", str(folder)]
    command += ["--trials", leader.trial_id, "--seeds", "5"]
    print(f"confirm on test: {shlex.join(command)}")
    return (1 if UNWRITTEN else 0), leader.trial_id
