"""`python scripts/search.py`: the search, then the race, then (with `--confirm N`) the
confirmation and the publication, as one command.

1. search (tune_mnist.search.command): Optuna proposes, ASHA by promotion stops;
2. race (tune_mnist.publish.race_command): the `--race-top` best completed trials on more
   validation runs, `--race-runs` of them, each on its own held-out images (a resumed race
   goes on with the images its recorded runs held out); the test set is read by neither;
3. warm stages (tune_mnist.stages), with --confirm and --warm-stages: while the pick's pass
   chance is under --warm-below, another search warm-started from the one before, raced;
4. confirm (tune_mnist.publish.retrain): the likeliest pick of the races on N fresh seeds,
   on test; its model card and weights under results/<search>/confirmed/<trial>;
5. publish (tune_mnist.publish.leaderboard): results/leaderboard.csv and .png rebuilt.

Each stage keeps what it finished: a rerun with `--resume --name <name>` continues the
search, reuses every recorded race run, finds and continues each warm stage by its name and
skips a confirmation already recorded.
Exit status: the search's when it fails; with --confirm, 0 when the pick passed on every
seed and 1 when it did not (or no trial completed to race); 2 bad input; 130 Ctrl-C.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from tune_mnist import stages
from tune_mnist.confirmed import last_seeds
from tune_mnist.cost import chain_cost, cost_line
from tune_mnist.paths import results_root, shown
from tune_mnist.publish import leaderboard, race_command, retrain
from tune_mnist.publish.race import contenders, own_images, recorded_runs
from tune_mnist.publish.records import table_problem
from tune_mnist.search import command, ray_door, stops
from tune_mnist.search.plan import UsageError
from tune_mnist.tables import TableError, read_parquet, read_search_record

SMOKE_TEST = 1000  # test images of a --smoke confirmation


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    with ray_door.one_ray():  # one ray.init for search, race and confirmation
        try:
            return _chain(argv)
        except KeyboardInterrupt:  # between stages: each stage keeps what it finished
            print(
                "interrupted between stages; nothing ended is lost: run the same command "
                "with --resume --name <name> to continue",
                file=sys.stderr,
            )
            return stops.stop_code() or 130


def _chain(argv: list[str]) -> int:
    code, args, folder = command.run(argv)
    if code != 0 or folder is None or not (args.race_runs or args.confirm):
        return code
    again = command.resume_command(args, folder.name)
    try:
        code, pick = _race(args, folder)
        if code != 0:
            return _stopped("race", code, again if args.confirm else "")
        if pick is None:
            return 1 if args.confirm else 0
        if not args.confirm:
            return 0
        raced = stages.go_on(args, stages.raced(folder, pick), lambda f: _race(args, f))
    except stages.Stopped as exc:
        return _stopped(exc.what, exc.code, again)
    except (OSError, TableError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    best = stages.likeliest(raced)
    if len(raced) > 1:
        print(stages.show(raced, best))
    folder, pick = best.folder, best.pick
    later = [s.folder for s in raced[raced.index(best) + 1 :]]
    print(f"\n== confirm: trial {pick} on {args.confirm} fresh seeds, on the test set ==")
    print(_confirm_eta(folder, pick, args), flush=True)
    recorded = _confirmed(folder, pick, args.confirm, SMOKE_TEST if args.smoke else 0)
    if recorded is not None:
        print(f"already confirmed: {recorded} (confirmations.parquet); not trained again")
        code = 0 if recorded.endswith("PASSED") else 1
    else:
        code = retrain.main(_retrain_argv(args, folder, pick))
    if code not in (0, 1):
        return _stopped("confirmation", code, again)
    print(cost_line(chain_cost(folder, pick, args.confirm, later)))
    if args.smoke:
        print("smoke: a confirmation on a few images is never published (no leaderboard row)")
        return code
    print("\n== publish: the leaderboard ==")
    published = leaderboard.main(["--results-dir", str(shown(results_root()))])
    if published != 0:
        return _stopped("leaderboard", published, "python scripts/leaderboard.py")
    return code


def _race(args, folder: Path) -> tuple[int, str | None]:
    """Race a search's best completed trials: (the race's status, its pick); (0, None)
    when no trial completed within the budget."""
    budget = read_search_record(folder)["settings"]["max_params"]
    if not contenders(read_parquet(folder / "trials.parquet"), 1, budget):
        print(f"no race: no completed trial within the budget ({folder.name}/trials.parquet)")
        return 0, None
    print(
        f"\n== race: the {args.race_top} best completed trials on up to {args.race_runs} more "
        "validation runs =="
    )
    return race_command.run(_race_argv(args, folder))


def _race_argv(args, folder: Path) -> list[str]:
    out = ["--results", str(folder), "--runs", str(args.race_runs), "--top", str(args.race_top)]
    out += ["--val-images", _race_images(folder)]
    out += ["--address", args.address] if args.address else []
    return out + (["--data-dir", args.data_dir] if args.data_dir else [])


def _race_images(folder: Path) -> str:
    """The images a resumed race goes on with: those its recorded runs held out (a race
    from before each run held out its own ran on the search's); a new race, its own."""
    runs = recorded_runs(folder)
    return "own" if runs.empty or bool(own_images(runs).all()) else "search"


def _retrain_argv(args, folder: Path, pick: str) -> list[str]:
    out = ["--results", str(folder), "--trials", pick, "--seeds", str(args.confirm)]
    if args.gpus:
        out += ["--gpus", str(args.gpus)]
    else:
        out += ["--cpus", str(min(args.confirm, os.cpu_count() or 1))]
    if args.address:
        out += ["--address", args.address]
    if args.data_dir:
        out += ["--data-dir", args.data_dir]
    if args.smoke:  # seconds: one epoch on a few images, never a published figure
        out += ["--epochs", "1", "--train-subset", "2000", "--test-subset", str(SMOKE_TEST)]
    return out


def _confirm_eta(folder: Path, pick: str, args) -> str:
    """`about 12 min: 5 seeds, 2 at a time, each about 230 s` from the seconds the pick's
    race runs took (the newest runs of the same recipe on this machine), else its full run
    in the search (which a resume or a busy machine may have stretched); on all 60,000
    images a seed takes 60/55 of them."""
    runs = recorded_runs(folder)
    mine = runs[runs["trial_id"] == pick] if "train_s" in runs else runs.iloc[0:0]
    if len(mine):
        seconds, source = float(mine["train_s"].median()), "its race runs"
    else:
        trials = read_parquet(folder / "trials.parquet").set_index("trial_id")
        seconds, source = float(trials.loc[pick].get("full_fidelity_s") or 0), "its full run"
    seconds *= 60 / 55
    at_once = args.gpus * 4 if args.gpus else min(args.confirm, os.cpu_count() or 1)
    rounds = math.ceil(args.confirm / max(1, at_once))
    if not seconds or args.smoke:
        return f"{args.confirm} seeds, {at_once} at a time"
    return (
        f"about {rounds * seconds / 60:.0f} min: {args.confirm} seeds, {at_once} at a time, "
        f"each about {seconds:.0f} s ({source}, scaled to all images)"
    )


def _confirmed(folder: Path, trial_id: str, seeds: int, test_subset: int) -> str | None:
    """`mean 99.45% on 5 seeds: PASSED` when `seeds` seeds of the trial are recorded in
    confirmations.parquet on these test images (0: all); else None."""
    path = folder / "confirmations.parquet"
    if not path.is_file() or table_problem(path, ("trial_id", "seed", "test_subset")):
        return None  # (retrain_best refuses a damaged one in one line, before training)
    rows = read_parquet(path)
    mine = last_seeds(rows[rows["test_subset"] == test_subset], trial_id, seeds)
    if len(mine) < seeds:
        return None
    verdict = "PASSED" if bool(mine["passed"].all()) else "not passed"
    return f"mean {mine['final_test_acc'].mean():.2f}% on {seeds} seeds: {verdict}"


def _stopped(stage: str, code: int, again: str) -> int:
    """The chain stopped at `stage`: one line, what to run to continue, the stage's status
    (1 when the stage had nothing to work on)."""
    how = f"; continue with: {again}" if again else ""
    print(f"chain stopped at the {stage} (exit {code}){how}", file=sys.stderr)
    return code or 1
