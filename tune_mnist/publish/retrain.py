"""`scripts/retrain_best.py`: confirm the best trials of a search over several seeds.

Exit status: 0 when a confirmed model passed (every seed >= target, params within budget),
1 when the runs finished but none passed, 2 on bad input (one line, nothing trained).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import torch

from tune_mnist.machine import provenance
from tune_mnist.paths import results_root
from tune_mnist.publish import stash
from tune_mnist.publish.confirm import (
    InputError,
    confirmation_epoch_rows,
    confirmation_rows,
    newest_experiment,
    pick,
    reproduce_command,
    seed_summary,
    selection_of,
)
from tune_mnist.publish.records import (
    append_confirmations,
    check_tables,
    link,
    table_problem,
    write_card,
)
from tune_mnist.publish.retrain_flags import parse_args
from tune_mnist.publish.seeds import train_groups
from tune_mnist.results import config_of
from tune_mnist.search.optuna_journal import rebuild
from tune_mnist.search.ray_door import start_ray as start
from tune_mnist.search.ray_door import stop_ray
from tune_mnist.search.space import SETTINGS_DEFAULTS
from tune_mnist.search.stops import stop_code
from tune_mnist.tables import TableError, read_parquet, read_search_record
from tune_mnist.train.config import ConfigError, cpu_step_fields, cpu_step_of
from tune_mnist.train.data import DataError, load_mnist


def load_candidates(args) -> tuple[Path, pd.DataFrame, dict]:
    folder = Path(args.results) if args.results else newest_experiment(results_root())
    if not folder.is_dir():
        raise InputError(f"--results {folder}: no such folder; pass results/<name>")
    for name, required in (("trials.parquet", ("trial_id", "status")), ("passing.parquet", ())):
        problem = table_problem(folder / name, required)
        if problem:
            raise InputError(
                f"{folder / name}: {problem}; move it aside and run `python scripts/search.py "
                f"--resume --name {folder.name}`: it rewrites the tables from the search's "
                "journal"
            )
    meta = read_search_record(folder)  # a missing or damaged record: its own one line
    try:
        passing = read_parquet(folder / "passing.parquet")
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{folder}: unreadable results ({type(exc).__name__}); rerun the search"
        ) from None
    if args.trials is not None:  # `--trials ''` is an empty list, not "the best ones"
        return folder, named_trials(folder, args.trials), meta["settings"]
    if passing.empty:
        raise InputError(f"{folder}: no passing trial to confirm (see trials.parquet)")
    return folder, pick(passing, args.rank, args.top), meta["settings"]


def named_trials(folder: Path, names: str) -> pd.DataFrame:
    """The rows of `--trials a,b,c`, in that order. A trial ASHA stopped counts too: its
    row holds the whole config, and confirming trains every epoch anyway."""
    trials = read_parquet(folder / "trials.parquet").set_index("trial_id", drop=False)
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    trained = trials[trials["status"].isin(["completed", "asha_stopped"])]
    missing = [name for name in wanted if name not in trained.index]
    twice = sorted({name for name in wanted if wanted.count(name) > 1})
    if twice:
        raise InputError(f"--trials: {', '.join(twice)} named twice; name each trial once")
    if missing or not wanted:
        raise InputError(
            f"--trials: {', '.join(missing) or 'empty'} not a completed or ASHA-stopped trial "
            f"of {folder}; those are: {', '.join(trained.index) or 'none'}"
        )
    return trained.loc[wanted].reset_index(drop=True)


def shown(folder: Path) -> str:
    """The folder as a command should name it: relative to here when it is below here."""
    try:
        return str(folder.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(folder)


def seed_configs(row, args, device: str, parallel: bool) -> list:
    """The configs of one candidate's fresh seeds: trained on all 60,000 training images
    (val_size 0: the held-out images did their job in the search) and scored on all 10,000
    test images, even when the search ran on a subset (unless --train/test-subset ask), with
    the thread count written down rather than left to torch."""

    epochs = args.epochs or int(row["epochs"])
    # fresh seeds: the search's own run (seed row.seed) is the lucky one being checked
    first = int(row["seed"]) + 1
    seeds = [first] if args.smoke_test else list(range(first, first + args.seeds))
    threads = args.threads if args.threads is not None else 1 if parallel else 0
    run = {"epochs": epochs, "device": device, "val_size": 0, "cohort": 1}
    run |= {"train_subset": args.train_subset, "test_subset": args.test_subset}
    run["threads"] = threads or torch.get_num_threads()
    if args.smoke_test:
        run |= {"epochs": 1, "train_subset": 2000, "test_subset": 1000}
    if args.cpu_step:
        run |= cpu_step_fields(args.cpu_step, device)
    return [config_of(row, **run, seed=seed) for seed in seeds]


def confirmation_target(args, settings: dict) -> float:
    """The pass mark: --target, else the search's, except that a mark set for a subset
    search (98.5% on 12,000 images, say) says nothing about a model trained on all 60,000
    and scored on all 10,000 test images: that is judged by the product's mark."""
    if args.target is not None:
        return args.target
    probe = settings.get("train_subset") or settings.get("test_subset")
    full = not (args.train_subset or args.test_subset or args.smoke_test)
    if probe and full:
        return max(settings["target_acc"], SETTINGS_DEFAULTS["target_acc"])
    return settings["target_acc"]


def seed_runner(args) -> dict | None:
    """Ray task options for a seed, once Ray runs (None: seeds train here, one by one)."""
    address = args.address or os.environ.get("RAY_ADDRESS")
    if not (address or args.gpus or args.cpus > 1):
        return None

    start(address, cpus=args.cpus, gpus=args.gpus, worker_output=True)  # every seed's epochs
    import ray  # (after ray_door.start_ray: it sets what Ray reads on its first import)

    have = ray.cluster_resources().get("GPU", 0)
    if address and args.gpus > have:  # the seeds' tasks would wait forever for a GPU
        stop_ray()
        raise InputError(f"--gpus {args.gpus}: the cluster at {address} has {have:g} GPU(s)")
    return {"num_cpus": 1, "num_gpus": 0.25 if args.gpus else 0}  # 4 seeds per GPU


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        folder, candidates, settings = load_candidates(args)
        check_tables(folder)  # a table that could not take the rows: refused before training
        data = load_mnist(args.data_dir)
        parallel = seed_runner(args)
    except (InputError, TableError, DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ConnectionError as exc:  # --address / RAY_ADDRESS names no running cluster
        print(f"error: cannot join the Ray cluster: {exc}; check --address", file=sys.stderr)
        return 2
    # lazy: Ray takes seconds to load, and after start_ray's settings
    from ray.exceptions import RayError

    try:
        return confirm_all(args, folder, candidates, settings, data, parallel)
    except KeyboardInterrupt:
        print(
            "interrupted: the candidates whose seeds had all finished are written; rerun the "
            "same command for the others",
            file=sys.stderr,
        )
        return stop_code() or 130  # 143 for a SIGTERM in a chain
    except RayError as exc:  # a raylet or worker died under a seed (a node lost, OOM kill)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"error: Ray lost a seed's run ({type(exc).__name__}: {first[:160]}); the "
            "candidates finished before it are written; rerun the same command",
            file=sys.stderr,
        )
        return 1
    finally:
        if parallel is not None:
            stop_ray()


def confirm_all(args, folder: Path, candidates, settings, data, parallel) -> int:
    """Train every candidate's seeds and write each candidate (card, weights, rows) as soon
    as its own seeds are done. 0 when one passed."""
    target = confirmation_target(args, settings)
    device = "cuda" if args.gpus else "cpu"
    prov = provenance(device)
    rows = [row for _, row in candidates.iterrows()]
    groups = [seed_configs(row, args, device, parallel is not None) for row in rows]
    any_passed = lost_rows = False
    # every seed of every candidate is queued at once (no core idles while a candidate's
    # last seed runs); each candidate is written as soon as its own seeds are done
    cohort = bool(args.gpus) if args.cohort is None else args.cohort
    outs = [folder / "confirmed" / str(row["trial_id"]) for row in rows]
    kept, todo = stash.stashed_seeds(outs, groups, reuse=not cohort)

    def keep(index: int, run) -> None:  # each finished seed, stashed at once (publish.stash)
        if not cohort:
            [config] = [c for c in groups[index] if c.seed == run.seed]
            stash.save(outs[index], config, run)

    finished = train_groups(todo, data, parallel, cohort, on_run=keep)
    for (rank, row), configs in zip(candidates.iterrows(), groups, strict=True):
        print(
            f"confirming rank {rank + 1}: trial {row['trial_id']} {row['arch']} "
            f"{int(row['params']):,} params, chosen on {selection_of(row)} "
            f"(search val {row.get('final_val_acc', float('nan')):.2f}%, "
            f"test {row['final_test_acc']:.2f}%), seeds {[c.seed for c in configs]}",
            flush=True,
        )
    for (rank, row), configs, before in zip(candidates.iterrows(), groups, kept, strict=True):
        trained = {run.seed: run for run in next(finished)}
        runs = [before.get(c.seed) or trained[c.seed] for c in configs]
        summary = seed_summary(runs, target, settings["max_params"])
        passed = summary["all_seeds_passed"]
        out = folder / "confirmed" / str(row["trial_id"])
        first = configs[0]
        command = reproduce_command(
            shown(folder),
            str(row["trial_id"]),
            len(runs),
            first.threads,
            args.epochs,
            subsets=(first.train_subset, first.test_subset),
            cpu_step=cpu_step_of(first) if device == "cpu" else None,
        )
        write_card(out, row, first, runs, summary, prov, command)
        rows = confirmation_rows(row, rank + 1, runs, summary, first, prov)
        unwritten = [
            append_confirmations(folder, rows),
            append_confirmations(
                folder, confirmation_epoch_rows(rows, runs), "confirmation_epochs.parquet"
            ),
        ]
        for side in filter(None, unwritten):
            print(
                f"error: {side.name.split('.unwritten-')[0]} could not take the rows; they are "
                f"in {side} (the next retrain merges them in; weights and card in {out})",
                file=sys.stderr,
                flush=True,
            )
            lost_rows = True
        stash.clear(out)  # its seeds are in the card, the weights and the rows now
        if passed and not any_passed:  # best/: the first passing candidate, not a copy
            link(folder / "best", Path("confirmed") / str(row["trial_id"]))
        any_passed = any_passed or passed
        print(
            f"  mean {summary['mean_test_acc']:.2f}% ± {summary['std_test_acc']:.2f}, "
            f"min {summary['min_test_acc']:.2f}%: {'PASSED' if passed else 'not passed'} "
            f"(target {target}%); card in {out}",
            flush=True,
        )
    study_note(folder)
    return 0 if any_passed and not lost_rows else 1


def study_note(folder: Path) -> None:
    """The confirmations, in the search's Optuna study file (optuna-dashboard): a view, so a
    failure to write it is a note, never the command's failure."""
    # lazy: Optuna loads only where a study is read or written
    from optuna.exceptions import OptunaError

    try:
        rebuild(folder)
    except (OSError, ValueError, OptunaError) as exc:
        print(f"note: the Optuna study file was not updated ({exc})", flush=True)
