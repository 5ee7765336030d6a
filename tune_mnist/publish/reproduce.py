"""`scripts/reproduce.py`: retrain the first epochs of a recorded confirmation, compare bit for bit.

    python scripts/reproduce.py results/separable/confirmed/fef671aa --seed 1 --epochs 2

Reads the confirmation's row (config, seed, threads, versions) from the experiment's
confirmations.parquet and its per-epoch curve from confirmation_epochs.parquet, trains the same
config with the same seed and thread count for the first N epochs (of the recorded schedule:
the one-cycle rate depends on the total), and compares train/test loss and accuracy per epoch
for exact equality. Exit 0: identical; 1: a figure differs; 2: bad input (one line).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch

from tune_mnist.machine import cpu_name, versions
from tune_mnist.parser import Parser
from tune_mnist.paths import add_results_dir, results_root, shown, use_results_dir
from tune_mnist.publish.confirm import InputError
from tune_mnist.results import config_of
from tune_mnist.tables import TableError, read_parquet
from tune_mnist.train.config import ConfigError
from tune_mnist.train.data import DATA_DIR_HELP, DataError, load_mnist
from tune_mnist.train.loop import print_epoch, train
from tune_mnist.train.modelfile import read_model_file

COMPARED = ("lr", "train_loss", "train_acc", "test_loss", "test_acc")


def recorded(folder: Path, seed: int | None) -> tuple[pd.Series, pd.DataFrame | None]:
    """(confirmation row, its per-epoch curve) of trial `folder.name`: the newest run of that
    seed, the one the leaderboard publishes. The curve is None for a confirmation made before
    per-epoch curves were kept (check_in_full checks those)."""
    experiment, trial = folder.parent.parent, folder.name
    try:
        rows = read_parquet(experiment / "confirmations.parquet")
    except TableError as exc:
        raise InputError(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{folder}: not a confirmed model under results/<search>/confirmed/<trial> "
            f"({type(exc).__name__}); run scripts/retrain_best.py first"
        ) from None
    rows = rows[rows["trial_id"] == trial]
    if rows.empty:
        raise InputError(f"{folder}: trial {trial} has no confirmation in {experiment}")
    seeds = sorted(int(s) for s in rows["seed"].unique())
    seed = seeds[0] if seed is None else seed
    rows = rows[rows["seed"] == seed]
    if rows.empty:
        raise InputError(f"--seed {seed}: not confirmed for {trial}; confirmed seeds: {seeds}")
    row = rows.sort_values("confirmed_at").iloc[-1]
    try:
        curves = read_parquet(experiment / "confirmation_epochs.parquet")
    except FileNotFoundError:
        return row, None
    except TableError as exc:
        raise InputError(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{experiment}: unreadable confirmation curves ({exc})") from None
    key = (curves["trial_id"] == trial) & (curves["seed"] == seed)
    curve = curves[key & (curves["confirmed_at"] == row["confirmed_at"])].sort_values("epoch")
    return row, (curve.reset_index(drop=True) if len(curve) else None)


def differences(found: list[dict], curve: pd.DataFrame) -> list[str]:
    """One line per figure that is not bit-identical to the recorded one."""
    out = []
    for metrics, (_, want) in zip(found, curve.iterrows(), strict=False):
        for name in COMPARED:
            if name in want and metrics[name] != want[name]:
                out.append(
                    f"epoch {metrics['epoch']} {name}: {metrics[name]!r} now, "
                    f"{want[name]!r} recorded"
                )
    return out


def environment_notes(row: pd.Series) -> list[str]:
    """What differs from the recorded run's environment (a likely cause of a mismatch)."""

    notes = []
    torch_now = versions()["torch"]
    if str(row.get("torch_version")) != torch_now:
        notes.append(f"torch {torch_now} here, {row.get('torch_version')} recorded")
    recorded_cpu = row.get("cpu")
    if not isinstance(recorded_cpu, str):
        notes.append(
            "the recorded run did not name its kind of CPU (made before the cpu column); "
            f"this is {cpu_name()}"
        )
    elif recorded_cpu != cpu_name():
        notes.append(f"CPU {cpu_name()} here, {recorded_cpu} recorded")
    return notes


def parse_args(argv):
    parser = Parser(
        prog="scripts/reproduce.py",
        description=__doc__.split("\n")[0],
        epilog="exit status: 0 bit for bit identical; 1 a figure or the weights differ; 2 bad "
        "input, or a confirmation without per-epoch curves (the line gives the --full "
        "command)",
    )
    parser.add_argument("confirmed", nargs="?", help="results/<search>/confirmed/<trial>")
    parser.add_argument("--seed", type=int, help="confirmed seed to rerun (default: the first)")
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs to rerun and compare (default 2)"
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="retrain every epoch and compare the final test accuracy and the saved weights "
        "file too (the check for confirmations made before per-epoch curves were kept)",
    )
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument(
        "--smoke", dest="smoke_test", action="store_true", help="1 epoch of the smallest model"
    )
    add_results_dir(parser)  # where --smoke finds the smallest confirmed model
    args = parser.parse_args(argv)
    use_results_dir(args.results_dir)
    if args.smoke_test:
        args.epochs = 1
        args.confirmed = args.confirmed or str(smallest_confirmed())
    if not args.confirmed:
        raise InputError(
            "name a confirmed model: scripts/reproduce.py results/<search>/confirmed/<trial>"
        )
    if args.epochs < 1:
        raise InputError(f"--epochs {args.epochs}: must be >= 1")
    return args


def smallest_confirmed() -> Path:
    found = []
    for path in results_root().glob("*/confirmations.parquet"):
        try:
            rows = read_parquet(path, columns=["trial_id", "params"])
        except TableError as exc:
            raise InputError(str(exc)) from None
        found += [
            (int(r.params), path.parent / "confirmed" / r.trial_id) for r in rows.itertuples()
        ]
    if not found:
        where = shown(results_root())
        raise InputError(f"no confirmation under {where}: run scripts/retrain_best.py first")
    return min(found)[1]


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        row, curve = recorded(Path(args.confirmed), args.seed)
        config = config_of(row, device="cpu")
        if curve is None and not args.full:
            raise InputError(
                f"{row['trial_id']} seed {config.seed} was confirmed before per-epoch curves "
                "were kept: nothing to compare epoch by epoch; check it in full (all "
                f"{config.epochs} epochs; compares its final test accuracy and weights file): "
                f"python scripts/reproduce.py {args.confirmed} --seed {config.seed} --full"
            )
        args.epochs = config.epochs if args.full else args.epochs
        if args.full:  # the weights it compares against: checked before a full run
            check_weights(Path(args.confirmed) / f"seed{config.seed}.pt")
        if curve is not None and args.epochs > len(curve):
            raise InputError(f"--epochs {args.epochs}: only {len(curve)} epochs recorded")
        data = load_mnist(args.data_dir)
    except (InputError, ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    threads = config.threads or "torch's default"
    print(
        f"reproducing {row['trial_id']} seed {config.seed}: first {args.epochs} of "
        f"{config.epochs} epochs, {threads} thread(s), recorded {row['confirmed_at']} at "
        f"commit {row.get('commit', '?')}",
        flush=True,
    )
    for note in environment_notes(row):
        print(f"  note: {note}; the numbers may differ for that reason alone", flush=True)

    def show(metrics, state):
        print_epoch(metrics, config.epochs)
        return metrics["epoch"] >= args.epochs

    # trained fused with its cohort: rebuild the cohort, read its member
    first = int(row["cohort_first"]) if config.cohort > 1 else config.seed
    result = train(config.replace(seed=first), data, on_epoch=show)[config.seed - first]
    diffs, compared = [], []
    if curve is not None:
        diffs += differences(result.history, curve)
        compared.append(f"the recorded curve ({', '.join(COMPARED)} per epoch)")
    if args.full:
        diffs += final_differences(result, row, Path(args.confirmed) / f"seed{config.seed}.pt")
        compared.append("the final test accuracy and the weights file")
    for line in diffs:
        print(f"  DIFFERS {line}")
    verdict = "bit for bit identical" if not diffs else f"{len(diffs)} figures differ"
    print(f"{verdict} to {' and '.join(compared)}")
    return 0 if not diffs else 1


def check_weights(weights: Path) -> None:
    """A weights file that --full could not compare (cut short, not a model file) refused
    before the run; a missing one is reported as a difference after it."""

    if weights.is_file():
        try:
            read_model_file(weights)
        except ValueError as exc:
            raise InputError(
                f"{exc}; the seed's weights are damaged: retrain the seed (its model card "
                "gives the command) to compare against new ones"
            ) from None


def final_differences(result, row: pd.Series, weights: Path) -> list[str]:
    """The full run against the recorded final test accuracy and the saved weights."""

    out = []
    final = result.final.get("test_acc")
    if final != row["final_test_acc"]:
        out.append(f"final test_acc: {final!r} now, {row['final_test_acc']!r} recorded")
    if not weights.is_file():
        return out + [f"weights: {weights} is missing"]
    saved = read_model_file(weights)["state_dict"]
    for name, value in result.model.state_dict().items():
        if name not in saved or not torch.equal(value.detach().cpu().contiguous(), saved[name]):
            out.append(f"weights {name}: not the tensor saved in {weights.name}")
    return out
