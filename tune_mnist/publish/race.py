"""Race a search's contenders on more validation seeds before any test figure.

One seed at 5,000 validation images cannot separate configurations 0.05 points apart (its
standard error is 0.11), so the search's best few are raced (SMAC's intensification): each
round trains one more seed of every contender still in the race, at full fidelity on the
search's own split; a contender clearly below the leader (by more than twice the standard
error of the difference) is dropped; the race ends when one contender's estimated chance to
pass is clearly ahead of the rest, or when its budget of runs is spent. The workers are never
given the test images: their data's test set is the validation set itself.

Tables, in the search's folder: race_runs.parquet (one row per seed trained: its config,
seed, validation accuracy, seconds and provenance) and race.parquet (one row per contender:
its seeds, mean, standard deviation, estimated pass chance and status). A run already
recorded is never trained again: an interrupted race continues where it stopped.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tune_mnist import rule
from tune_mnist.publish.records import SIDE, append_confirmations
from tune_mnist.results import config_of
from tune_mnist.tables import read_parquet, write_parquet
from tune_mnist.train.config import TrainConfig
from tune_mnist.train.data import MNIST

SEED_SD = 0.08  # points: the least seed-to-seed spread assumed (seeds move a model 0.05-0.1)
CONFIRM_SEEDS = 5  # a pass needs every one of 5 fresh seeds at the mark
AHEAD = 2.0  # the leader's pass chance over the next one's that ends the race
MIN_SEEDS = 3  # seeds the leader needs before the race can end on its chance


@dataclass
class Contender:
    trial_id: str
    config: TrainConfig  # the trial's own config (its seed is the search's seed 0)
    params: int
    vals: list[float] = field(default_factory=list)  # by seed: 0 (the search's), 1, 2, ...
    status: str = "racing"  # racing, dropped, winner

    @property
    def mean(self) -> float:
        return statistics.fmean(self.vals)

    @property
    def sd(self) -> float:
        spread = statistics.stdev(self.vals) if len(self.vals) > 1 else 0.0
        return max(spread, SEED_SD)


def pass_chance(contender: Contender, target: float) -> float:
    """The chance that every one of 5 fresh seeds reaches `target`, if a seed's figure is
    normal around the contender's mean with its spread (at least SEED_SD)."""
    one = 0.5 * (1 + math.erf((contender.mean - target) / (contender.sd * math.sqrt(2))))
    return one**CONFIRM_SEEDS


def contenders(trials: pd.DataFrame, top: int, max_params: int) -> list[Contender]:
    """The `top` completed trials within budget, best final validation accuracy first."""
    done = trials[
        (trials["status"] == "completed")
        & trials["params"].map(lambda p: rule.within(p, max_params))
    ]
    done = done.sort_values(["final_val_acc", "params"], ascending=[False, True]).head(top)
    return [
        Contender(r["trial_id"], config_of(r), int(r["params"]), [float(r["final_val_acc"])])
        for _, r in done.iterrows()
    ]


def judge(field_: list[Contender], target: float) -> bool:
    """Drop the contenders clearly below the leader; True when the race is decided."""
    alive = [c for c in field_ if c.status == "racing"]
    leader = max(alive, key=lambda c: (c.mean, -c.params))
    for c in alive:
        if c is leader:
            continue
        gap_se = math.sqrt(c.sd**2 / len(c.vals) + leader.sd**2 / len(leader.vals))
        if c.mean + 2 * gap_se < leader.mean:
            c.status = "dropped"
    alive = [c for c in field_ if c.status == "racing"]
    others = [pass_chance(c, target) for c in alive if c is not leader]
    ahead = not others or (
        len(leader.vals) >= MIN_SEEDS and pass_chance(leader, target) >= AHEAD * max(others)
    )
    if ahead:
        leader.status = "winner"
    return ahead


def validation_only(data: MNIST, val_size: int, split: int = 0) -> MNIST:
    """The data a racing worker gets: the training images, of which its run holds out
    `val_size` (TrainConfig.val_split `split`), and as its 'test' set those same held-out
    images: never the test set."""
    held = data.holdout(val_size, split)
    return MNIST(data.train_x, data.train_y, held.val_x, held.val_y)


def summary_rows(field_: list[Contender], target: float) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "trial_id": c.trial_id,
                "params": c.params,
                "seeds": len(c.vals),
                "val_accs": list(c.vals),
                "mean_val_acc": c.mean,
                "std_val_acc": statistics.stdev(c.vals) if len(c.vals) > 1 else float("nan"),
                "pass_chance": pass_chance(c, target),
                "status": c.status,
            }
            for c in field_
        ]
    )


RUNS_TABLE = "race_runs.parquet"


def recorded_runs(folder: Path) -> pd.DataFrame:
    """Every run recorded: the table's, and any a full disk left in a side file beside it
    (publish.records.SIDE) that no later append has merged in yet."""

    paths = [folder / RUNS_TABLE, *sorted(folder.glob(f"{RUNS_TABLE}{SIDE}*.parquet"))]
    frames = [read_parquet(p) for p in paths if p.is_file()]
    if not frames:
        return pd.DataFrame()
    runs = pd.concat(frames, ignore_index=True)
    return runs.drop_duplicates(["trial_id", "seed"], keep="last").reset_index(drop=True)


def append_runs(folder: Path, rows: list[dict]) -> Path | None:
    """Append under the confirmations' lock; rows the table cannot take go to a side file,
    whose path is returned (merged in by the next append)."""

    return append_confirmations(folder, rows, RUNS_TABLE)


def write_summary(folder: Path, field_: list[Contender], target: float) -> pd.DataFrame:
    table = summary_rows(field_, target)
    write_parquet(folder / "race.parquet", table)
    return table
