"""The flags of `scripts/search.py` (tune_mnist.search.command runs the search they ask
for): parsed, and checked before Ray starts or anything is written."""

from __future__ import annotations

import argparse
import re

from tune_mnist.parser import Parser
from tune_mnist.paths import add_results_dir, use_results_dir
from tune_mnist.publish import race
from tune_mnist.search.plan import UsageError
from tune_mnist.search.space import PROMOTIONS
from tune_mnist.train.config import CPU_STEPS
from tune_mnist.train.data import DATA_DIR_HELP

RACE_RUNS = race.RUNS  # seed runs of the race after a search
RACE_TOP = race.TOP  # contenders of that race
# warm searches after the first, at most (tune_mnist.stages): none by default, since two of
# two found no likelier pick for some 70 core-minutes each, which a race of eight spends on
# the first search's own contenders (docs/history.md, "A race of eight")
WARM_STAGES = 0
WARM_BELOW = 0.5  # a race pick's pass chance under this: the chain searches on


# where and how trials run, then what follows the search: (flag, attribute, default); a
# resume and the chain's warm stages pass on those given
DEVICE_FLAGS = (
    ("--gpus", "gpus", None),
    ("--trials-per-gpu", "trials_per_gpu", 4),
    ("--threads", "cpus_per_trial", 1),
    ("--max-failures", "max_failures", 2),
    ("--storage", "storage", None),
    ("--address", "address", None),
    ("--data-dir", "data_dir", None),
)
CHAIN_FLAGS = (
    ("--race-runs", "race_runs", RACE_RUNS),
    ("--race-top", "race_top", RACE_TOP),
    ("--confirm", "confirm", 0),
    ("--warm-stages", "warm_stages", WARM_STAGES),
    ("--warm-below", "warm_below", WARM_BELOW),
    ("--warm-samples", "warm_samples", None),
)
SWITCHES = ("--smoke", "--no-report")


def given(args, table) -> list[str]:
    """The flags of `table` whose value differs from its default, with their values."""
    out: list[str] = []
    for flag, attribute, default in table:
        value = getattr(args, attribute, default)
        if value is not None and value != default:
            out += [flag, str(value)]
    return out


def switches(args) -> list[str]:
    return [flag for flag in SWITCHES if getattr(args, flag[2:].replace("-", "_"), False)]


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or ".." in name:
        raise UsageError(f"--name {name!r}: use letters, digits, '-', '_' and '.' only (no paths)")
    return name


def parse_args(argv: list[str] | None):
    parser = Parser(
        prog="scripts/search.py",
        description="Search tiny MNIST CNNs with Ray Tune (Optuna proposes, ASHA stops).",
        epilog="exit status: 0 the search ran and at least one trial trained to its end "
        "(completed, or stopped by ASHA at a rung), and its race ran; with --confirm N, 0 "
        "when the race's pick passed on every seed; 1 it ran but none did (every trial "
        "diverged, failed, was over budget or lost: one line gives the counts by cause and "
        "the first), or results cannot be written, or with --confirm the pick did not pass "
        "or no trial completed to race; 2 bad input, before Ray starts; 130 Ctrl-C, 143 "
        "SIGTERM (the line gives the --resume command)",
    )
    _search_flags(parser)
    _chain_flags(parser)
    add_results_dir(parser)
    args = parser.parse_args(argv)
    use_results_dir(args.results_dir)
    check_args(args)
    return args


def _search_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", help="search-space YAML (default search_spaces/default.yaml)")
    parser.add_argument("--samples", type=int, help="trials to run (default: the space's)")
    parser.add_argument(
        "--max-params",
        type=int,
        help="parameter budget: the space's widths are scaled to it and what cannot fit is "
        "dropped (default: the space's settings.max_params, 8,000 for default.yaml)",
    )
    parser.add_argument("--gpus", type=int, help="GPUs the search may use (default: all; 0 = CPU)")
    parser.add_argument(
        "--trials-per-gpu", type=int, default=4, help="trials packed per GPU (default 4)"
    )
    parser.add_argument(
        "--threads",
        dest="cpus_per_trial",
        type=int,
        default=1,
        help="CPU threads (and Ray CPUs) per trial (default 1)",
    )
    parser.add_argument(  # hidden alias of --threads
        "--cpus-per-trial", dest="cpus_per_trial", type=int, help=argparse.SUPPRESS
    )
    parser.add_argument("--name", help="experiment name: results/<name> (default: space-time)")
    parser.add_argument(
        "--storage", help="Ray storage root, local path or URI (s3://...; default: results/.ray)"
    )
    parser.add_argument("--address", help="existing Ray cluster (default $RAY_ADDRESS, or local)")
    parser.add_argument("--resume", action="store_true", help="continue experiment --name")
    parser.add_argument(
        "--sampler-seed",
        dest="seed",
        type=int,
        default=0,
        help="seed of the Optuna sampler (default 0); trials train with their config's seed",
    )
    parser.add_argument("--seed", dest="seed", type=int, help=argparse.SUPPRESS)  # alias
    parser.add_argument(
        "--warm-start",
        metavar="RESULTS",
        default=None,
        help="tell Optuna every trial of this earlier search of the same space first "
        "(results/<name>): TPE models from them at once instead of random start-up draws "
        "(default: none, a cold study)",
    )
    parser.add_argument(
        "--max-failures", type=int, default=2, help="retries of a failing trial (default 2)"
    )
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("--smoke", action="store_true", help="search_spaces/smoke.yaml: seconds")
    parser.add_argument("--no-report", action="store_true", help="skip the plots at the end")
    parser.add_argument(
        "--cpu-step",
        choices=["auto", *CPU_STEPS],
        help="how CPU trials run their steps (default: the space's settings.cpu_step); auto = "
        "the fastest variant measured to keep accuracy (README, The CPU step)",
    )
    parser.add_argument(
        "--promotion",
        choices=PROMOTIONS,
        help="when a rung promotes (default: the space's settings.promotion; end in default.yaml, "
        "greedy where a space is silent): greedy = "
        "ASHA, the best quarter of the figures seen so far at once; end = every trial waits at "
        "its first rung until sampling ends, Optuna learning each first-rung figure, then the "
        'best quarter trains in full (docs/fidelity.md, "When a rung promotes")',
    )


def _chain_flags(parser: argparse.ArgumentParser) -> None:
    """What follows the search in the same command: the race, the confirmation."""
    parser.add_argument(
        "--race-runs",
        type=int,
        default=RACE_RUNS,
        help="when the search ends, race its best completed trials on this many more "
        f"validation runs, each on its own held-out images (default {RACE_RUNS}; 0: no race)",
    )
    parser.add_argument(
        "--race-top",
        type=int,
        default=RACE_TOP,
        metavar="N",
        help=f"the race's contenders: the search's N best completed trials (default {RACE_TOP})",
    )
    parser.add_argument(
        "--confirm",
        type=int,
        default=0,
        metavar="SEEDS",
        help="then confirm the race's pick on this many fresh seeds on the test set and "
        "publish it: model card, leaderboard row (default 0: stop after the race); "
        "exit 0 when every seed passed",
    )
    parser.add_argument(
        "--warm-stages",
        type=int,
        default=WARM_STAGES,
        help="with --confirm, while the best race pick's pass chance is under --warm-below, "
        "run up to this many more searches into results/<name>-w<k>, each warm-started from "
        "the one before and raced, then confirm the likeliest pick of all "
        f"(default {WARM_STAGES}; 0: confirm the first race's pick)",
    )
    parser.add_argument(
        "--warm-below",
        type=float,
        default=WARM_BELOW,
        metavar="CHANCE",
        help=f"the pass chance (0..1) under which the chain searches on (default {WARM_BELOW})",
    )
    parser.add_argument(
        "--warm-samples",
        type=int,
        default=None,
        help="trials of each warm stage (default: half the first search's)",
    )


def check_args(args) -> None:
    """What argparse cannot check alone: ranges and flags that need each other."""
    if args.race_runs < 0 or not 0 <= args.confirm <= 20:
        raise UsageError("--race-runs must be >= 0 and --confirm 0..20 seeds")
    if args.race_top < 2:
        raise UsageError("--race-top needs 2 or more contenders")
    if not 0 <= args.warm_stages <= 10 or not 0 <= args.warm_below <= 1:
        raise UsageError("--warm-stages must be 0..10 and --warm-below a chance in 0..1")
    if args.warm_samples is not None and args.warm_samples < 1:
        raise UsageError(f"--warm-samples {args.warm_samples}: must be >= 1")
    if not 0 <= args.seed < 2**32:
        raise UsageError(f"--sampler-seed {args.seed}: must be 0..{2**32 - 1}")
    if args.max_failures < 0:
        raise UsageError(f"--max-failures {args.max_failures}: must be >= 0")
    if args.max_params is not None and not 100 <= args.max_params <= 1_000_000:
        raise UsageError(f"--max-params {args.max_params}: a budget of 100..1,000,000 parameters")
    if args.samples is not None and args.samples < 1:
        raise UsageError(f"--samples {args.samples}: must be >= 1")
    if args.gpus is not None and args.gpus < 0:
        raise UsageError(f"--gpus {args.gpus}: must be >= 0 (0 = CPU only)")
    for flag, value in (
        ("--trials-per-gpu", args.trials_per_gpu),
        ("--threads", args.cpus_per_trial),
    ):
        if value < 1:  # checked here too: without --gpus the plan is made after Ray starts
            raise UsageError(f"{flag} {value}: must be >= 1")
    if args.resume and args.warm_start:
        raise UsageError("--warm-start: a resume keeps the warm start its search began with")
    if args.resume and not args.name:
        raise UsageError("--resume needs --name of the experiment to continue")
