"""Starting Ray, building (or restoring) the Tuner and writing results as trials finish."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from tune_mnist.plan import Plan, plan_resources
from tune_mnist.results import TrialView, build_tables, write_tables
from tune_mnist.space import METRICS
from tune_mnist.store import provenance, write_json
from tune_mnist.summary import format_summary
from tune_mnist.trainable import run_trial


class ResultsWriter(tune.Callback):
    """Rewrites the parquet tables whenever a trial ends, so a crash loses nothing.

    A trial's epochs are the union of what its result.json files hold (the history of earlier
    driver processes, after a resume) and every report this driver received (`on_trial_result`):
    Ray writes result.json in bursts, so under load a file read at a trial's end can miss its
    last epochs, and the trial would be recorded as cut short."""

    def __init__(self, folder: Path, space, cpus: int, prov: dict[str, str]):
        self.folder, self.space, self.cpus, self.prov = folder, space, cpus, prov
        self.started = time.time()  # wall clock: a resumed search unpickles this writer
        self.reported: dict[str, list[dict]] = {}  # every report received, by trial id

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.reported.setdefault(trial.trial_id, []).append(dict(result))

    def with_reports(self, view: TrialView) -> TrialView:
        """The view with this driver's reports appended (an epoch seen twice: the later wins,
        and both copies are the same report)."""
        extra = self.reported.get(view.trial_id, [])
        return replace(view, results=[*view.results, *extra]) if extra else view

    def write(self, trials, ended=None, status: str = "") -> list[Path]:
        """`ended` is the trial this event is about: Ray still lists it as RUNNING here."""
        views = [self.with_reports(TrialView.of_trial(t)) for t in trials]
        if ended is not None:
            views = [
                replace(v, status=status) if v.trial_id == ended.trial_id else v for v in views
            ]
        return write_tables(self.folder, *build_tables(views, self.space, self.cpus, self.prov))

    def most_complete(self, view: TrialView) -> TrialView:
        """A finished trial from the ResultGrid (whose storage copy can lag too), completed
        with this driver's reports."""
        return self.with_reports(view)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.write(trials, trial, "TERMINATED")
        self.progress(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.write(trials, trial, "ERROR")
        self.progress(trials)

    def progress(self, trials) -> None:
        """`progress: 5 of 24 trials ended, 2 running, 6.1 min so far, about 23 min left`: the
        estimate assumes the rest take as long on average as the ended ones did."""
        total = self.space.settings["samples"]
        ended = sum(t.status in ("TERMINATED", "ERROR") for t in trials) + 1  # + this one
        running = sum(t.status == "RUNNING" for t in trials) - 1
        elapsed = time.time() - self.started
        left = elapsed / ended * (total - ended) if ended < total else 0.0
        print(
            f"progress: {min(ended, total)} of {total} trials ended, {max(running, 0)} running, "
            f"{elapsed / 60:.1f} min so far, about {left / 60:.0f} min left",
            flush=True,
        )

    def on_experiment_end(self, trials, **info):
        self.write(trials)


def start_ray(address: str | None) -> None:
    """Join a cluster if one is named; else a local Ray sized for this machine, no dashboard."""
    address = address or os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # One checkpoint kept per trial forces a state snapshot each epoch: wanted (nothing lost
    # on a crash), so Ray's warning about it is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    import torch

    ray.init(
        num_cpus=os.cpu_count(),
        num_gpus=torch.cuda.device_count(),
        include_dashboard=False,
        dashboard_host="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )


def make_plan(args) -> Plan:
    resources = ray.cluster_resources()
    cluster_gpus = resources.get("GPU", 0)
    gpus = int(cluster_gpus) if args.gpus is None else args.gpus
    return plan_resources(
        gpus, args.trials_per_gpu, args.cpus_per_trial, resources.get("CPU", 1), cluster_gpus
    )


def make_tuner(args, space, name, storage, experiment, data, plan, writer):
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, data=data, space=space, cpus=args.cpus_per_trial),
        plan.per_trial,
    )
    if args.resume:
        return tune.Tuner.restore(
            experiment, trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    import optuna

    settings = space.settings
    sampler = optuna.samplers.TPESampler(
        seed=args.seed,
        multivariate=True,
        group=True,  # the conditional space: sample each architecture's branch jointly
        n_startup_trials=max(4, min(10, settings["samples"] // 3)),
    )
    searcher = OptunaSearch(
        space=space.define_by_run,
        metric=settings["metric"],
        mode=settings["mode"],
        sampler=sampler,
        points_to_evaluate=space.optuna_points() or None,
    )
    # ASHA may compare another metric than the one Optuna optimises; Ray then wants the
    # scheduler's metric set on the scheduler and none on the TuneConfig
    asha_metric = settings.get("asha_metric") or settings["metric"]
    own = asha_metric != settings["metric"]
    scheduler = ASHAScheduler(
        time_attr="epoch",
        max_t=settings["epochs"],
        grace_period=settings["grace_period"],
        reduction_factor=settings["reduction_factor"],
        metric=asha_metric if own else None,
        mode=METRICS[asha_metric] if own else None,
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=None if own else settings["metric"],
            mode=None if own else settings["mode"],
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=settings["samples"],
            max_concurrent_trials=plan.concurrency,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            # keep every epoch's checkpoint (~100 KB each for these models): Ray snapshots the
            # experiment state every few seconds, so after a hard kill the snapshot may name a
            # checkpoint that num_to_keep=1 has already deleted, and that trial then fails on
            # --resume ("Could not recover from checkpoint as it does not exist on storage")
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            callbacks=[writer],
            verbose=1,
        ),
    )


def run_search(args, space, name, folder, storage, experiment, data) -> int:
    started = time.perf_counter()
    start_ray(args.address)
    try:
        plan = make_plan(args)  # raises UsageError before anything is written
        device = "cuda" if plan.per_trial.get("gpu") else "cpu"
        prov = provenance(device)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "name": name,
            "space": str(space.path),
            "settings": space.settings,
            "experiment": experiment,
            "argv": sys.argv,
            "plan": plan.__dict__,
            **prov,
        }
        write_json(folder / ("resume.json" if args.resume else "search.json"), meta)
        print(
            f"search {name}: {space.settings['samples']} trials, {plan.concurrency} at once, "
            f"each {plan.per_trial}; results in {folder}",
            flush=True,
        )
        writer = ResultsWriter(folder, space, args.cpus_per_trial, prov)
        tuner = make_tuner(args, space, name, storage, experiment, data, plan, writer)
        grid = tuner.fit()
        wall_s = time.perf_counter() - started
        views = [writer.most_complete(TrialView.of_result(result)) for result in grid]
        tables = build_tables(views, space, args.cpus_per_trial, prov)
    finally:
        ray.shutdown()
    return finish(args, folder, space, tables, wall_s, plan)


def finish(args, folder: Path, space, tables, wall_s: float, plan: Plan) -> int:
    trials_df, epochs_df, passing = tables
    paths = write_tables(folder, trials_df, epochs_df, passing)
    summary = format_summary(trials_df, passing, space.settings, wall_s, plan.concurrency, paths)
    print(summary, flush=True)
    write_json(
        folder / "summary.json",
        {
            "wall_s": wall_s,
            "slots": plan.concurrency,
            "statuses": json.loads(trials_df["status"].value_counts().to_json()),
        },
    )
    if not args.no_report:
        from tune_mnist.report import build

        print(f"  report: {build(folder)}", flush=True)
    return 0
