"""The fidelity study's runs: which configurations, how each run is trained and recorded.

Every run is a Ray task on one core (`train_queue`); its row holds the full TrainConfig it
trained, the fidelity, the source trial, the final validation accuracy, the seconds and the
provenance, appended to runs.parquet as each run ends (a kill loses at most the runs in
flight). A warmup-stable-decay job trains one trunk and branches it at each rung, so its
rows share the trunk's epochs.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from tune_mnist.fidelity import config_at, nominal_cost
from tune_mnist.machine import provenance
from tune_mnist.paths import results_root
from tune_mnist.search.ray_door import start_ray, stop_ray, wait_one
from tune_mnist.search.stops import catch_sigterm
from tune_mnist.tables import read_parquet, write_parquet
from tune_mnist.train.config import TrainConfig
from tune_mnist.train.data import load_mnist
from tune_mnist.train.loop import train

DEFAULT_FOLDER = results_root() / "fidelity-study"
CAMPAIGNS = ("campaign3-8k", "campaign3-4k", "campaign3-4k-narrow", "campaign3-3k")
N_TRAIN = 55_000  # the training images of a search with 5,000 held out
WSD_RUNGS = (3, 5)
BOXES = {"4k": (2500, 4000), "8k": (7000, 8000)}
STOPPED_TAKEN = {"4k": 6, "8k": 2}  # ASHA-stopped trials trained to 15 here, per box
SECOND_SEEDS = 8


@dataclass(frozen=True)
class Job:
    search: str
    trial_id: str
    fidelity: str  # a tune_mnist.fidelity name, or "wsd" (a trunk and its branches)
    config: TrainConfig  # the full-fidelity config it measures (its seed included)

    @property
    def key(self) -> str:
        return f"{self.search}/{self.trial_id}/{self.fidelity}/seed{self.config.seed}"


def _spread(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """`n` rows evenly spaced over `frame` sorted by validation accuracy (ends included)."""
    ordered = frame.sort_values(["final_val_acc", "trial_id"]).reset_index(drop=True)
    if len(ordered) <= n:
        return ordered
    picks = sorted({round(i * (len(ordered) - 1) / (n - 1)) for i in range(n)})
    return ordered.iloc[picks]


def configurations(root: Path | None = None, smoke: bool = False) -> pd.DataFrame:
    """The study's configurations: every campaign trial that trained 15 epochs, and per box
    an even spread (by epoch-12 accuracy) of the trials ASHA stopped. `second_seed` marks the
    SECOND_SEEDS that a second seed trains at full fidelity, evenly spread likewise."""
    root = results_root() if root is None else root
    frames = []
    for name in CAMPAIGNS:
        trials = read_parquet(root / name / "trials.parquet")
        frames.append(trials.assign(search=name))
    trials = pd.concat(frames, ignore_index=True)
    completed = trials[trials["status"] == "completed"]
    picked = [completed]
    for box, (low, high) in BOXES.items():
        stopped = trials[(trials["status"] == "asha_stopped") & trials["params"].between(low, high)]
        picked.append(_spread(stopped, STOPPED_TAKEN[box]))
    out = pd.concat(picked, ignore_index=True)
    out["box"] = [
        next((b for b, (lo, hi) in BOXES.items() if lo <= p <= hi), "") for p in out.params
    ]
    seconds = _spread(completed, SECOND_SEEDS)
    keys = set(zip(seconds["search"], seconds["trial_id"], strict=True))
    out["second_seed"] = [k in keys for k in zip(out["search"], out["trial_id"], strict=True)]
    if smoke:
        return out.head(2)
    return out.reset_index(drop=True)


def _box(params: int) -> str:
    return next((box for box, (low, high) in BOXES.items() if low <= params <= high), "")


def recorded(folder: Path) -> set[str]:
    """The keys of the runs already recorded (a WSD trunk counts once all its rungs are)."""
    path = folder / "runs.parquet"
    if not path.is_file():
        return set()
    return set(read_parquet(path)["job"])


def row(job: Job, config: TrainConfig, final: dict, seconds: float, prov: dict, **extra) -> dict:
    return {
        "job": job.key,
        "search": job.search,
        "trial_id": job.trial_id,
        "fidelity": extra.pop("fidelity", job.fidelity),
        "nominal_cost": nominal_cost(job.config, extra.get("rung_fidelity", job.fidelity))
        if job.fidelity != "wsd"
        else float("nan"),
        **config.to_dict(),
        "final_val_acc": final.get("val_acc", float("nan")),
        "final_test_acc": final.get("test_acc", float("nan")),
        "train_s": seconds,  # core-seconds: every run is one thread
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **prov,
        **extra,
    }


def append(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "runs.parquet"
    old = [read_parquet(path)] if path.is_file() else []
    write_parquet(path, pd.concat([*old, pd.DataFrame(rows)], ignore_index=True))


def _snapshot(state) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def run_job(job: Job, data, smoke: bool) -> list[dict]:
    """Train one job; its rows (a WSD trunk: one per rung, keyed by the job)."""
    prov = provenance("cpu")
    base = job.config.replace(train_subset=2000, test_subset=1000) if smoke else job.config
    if job.fidelity != "wsd":
        config = config_at(base, job.fidelity, N_TRAIN)
        started = time.perf_counter()
        [result] = train(config, data)
        curve = [round(m.get("val_acc", float("nan")), 4) for m in result.history]
        seconds = time.perf_counter() - started
        return [row(job, config, result.final, seconds, prov, val_curve=curve)]
    # the trunk is the last rung's run; each earlier rung branches off its checkpoint
    last = config_at(base, f"wsd{WSD_RUNGS[-1]}", N_TRAIN)
    saved: dict[int, tuple[dict, float]] = {}
    started = time.perf_counter()

    def keep(metrics, state):
        if state.epoch in WSD_RUNGS[:-1]:
            saved[state.epoch] = (_snapshot(state), time.perf_counter() - started)

    [trunk] = train(last, data, on_epoch=keep)
    seconds = time.perf_counter() - started
    rows = [
        row(job, last, trunk.final, seconds, prov, fidelity=f"wsd{WSD_RUNGS[-1]}", branch_s=0.0)
    ]
    for rung, (state, trunk_s) in saved.items():
        config = config_at(base, f"wsd{rung}", N_TRAIN)
        branch_started = time.perf_counter()
        [branch] = train(config, data, resume=state)
        branch_s = time.perf_counter() - branch_started
        rows.append(
            row(
                job,
                config,
                branch.final,
                trunk_s + branch_s,
                prov,
                fidelity=f"wsd{rung}",
                branch_s=branch_s,
            )
        )
    for r in rows:
        r["nominal_cost"] = nominal_cost(job.config, r["fidelity"])
    return rows


def train_queue(queue: list[Job], folder: Path, args) -> int:
    """Train `queue` as Ray tasks of one core each, recording each run as it ends."""

    data = load_mnist(args.data_dir)
    start_ray(None, cpus=args.cpus)

    import ray  # lazy: Ray takes seconds to load, and after start_ray's settings

    catch_sigterm()  # after ray.init; SIGTERM takes Ctrl-C's path: what finished is kept

    task = ray.remote(run_job).options(num_cpus=1, max_retries=0)
    shared = ray.put(data)
    pending = {task.remote(job, shared, args.smoke): job for job in queue}
    started, failed, done = time.perf_counter(), 0, 0
    try:
        while pending:
            ready = wait_one(list(pending))
            job = pending.pop(ready)
            done += 1
            try:
                rows = ray.get(ready)
            except ray.exceptions.RayError as exc:
                failed += 1
                print(f"  {job.key}: failed ({str(exc).splitlines()[0][:160]})", flush=True)
                continue
            append(folder, rows)
            elapsed = time.perf_counter() - started
            left = elapsed / done * len(pending)
            figures = ", ".join(f"{r['fidelity']} {r['final_val_acc']:.2f}%" for r in rows)
            print(
                f"  [{done}/{done + len(pending)}] {job.key}: {figures} "
                f"({rows[0]['train_s']:.0f}s); ~{left / 60:.0f} min left",
                flush=True,
            )
    finally:
        stop_ray()
    return 1 if failed else 0
