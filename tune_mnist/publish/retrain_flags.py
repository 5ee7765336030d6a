"""The flags of `scripts/retrain_best.py` (tune_mnist.publish.retrain confirms what they
name): parsed, and checked before anything trains."""

from __future__ import annotations

import argparse

from tune_mnist import rule
from tune_mnist.parser import Parser
from tune_mnist.paths import add_results_dir, use_results_dir
from tune_mnist.publish.confirm import InputError
from tune_mnist.train.config import CPU_STEPS
from tune_mnist.train.data import DATA_DIR_HELP


def parse_args(argv):
    parser = Parser(
        prog="scripts/retrain_best.py",
        description="Retrain a search's best configs over seeds.",
        epilog="exit status: 0 every seed of a candidate passed; 1 it ran but none passed, or "
        "Ray lost a seed's run; 2 bad input; 130 Ctrl-C (finished candidates are kept)",
    )
    parser.add_argument(
        "--results",
        help="one search's folder, results/<name> (default: the newest search started here)",
    )
    add_results_dir(parser)
    parser.add_argument(
        "--rank",
        choices=["accuracy", "params"],
        default="accuracy",
        help="accuracy: best final validation accuracy; params: smallest passing model "
        "(the test set never ranks)",
    )
    parser.add_argument("--top", type=int, default=1, help="confirm the K best trials (default 1)")
    parser.add_argument(
        "--trials",
        help="comma-separated trial ids to confirm instead (completed or ASHA-stopped, "
        "passing or not: a near miss still gives a Pareto point; default: the --top best)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=5,
        help="how many fresh seeds per config (the search's seed + 1..N; default 5, as the "
        "publishing rule asks)",
    )
    parser.add_argument("--epochs", type=int, help="epochs (default: the search's)")
    parser.add_argument(
        "--target",
        type=float,
        help=f"pass mark %% (default: the search's; {rule.TARGET_ACC} when the search ran on a "
        "subset and "
        "the seeds train on all images, as its mark was a proxy)",
    )
    _run_flags(parser)
    args = parser.parse_args(argv)
    use_results_dir(args.results_dir)
    check_args(args)
    return args


def _run_flags(parser: argparse.ArgumentParser) -> None:
    """Where and how the seeds train."""
    parser.add_argument(
        "--gpus", type=int, default=0, help="GPUs: seeds side by side via Ray (default 0)"
    )
    parser.add_argument(
        "--cpus", type=int, default=1, help="CPUs: >1 runs seeds via Ray (default 1)"
    )
    parser.add_argument(
        "--address",
        help="run the seeds as Ray tasks on this existing cluster (default $RAY_ADDRESS); "
        "--gpus then asks each seed for a quarter of a cluster GPU",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads per seed (default: 1 with Ray, else torch's default); recorded, "
        "since the thread count changes the numbers",
    )
    parser.add_argument(
        "--cohort",
        action=argparse.BooleanOptionalAction,
        help="train a candidate's seeds at once as one fused network (default: with --gpus; "
        "on a CPU it gains nothing: there the seeds run one by one, bit for bit lone runs)",
    )
    parser.add_argument(
        "--train-subset",
        type=int,
        default=0,
        help="train on the first N of the 60,000 images (default 0: all, whatever subset the "
        "search used); a quick look, never a published figure",
    )
    parser.add_argument(
        "--test-subset",
        type=int,
        default=0,
        help="score on the first N test images (default 0: all)",
    )
    parser.add_argument(
        "--cpu-step",
        choices=["auto", *CPU_STEPS],
        help="how CPU seeds run their steps (default: as the search's trial ran them; "
        "README, The CPU step); recorded, and written into the reproduce command",
    )
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument(
        "--smoke", dest="smoke_test", action="store_true", help="1 seed, 1 epoch, subset"
    )


def check_args(args) -> None:
    """Ranges argparse cannot check alone."""
    if not (0 <= args.train_subset <= 60000 and 0 <= args.test_subset <= 10000):
        raise InputError("--train-subset must be 0..60000 and --test-subset 0..10000 (0: all)")
    if args.top < 1 or args.seeds < 1 or args.gpus < 0 or args.cpus < 1:
        raise InputError("--top, --seeds and --cpus must be >= 1 and --gpus >= 0")
    if args.threads is not None and not 0 <= args.threads <= 1024:
        raise InputError(f"--threads {args.threads}: must be 0..1024 (0 = torch's default)")
    if args.epochs is not None and args.epochs < 1:
        raise InputError(f"--epochs {args.epochs}: must be >= 1")
    if args.target is not None and not 0 <= args.target <= 100:  # (0: every seed passes)
        raise InputError(f"--target {args.target}: a test accuracy in % must be in [0, 100]")
