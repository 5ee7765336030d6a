"""The search driver behind `scripts/search.py`: Optuna proposes, ASHA stops, Ray runs.

The driver reads MNIST once and shares it with every trial through Ray's object store
(`tune.with_parameters`); it sizes the trials to the GPUs or CPUs it may use, writes the
parquet tables as trials finish and prints a summary at the end.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(os.environ.get("TUNE_MNIST_RESULTS", ROOT / "results"))
RAY_DIR = ".ray"  # Ray's own experiment files, under the storage root


class UsageError(ValueError):
    """Bad command-line input: printed as one line, exit status 2, nothing written."""


@dataclass(frozen=True)
class Plan:
    per_trial: dict[str, float]  # Ray resources of one trial
    concurrency: int  # trials at once


def plan_resources(
    gpus: int, trials_per_gpu: int, cpus_per_trial: int, cluster_cpus: float, cluster_gpus: float
) -> Plan:
    """Trials per GPU pack fractional GPUs; CPU-only trials take `cpus_per_trial` cores."""
    if gpus < 0:
        raise UsageError(f"--gpus {gpus}: must be >= 0 (0 = CPU only)")
    if trials_per_gpu < 1 or cpus_per_trial < 1:
        raise UsageError("--trials-per-gpu and --cpus-per-trial must be >= 1")
    if gpus > cluster_gpus:
        raise UsageError(
            f"--gpus {gpus}: only {int(cluster_gpus)} GPU(s) available here; "
            "pass --gpus 0 for CPU only or a number up to what exists"
        )
    if cpus_per_trial > cluster_cpus:
        raise UsageError(
            f"--cpus-per-trial {cpus_per_trial}: only {int(cluster_cpus)} CPU(s) available"
        )
    by_cpu = int(cluster_cpus // cpus_per_trial)
    if gpus == 0:
        return Plan({"cpu": cpus_per_trial}, max(1, by_cpu))
    return Plan(
        {"cpu": cpus_per_trial, "gpu": 1.0 / trials_per_gpu},
        max(1, min(gpus * trials_per_gpu, by_cpu)),
    )


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or ".." in name:
        raise UsageError(f"--name {name!r}: use letters, digits, '-', '_' and '.' only (no paths)")
    return name


def parse_args(argv: list[str] | None):
    import argparse

    parser = argparse.ArgumentParser(
        prog="scripts/search.py",
        description="Search tiny MNIST CNNs with Ray Tune (Optuna proposes, ASHA stops).",
    )
    parser.add_argument("--space", help="search-space YAML (default search_spaces/default.yaml)")
    parser.add_argument("--samples", type=int, help="trials to run (default: the space's)")
    parser.add_argument("--gpus", type=int, help="GPUs the search may use (default: all; 0 = CPU)")
    parser.add_argument("--trials-per-gpu", type=int, default=4, help="trials packed per GPU")
    parser.add_argument("--cpus-per-trial", type=int, default=1, help="CPU threads per trial")
    parser.add_argument("--name", help="experiment name: results/<name> (default: space-time)")
    parser.add_argument("--storage", help="Ray storage root, local path or URI (s3://...)")
    parser.add_argument("--address", help="existing Ray cluster (default $RAY_ADDRESS, or local)")
    parser.add_argument("--resume", action="store_true", help="continue experiment --name")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Optuna sampler")
    parser.add_argument("--max-failures", type=int, default=2, help="retries of a failing trial")
    parser.add_argument("--data-dir", help="folder with the MNIST IDX files ($TUNE_MNIST_DATA)")
    parser.add_argument("--smoke", action="store_true", help="search_spaces/smoke.yaml: seconds")
    parser.add_argument("--smoke-test", dest="smoke", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-report", action="store_true", help="skip the plots at the end")
    args = parser.parse_args(argv)
    if not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed {args.seed}: must be 0..{2**32 - 1} (the Optuna sampler's seed)")
    if args.max_failures < 0:
        raise UsageError(f"--max-failures {args.max_failures}: must be >= 0")
    if args.samples is not None and args.samples < 1:
        raise UsageError(f"--samples {args.samples}: must be >= 1")
    if args.gpus is not None and args.gpus < 0:
        raise UsageError(f"--gpus {args.gpus}: must be >= 0 (0 = CPU only)")
    if args.resume and not args.name:
        raise UsageError("--resume needs --name of the experiment to continue")
    return args


def prepare(args):
    """Everything that can fail on bad input, before Ray starts or anything is written."""
    from tune_mnist.data import load_mnist
    from tune_mnist.space import load_space

    default = "smoke.yaml" if args.smoke else "default.yaml"
    space = load_space(args.space or ROOT / "search_spaces" / default)
    if args.samples:
        space.settings["samples"] = args.samples
    stamped = f"{space.path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    name = check_name(stamped if args.name is None else args.name)  # '' is refused, not replaced
    folder = RESULTS / name
    storage = args.storage or str((RESULTS / RAY_DIR).resolve())
    experiment = f"{storage.rstrip('/')}/{name}"
    if args.resume and not (folder.is_dir() and _experiment_exists(experiment)):
        raise UsageError(f"--resume: no experiment {name!r} under {RESULTS} / {storage}")
    if not args.resume and folder.exists():
        raise UsageError(f"{folder} exists: pass --resume to continue it, or another --name")
    if args.gpus is not None and not args.address and not os.environ.get("RAY_ADDRESS"):
        import torch

        plan_resources(
            args.gpus,
            args.trials_per_gpu,
            args.cpus_per_trial,
            os.cpu_count() or 1,
            torch.cuda.device_count(),
        )
    data = load_mnist(args.data_dir)
    return space, name, folder, storage, experiment, data


def _experiment_exists(experiment: str) -> bool:
    from ray import tune

    return tune.Tuner.can_restore(experiment)


def keep_ray_local(address: str | None) -> None:
    """Without a cluster to join, make every Ray server listen on loopback only: Ray then
    uses 127.0.0.1 as the node address (as it does on a laptop OS). Read when ray is first
    imported, so this runs before that; workers inherit it."""
    if not (address or os.environ.get("RAY_ADDRESS")):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def main(argv: list[str] | None = None) -> int:
    from tune_mnist.config import ConfigError
    from tune_mnist.data import DataError
    from tune_mnist.space import SpaceError

    try:
        args = parse_args(argv)
        keep_ray_local(args.address)
        prepared = prepare(args)
    except (UsageError, SpaceError, DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from tune_mnist.run import run_search

    try:
        return run_search(args, *prepared)
    except UsageError as exc:  # e.g. more GPUs asked than the cluster has
        print(f"error: {exc}", file=sys.stderr)
        return 2


def epochs_summary(trials_df, max_epochs: int) -> tuple[int, int]:
    trained = trials_df[trials_df["status"] != "over_budget"]
    return int(trained["epochs_run"].sum()), int(len(trained) * max_epochs)


def format_summary(trials_df, passing, settings, wall_s: float, slots: int, paths) -> str:
    counts = trials_df["status"].value_counts().to_dict()
    lines = ["", f"== search summary: {len(trials_df)} trials =="]
    lines.append(
        "  "
        + ", ".join(
            f"{s}: {counts.get(s, 0)}"
            for s in ("completed", "asha_stopped", "over_budget", "diverged", "error")
        )
    )
    done, grid = epochs_summary(trials_df, settings["epochs"])
    saved = 100 * (1 - done / grid) if grid else 0.0
    lines.append(f"  epochs trained {done} vs {grid} for every trial in full ({saved:.0f}% saved)")
    busy = trials_df["train_s"].sum()
    share = 100 * busy / (wall_s * slots) if wall_s and slots else math.nan
    lines.append(
        f"  wall {wall_s:.1f}s; trials trained {busy:.1f}s in all over {slots} slot(s): "
        f"{share:.0f}% of slot time training, the rest Ray and start-up overhead"
    )
    target = settings["target_acc"]
    lines.append(
        f"  passing (<= {settings['max_params']:,} params, final validation acc >= {target}% "
        f"on {settings['val_size']:,} held-out images): {len(passing)}"
    )
    for _, row in passing.iterrows():
        lines.append(
            f"    {row['params']:>6,} params  val {row['final_val_acc']:.2f}%  "
            f"(test {row['final_test_acc']:.2f}%, reported only)  {row['arch']:<11} "
            f"trial {row['trial_id']}"
        )
    lines.append("  written: " + ", ".join(str(p) for p in paths))
    return "\n".join(lines)
