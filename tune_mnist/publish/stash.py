"""The seeds of a confirmation kept one file each the moment they finish
(`results/<name>/confirmed/<trial>/.seeds/seed<N>.pt`), so that a Ctrl-C or a kill during a
confirmation costs only the seeds still training: the same command again loads these
instead of training them (the rows, weights and card are written, as before, once the
candidate's last seed is done; then the stash goes). A stashed seed is reused only for the
very config it was trained with, and only when seeds train alone: a fused cohort trains its
seeds together.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
from pathlib import Path

import torch

from tune_mnist.publish.seeds import SeedRun
from tune_mnist.train.config import TrainConfig

FOLDER = ".seeds"


def _path(out: Path, seed: int) -> Path:
    return out / FOLDER / f"seed{seed}.pt"


def save(out: Path, config: TrainConfig, run: SeedRun) -> None:
    """Written whole or not at all (a temporary name, then a rename)."""
    path = _path(out, run.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(
        {"config": config.replace(seed=run.seed).to_dict(), "run": dataclasses.asdict(run)}, tmp
    )
    os.replace(tmp, path)


def load(out: Path, config: TrainConfig) -> SeedRun | None:
    """The stashed run of `config` (its seed, its whole config), else None: a missing,
    damaged or other config's file means the seed trains again."""
    path = _path(out, config.seed)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["config"] != config.to_dict():
            return None
        return SeedRun(**saved["run"])
    except (
        OSError,
        RuntimeError,
        KeyError,
        TypeError,
        EOFError,
        ValueError,
        pickle.UnpicklingError,
    ):
        return None


def clear(out: Path) -> None:
    shutil.rmtree(out / FOLDER, ignore_errors=True)


def stashed_seeds(outs, groups, reuse: bool) -> tuple[list[dict], list[list]]:
    """(per candidate, its seeds finished by an earlier interrupted run; per candidate, the
    configs still to train). Nothing is reused for a fused cohort (`reuse` False)."""
    kept = [
        {c.seed: run for c in configs if reuse and (run := load(out, c)) is not None}
        for out, configs in zip(outs, groups, strict=True)
    ]
    for out, before in zip(outs, kept, strict=True):
        if before:
            print(
                f"trial {out.name}: seeds {sorted(before)} finished before an interruption: "
                "loaded, not trained again",
                flush=True,
            )
    todo = [[c for c in g if c.seed not in k] for g, k in zip(groups, kept, strict=True)]
    return kept, todo
