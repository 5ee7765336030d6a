"""How many trials run at once and what each holds: Ray resources from --gpus / --cpus."""

from __future__ import annotations

from dataclasses import dataclass


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
        raise UsageError("--trials-per-gpu and --threads must be >= 1")
    if gpus > cluster_gpus:
        raise UsageError(
            f"--gpus {gpus}: only {int(cluster_gpus)} GPU(s) available here; "
            "pass --gpus 0 for CPU only or a number up to what exists"
        )
    if cpus_per_trial > cluster_cpus:
        raise UsageError(f"--threads {cpus_per_trial}: only {int(cluster_cpus)} CPU(s) available")
    by_cpu = int(cluster_cpus // cpus_per_trial)
    if gpus == 0:
        return Plan({"cpu": cpus_per_trial}, max(1, by_cpu))
    return Plan(
        {"cpu": cpus_per_trial, "gpu": 1.0 / trials_per_gpu},
        max(1, min(gpus * trials_per_gpu, by_cpu)),
    )
