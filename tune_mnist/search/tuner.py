"""Starting Ray, building (or restoring) the Tuner and writing results as trials finish."""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import ray
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from tune_mnist.files import atomic_write_bytes, write_json
from tune_mnist.machine import provenance
from tune_mnist.paths import below
from tune_mnist.results import write_tables
from tune_mnist.search import ray_door, rungs
from tune_mnist.search.atomic_fs import storage_filesystem
from tune_mnist.search.budget import DRAWS, MAX_OVER
from tune_mnist.search.journal import EMPTY
from tune_mnist.search.plan import Plan, plan_resources
from tune_mnist.search.promotion import Limiter, PromotionASHA
from tune_mnist.search.screen import ScreenSearch
from tune_mnist.search.space import METRICS
from tune_mnist.search.stops import catch_sigterm, stop_code
from tune_mnist.search.summary import (
    JUDGED,
    across_invocations,
    cut_short,
    first_cause,
    format_summary,
    full_fidelity,
)
from tune_mnist.search.trainable import run_trial
from tune_mnist.search.warm import STUDY, warm_line
from tune_mnist.search.writer import Relay, ResultsWriter, set_live
from tune_mnist.train.config import TrainConfig, cpu_step_fields, cpu_step_of


def start_search_ray(address: str | None) -> None:
    """Join a cluster if one is named; else a local Ray sized for this machine (ray_door)."""
    # One checkpoint kept per trial forces a state snapshot each epoch: wanted (nothing lost
    # on a crash), so Ray's warning about it is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Ray's experiment snapshot every 2 s (its default adapts, 10 s or more): a trial that a
    # kill catches before any snapshot names it is lost to Ray, though not to our journal
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # a trial the journal had ended but Ray's snapshot had not (a kill in between) returns at
    # once on a resume, reporting nothing (trainable.run_trial); Ray's strict check would
    # then fail the whole search for the missing metric. Every real report carries it.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    ray_door.start_ray(address)


def make_plan(args) -> Plan:
    resources = ray.cluster_resources()
    cluster_gpus = resources.get("GPU", 0)
    gpus = int(cluster_gpus) if args.gpus is None else args.gpus
    return plan_resources(
        gpus, args.trials_per_gpu, args.cpus_per_trial, resources.get("CPU", 1), cluster_gpus
    )


def make_tuner(args, space, name, storage, experiment, data, plan, ledger=None):
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            data=data,
            space=space,
            cpus=args.cpus_per_trial,
            ledger=ledger or EMPTY,  # the journal's word, for a resume
        ),
        plan.per_trial,
    )
    filesystem = storage_filesystem(storage)  # whole-file writes (tune_mnist.search.atomic_fs)
    if args.resume:
        ray_door.repoint_new_trials(storage, filesystem)
        return tune.Tuner.restore(
            experiment,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=filesystem,
        )
    warm = getattr(args, "warm", None)
    searcher, scheduler = make_search(space, args.seed, plan.concurrency, warm)
    settings = space.settings
    _, own = asha_metric(settings)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=None if own else settings["metric"],
            mode=None if own else settings["mode"],
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=settings["samples"],
            # a finished trial's worker process takes the next trial: no new process, no
            # second CUDA start-up, and the data stays on its GPU (data.on_device)
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            storage_filesystem=filesystem,
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            # keep every epoch's checkpoint (~100 KB each for these models): Ray snapshots the
            # experiment state every few seconds, so after a hard kill the snapshot may name a
            # checkpoint that num_to_keep=1 has already deleted, and that trial then fails on
            # --resume ("Could not recover from checkpoint as it does not exist on storage")
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            callbacks=[Relay()],  # stateless: see tune_mnist.search.writer
            # Ray's reporter stays silent (ray_door.quiet_tune_output): the writer prints a line
            # per trial start, end and failure, and a heartbeat with the ETA
            verbose=0,
        ),
    )


def make_search(space, seed: int, concurrency: int, warm=None) -> tuple[Limiter, PromotionASHA]:
    """Optuna's TPE proposes (one objective, or accuracy and size in Pareto mode), at most
    `concurrency` running at once; ASHA by promotion stops (tune_mnist.search.promotion).
    `warm` (tune_mnist.search.warm): a study already told an earlier search's trials."""
    import optuna  # lazy: Optuna loads only where a study is read or written

    # the `group` sampler option is marked experimental, and a new in-memory study is
    # announced on every start: noise in a search's output
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = space.settings
    sampler = optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,
        group=True,  # the conditional space: sample each architecture's branch jointly
        n_startup_trials=max(4, min(10, settings["samples"] // 3)),
    )
    # Pareto mode: the parameter count is a second objective (every report carries it)
    pareto = settings["pareto"]
    metric, own = asha_metric(settings)
    time_attr, milestones, max_t = rungs.milestones(settings)
    deferred = settings.get("promotion") == "end"
    screen = {"time_attr": time_attr, "first": milestones[0]} if deferred and milestones else {}
    searcher = (ScreenSearch if screen else OptunaSearch)(
        space=space.define_by_run,
        metric=[settings["metric"], "params"] if pareto else settings["metric"],
        mode=[settings["mode"], "min"] if pareto else settings["mode"],
        sampler=sampler,
        # a warm study was told the earlier search's trials, its reference points among them
        points_to_evaluate=None if warm else (space.optuna_points() or None),
        **({"storage": warm.storage, "study_name": STUDY} if warm else {}),
        **screen,
    )
    scheduler = PromotionASHA(
        time_attr,
        milestones,
        max_t,
        settings["reduction_factor"],
        metric=metric if own else None,
        mode=METRICS[metric] if own else None,
        samples=settings["samples"],
        deferred=deferred,
    )
    return Limiter(searcher, max_concurrent=concurrency), scheduler


def asha_metric(settings: dict) -> tuple[str, bool]:
    """What ASHA compares, and whether the scheduler must name it itself: when it differs
    from the one metric Optuna optimises (or Optuna has two), Ray wants the scheduler's
    metric set on the scheduler and none on the TuneConfig."""
    metric = settings.get("asha_metric") or settings["metric"]
    return metric, settings["pareto"] or metric != settings["metric"]


def run_search(args, space, name, folder, storage, experiment, data) -> int:
    started = time.perf_counter()
    start_search_ray(args.address)
    catch_sigterm()
    writer = None
    try:
        plan = make_plan(args)  # raises UsageError before anything is written
        device = "cuda" if plan.per_trial.get("gpu") else "cpu"
        prov = provenance(device)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "name": name,
            # a resume's space is the copy in its results folder: named below that folder
            "space": getattr(args, "space_source", None) or below(str(space.path), folder.parent),
            "settings": space.settings,
            # Ray's folder for it, relative to the results folder when it lies below it
            "experiment": below(experiment, folder.parent),
            "argv": getattr(args, "argv", None) or sys.argv,  # a chain's stage: its own
            "sampler_seed": args.seed,
            "plan": plan.__dict__,
            "over_budget_share": getattr(args, "over_budget_share", None),  # of DRAWS draws
            "max_params_flag": args.max_params,
            # the trials its study was told first (a resume's record: none, its study kept)
            **({"warm_start": args.warm.record()} if getattr(args, "warm", None) else {}),
            **prov,
        }
        write_json(folder / ("resume.json" if args.resume else "search.json"), meta)
        if not args.resume:  # a resume reads the space from here (tune_mnist.search.command)
            atomic_write_bytes(folder / "space.yaml", Path(space.path).read_bytes())
        link_curves(folder, experiment)
        print(
            f"search {name}: {space.settings['samples']} trials, {plan.concurrency} at once, "
            f"each {plan.per_trial}; results in {folder}",
            flush=True,
        )
        print(budget_line(args, space.settings), flush=True)
        if getattr(args, "warm", None):
            print(warm_line(args.warm), flush=True)
        if device == "cpu":
            step = space.settings["cpu_step"]
            chosen = cpu_step_of(TrainConfig(**cpu_step_fields(step, "cpu")))
            own = sorted({"precision", "channels_last"} & (set(space.fixed) | set(space.shared)))
            where = f"; the space's own {', '.join(own)} win" if own else ""
            print(f"CPU step: {chosen} (cpu_step {step}{where}; README, The CPU step)")
        writer = ResultsWriter(folder, space, args.cpus_per_trial, prov, experiment)
        set_live(writer)
        ray_door.quiet_tune_output()  # our lines instead of Ray Tune's
        ledger = writer.ledger()  # empty for a new search
        tuner = make_tuner(args, space, name, storage, experiment, data, plan, ledger)
        ray_door.fit(tuner)
        wall_s = time.perf_counter() - started
        tables = writer.tables()
        counts = (*writer.counts(), writer.busy_s, writer.peak_running)
        # tables and summary before Ray stops: a crash inside Ray's teardown loses nothing
        return finish(args, folder, space, tables, wall_s, plan, counts)
    except KeyboardInterrupt:  # a second Ctrl-C, or one before Ray Tune's loop began
        if writer is not None:
            writer.write()
        raise
    finally:
        set_live(None)
        ray_door.stop_ray()


def budget_line(args, settings: dict) -> str:
    """`budget 4,000 parameters (widths x0.71); 11% of 400 random draws over it`."""
    share = getattr(args, "over_budget_share", float("nan"))
    factor = getattr(args, "width_factor", None)
    scaled = f" (--max-params: widths x{factor:.2f})" if factor else ""
    warn = "; more than 20%: narrow the space's widths" if share > MAX_OVER else ""
    return (
        f"budget {settings['max_params']:,} parameters{scaled}; {100 * share:.0f}% of "
        f"{DRAWS} random draws of the space are over it (recorded, never trained){warn}"
    )


def finish(args, folder: Path, space, tables, wall_s: float, plan: Plan, counts) -> int:
    trials_df, epochs_df, passing = tables
    paths = write_tables(folder, trials_df, epochs_df, passing)
    ended, _, total, busy, peak = counts
    summary = format_summary(
        trials_df, passing, space.settings, wall_s, plan.concurrency, paths, total, busy
    )
    nodes = trials_df["node_id"] if "node_id" in trials_df else []
    per_node = {
        str(k): int(v) for k, v in pd.Series(nodes).replace("", "none").value_counts().items()
    }
    print(summary, flush=True)
    print(
        f"  at most {peak} trial(s) ran at once; trials per Ray node: "
        + ", ".join(f"{node[:8]} {n}" for node, n in per_node.items()),
        flush=True,
    )
    resumed = bool(getattr(args, "resume", False))
    write_json(
        folder / "summary.json",
        {
            "wall_s": wall_s,  # this invocation's
            "slots": plan.concurrency,
            # with the most trials Ray held resources for at once, over every invocation
            **across_invocations(folder, resumed, wall_s, plan.concurrency, peak),
            "per_trial": plan.per_trial,
            "trials_per_node": per_node,
            "trials": total,
            "ended": ended,
            "statuses": json.loads(trials_df["status"].value_counts().to_json()),
            # core-seconds trained / those a full run of each judged trial would take
            "full_fidelity_share": _number(full_fidelity(trials_df)[0]),
            "trained_to_end": int(trials_df["status"].isin(JUDGED).sum()),
            "cut_short": cut_short(trials_df, rungs.trial_epochs(space.settings)),
            "rungs": space.settings.get("rungs") or ["full"],
        },
    )
    # Ctrl-C or SIGTERM: Ray Tune stopped its loop and saved its state (a SIGTERM that came
    # as the last trial ended stops the search all the same: a chain must not go on)
    if ended < total or stop_code():
        raise SearchInterrupted(ended, total)
    if not trials_df["status"].isin(JUDGED).any():  # a script must not read success here
        cause = first_cause(trials_df, space.settings)
        print(f"error: no trial trained to its end: {cause}", file=sys.stderr, flush=True)
        return 1
    if not args.no_report:
        from tune_mnist.search.report import build  # lazy: the report's matplotlib, only at the end

        print(f"  report: {build(folder)}", flush=True)
    return 0


CURVES = "tensorboard"  # results/<name>/tensorboard: Ray Tune's own TensorBoard event files


def link_curves(folder: Path, experiment: str) -> None:
    """`results/<name>/tensorboard`, a relative link to Ray's experiment folder, where Ray
    Tune's TensorBoard logger writes each trial's curves: `tensorboard --logdir
    results/<name>` finds them. Local storage only (a URI has no folder to link to); where
    the file system has no links, the curves stay where Ray put them."""
    link = folder / CURVES
    if "://" in experiment or link.is_symlink() or link.exists():
        return
    target = os.path.relpath(Path(experiment).resolve(), folder.resolve())
    try:
        link.symlink_to(target, target_is_directory=True)
    except OSError:
        pass


def _number(value: float) -> float | None:
    return None if value != value else value  # NaN (nothing judged) is JSON's null


class SearchInterrupted(Exception):
    def __init__(self, ended: int, total: int):
        super().__init__(f"{ended} of {total} trials ended, {total - ended} left")
