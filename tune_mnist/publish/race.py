"""Race a search's contenders on more validation runs before any test figure.

One seed at 5,000 validation images cannot separate configurations 0.05 points apart (its
standard error is 0.11), so the search's best few are raced (SMAC's intensification): each
round trains one more seed of every contender still in the race, at full fidelity; a
contender clearly below the leader (by more than twice the standard error of the difference)
is dropped, and after the 2nd and 4th rounds the field keeps its better half (successive
halving); the race ends when one contender's estimated chance to pass is clearly ahead of
the rest, or when its budget of runs is spent. The workers are never given the test images:
their data's test set is the validation set itself.

Which images a run holds out: by default run N holds out its own `val_size` images, drawn
with seed N (`TrainConfig.val_split` N; a round's contenders share them, so two contenders
are compared round by round), and the search's own figure is left out of the mean. The
search chose its contenders on the last `val_size` images, so their figures there carry
that choice's luck (the winner's curse), which more seeds on the same images cannot remove.
`resampled=False` races on the search's images.

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

import numpy as np
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
MIN_SEEDS = 3  # figures the leader needs before the race can end on its chance
# eight contenders: the search's figure ranks its best few barely (its first was the pick
# in 8 of 15 cold races of four at 4,000 parameters), while their true means differ by about
# 0.06 points (sd, paired over rounds): a wider field holds a likelier pick
# (docs/history.md, "A race of eight")
TOP = 8
# two rounds of eight, two of four, then the last two: halving on 24 runs picks as well as
# the drops alone did on 32 (simulated); a run costs about 4 core-minutes at 4,000
# parameters (cold run 16: 24 runs, 94) (docs/history.md, "The race halves its field")
RUNS = 24
# The race's level against the test set, measured on the contenders a race measured and 5
# fresh seeds then confirmed (tune_mnist.publish.race_level lists them and their offsets;
# docs/protocol.md, "The race's level", and a test hold these values to them): on the
# search's images the test mean reads below the race's mean (the winner's curse), on images
# of each run's own above it; and a pick's own departure from that level beyond its seeds'
# noise (about 0.04 on the search's images; on own images, with fewer picks, 0.06 is assumed)
LEVEL = {"search's": -0.03, "own": 0.04}  # points
LEVEL_SD = {"search's": 0.04, "own": 0.06}  # points
# successive halving: after its 2nd and 4th rounds the field keeps its better half by mean
# (a round's contenders ran the same rounds); simulated under the spreads the recorded races
# measure, it picks as well as the drops alone do, on about a fifth fewer runs
# (tune_mnist.study.race_rules; docs/history.md, "The race halves its field")
HALVINGS = (2, 4)  # rounds
NODES, WEIGHTS = np.polynomial.hermite.hermgauss(32)  # the pass chance's integral over the mean


def image_var(acc: float, images: int) -> float:
    """Points squared: the binomial variance of an accuracy `acc` (%) read on `images`."""
    p = min(max(acc / 100, 0.0), 1.0)
    return p * (1 - p) / images * 1e4


@dataclass
class Contender:
    trial_id: str
    config: TrainConfig  # the trial's own config (its seed is the search's seed 0)
    params: int
    search_val: float  # the search's own figure (seed 0, the last val_size images)
    vals: list[float] = field(default_factory=list)  # the race's runs, by seed 1, 2, ...
    resampled: bool = False  # race run N held out its own images (val_split N)
    val_size: int = 5000
    status: str = "racing"  # racing, dropped, winner

    @property
    def on_own_images(self) -> bool:
        """The figures are the race's runs alone, each on its own images: the search's figure
        was read on the images that chose it, so it is left out of a resampled race."""
        return self.resampled and bool(self.vals)

    @property
    def images(self) -> str:
        return "own" if self.on_own_images else "search's"

    @property
    def figures(self) -> list[float]:
        return list(self.vals) if self.on_own_images else [self.search_val, *self.vals]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.figures)

    @property
    def sd(self) -> float:
        """A run's spread: at least a seed's, and on its own images at least a seed's and the
        images' together."""
        figures = self.figures
        spread = statistics.stdev(figures) if len(figures) > 1 else 0.0
        least = SEED_SD**2 + (image_var(self.mean, self.val_size) if self.on_own_images else 0)
        return max(spread, math.sqrt(least))


def pass_chance(contender: Contender, target: float) -> float:
    """The chance that every one of 5 fresh seeds reaches `target` on the test set.

    A seed's test figure is normal around the model's test accuracy with a seed's spread;
    that accuracy is the race's mean moved to the test set's level (LEVEL), uncertain by the
    mean's error over its runs and by the pick's own departure from that level (LEVEL_SD),
    which every run on the same images shares, so more seeds cannot shrink it."""
    c = contender
    kind = c.images
    seed_sd = c.sd
    if c.on_own_images:  # a run's spread holds its images' error too: not a fresh seed's
        seed_sd = math.sqrt(max(c.sd**2 - image_var(c.mean, c.val_size), SEED_SD**2))
    centre = c.mean + LEVEL[kind]
    spread = math.sqrt(2 * (c.sd**2 / len(c.figures) + LEVEL_SD[kind] ** 2))
    one = 0.5 * (
        1 + np.vectorize(math.erf)((centre + spread * NODES - target) / (seed_sd * 2**0.5))
    )
    return float(np.sum(WEIGHTS * one**CONFIRM_SEEDS) / math.sqrt(math.pi))


def contenders(
    trials: pd.DataFrame, top: int, max_params: int, resampled: bool = False, val_size: int = 5000
) -> list[Contender]:
    """The `top` completed trials within budget, best final validation accuracy first."""
    done = trials[
        (trials["status"] == "completed")
        & trials["params"].map(lambda p: rule.within(p, max_params))
    ]
    done = done.sort_values(["final_val_acc", "params"], ascending=[False, True]).head(top)
    return [
        Contender(
            r["trial_id"],
            config_of(r),
            int(r["params"]),
            float(r["final_val_acc"]),
            resampled=resampled,
            val_size=val_size,
        )
        for _, r in done.iterrows()
    ]


def _best(field_: list[Contender], score) -> Contender:
    """The highest `score` among those not dropped, the smaller on a tie; in a resampled
    race, among those with runs of their own first (a search's figure reads on other
    images, at another level)."""
    alive = [c for c in field_ if c.status != "dropped"]
    return max(alive, key=lambda c: (c.on_own_images or not c.resampled, score(c), -c.params))


def lead(field_: list[Contender]) -> Contender:
    """The best mean among those not dropped."""
    return _best(field_, lambda c: c.mean)


def pick(field_: list[Contender], target: float) -> Contender:
    """The one to confirm: the winner, or when the budget ran out first, the one most likely
    to pass among those not dropped (what the confirmation asks), the smaller on a tie; a
    resampled race picks among those with runs of their own first."""
    won = [c for c in field_ if c.status == "winner"]
    return won[0] if won else _best(field_, lambda c: pass_chance(c, target))


def lead_over(leader: Contender, c: Contender) -> tuple[float, float]:
    """How far `leader`'s mean is above `c`'s, and its standard error. On their own images,
    paired over the rounds both ran: a round's contenders share its images, so the images'
    difficulty cancels from each difference and only the seeds' noise is left."""
    if leader.on_own_images and c.on_own_images:
        diffs = [a - b for a, b in zip(leader.vals, c.vals, strict=False)]  # rounds both ran
        spread = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        se = max(spread, math.sqrt(2) * SEED_SD) / math.sqrt(len(diffs))
        return statistics.fmean(diffs), se
    se = math.sqrt(c.sd**2 / len(c.figures) + leader.sd**2 / len(leader.figures))
    return leader.mean - c.mean, se


def halve(field_: list[Contender], halvings: tuple[int, ...] = HALVINGS) -> None:
    """After the `halvings`' k-th round (every contender racing has run it), at most the
    field's size halved k times stays racing (never fewer than 2): the best means, the
    smaller on a tie. Judging the same figures again drops no one more."""
    racing = [c for c in field_ if c.status == "racing"]
    rounds = {len(c.vals) for c in racing}
    if len(rounds) != 1 or (done := rounds.pop()) not in halvings:
        return
    keep = max(2, len(field_) >> (halvings.index(done) + 1))
    racing.sort(key=lambda c: (-c.mean, c.params))
    for c in racing[keep:]:
        c.status = "dropped"


def judge(field_: list[Contender], target: float, halvings: tuple[int, ...] = HALVINGS) -> bool:
    """Drop the contenders clearly below the leader, halve the field after the `halvings`'
    rounds; True when the race is decided. A resampled race judges nothing until every
    contender has a run of its own."""
    alive = [c for c in field_ if c.status == "racing"]
    if any(c.resampled and not c.vals for c in alive):
        return False
    leader = lead(alive)
    for c in alive:
        if c is leader:
            continue
        gap, gap_se = lead_over(leader, c)
        if gap > 2 * gap_se:
            c.status = "dropped"
    halve(field_, halvings)
    alive = [c for c in field_ if c.status == "racing"]
    others = [pass_chance(c, target) for c in alive if c is not leader]
    ahead = not others or (
        len(leader.figures) >= MIN_SEEDS and pass_chance(leader, target) >= AHEAD * max(others)
    )
    if ahead:
        leader.status = "winner"
    return ahead


def validation_only(data: MNIST) -> MNIST:
    """The data a racing worker gets: the training images, of which its run holds out its
    own validation images (TrainConfig.val_size, val_split), and no test set: a race never
    reads it, nor evaluates the held-out images twice."""
    return MNIST(data.train_x, data.train_y, data.test_x[:0], data.test_y[:0])


def summary_rows(field_: list[Contender], target: float) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "trial_id": c.trial_id,
                "params": c.params,
                "seeds": len(c.figures),
                "val_accs": c.figures,
                "search_val_acc": c.search_val,
                "val_images": c.images,
                "mean_val_acc": c.mean,
                "std_val_acc": statistics.stdev(c.figures) if len(c.figures) > 1 else math.nan,
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


def own_images(runs: pd.DataFrame) -> pd.Series:
    """For each recorded run, whether it held out its own images (val_split = its seed, 1 or
    more) or the search's (val_split 0; runs recorded before val_split existed did)."""
    split = runs["val_split"].fillna(0) if "val_split" in runs else runs["seed"] * 0
    return split == runs["seed"]


def append_runs(folder: Path, rows: list[dict]) -> Path | None:
    """Append under the confirmations' lock; rows the table cannot take go to a side file,
    whose path is returned (merged in by the next append)."""

    return append_confirmations(folder, rows, RUNS_TABLE)


def write_summary(folder: Path, field_: list[Contender], target: float) -> pd.DataFrame:
    table = summary_rows(field_, target)
    write_parquet(folder / "race.parquet", table)
    return table
