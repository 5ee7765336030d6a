"""`python -m tune_mnist.train`: train one tiny MNIST CNN, or a cohort of seeds
(`--seed 1 --seeds 3`: seeds 1, 2, 3 as one fused network).

One --flag per TrainConfig field; the training itself is `tune_mnist.train.loop` (one seed, or seeds
fused into one network, the same loop).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path

from tune_mnist.machine import provenance
from tune_mnist.parser import Parser
from tune_mnist.train.config import ConfigError, TrainConfig, field_docs
from tune_mnist.train.data import DATA_DIR_HELP, DataError, load_mnist
from tune_mnist.train.loop import print_epoch, train
from tune_mnist.train.modelfile import save_model
from tune_mnist.train.models import build_from_config, count_params
from tune_mnist.train.state import TrainResult, member_seeds, resolve_device


def add_config_arguments(parser) -> None:
    """One --flag per TrainConfig field, defaulting to None (= keep the dataclass default)."""

    docs = field_docs()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        text = f"{docs.get(f.name, f.name)} (default {f.default!r})".replace("%", "%%")
        if f.type == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=text)
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            parser.add_argument(flag, dest=f.name, type=kind, metavar=f.type.upper(), help=text)


def config_from_args(args) -> TrainConfig:
    names = TrainConfig.field_names()
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return TrainConfig.from_dict(given)


def parse_seeds(text: str) -> int:
    """`--seeds N`: a count of seeds, as on every command (a cohort is consecutive seeds)."""
    try:
        count = int(text)
    except ValueError:
        raise ConfigError(
            f"--seeds {text!r}: a count of consecutive seeds from --seed, e.g. --seed 1 --seeds 3"
        ) from None
    if count < 1:
        raise ConfigError(f"--seeds {count}: must be >= 1")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        prog="python -m tune_mnist.train",
        description="Train one tiny MNIST CNN (or a cohort).",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--seeds",
        help="how many consecutive seeds from --seed to train at once as one fused network "
        "(the config field --cohort; default: one seed)",
    )
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument(
        "--out", help="model file (a folder of seed<N>.pt for a cohort); default runs/"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="1 epoch on 2,000 training and 1,000 test images; nothing saved",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.train_subset, args.test_subset = 1, 2000, 1000
    try:
        if args.seeds is not None:
            if args.cohort is not None:
                raise ConfigError("--seeds and --cohort say the same: give one of them")
            args.cohort = parse_seeds(args.seeds)
        config = config_from_args(args)
        out = args.out or (
            "runs" if config.cohort > 1 else f"runs/{config.arch}-seed{config.seed}.pt"
        )
        if not args.smoke:
            check_out(out, folder=config.cohort > 1)
        data = load_mnist(args.data_dir, device=resolve_device(config.device))
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model_params = count_params(build_from_config(config))
    print(f"{config.arch}: {model_params:,} parameters, device {resolve_device(config.device)}")
    try:
        results = train(config, data, on_epoch=lambda m, s: show(m, config))
    except ConfigError as exc:  # what only the data decides: too few steps for the schedule
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing saved; the same command retrains it", file=sys.stderr)
        return 130
    if args.smoke:
        finals = ", ".join(f"{r.final.get('test_acc', math.nan):.2f}%" for r in results)
        print(f"smoke: final test acc {finals} on 1,000 images; nothing saved")
        return 0 if all(r.status == "completed" for r in results) else 1
    if config.cohort > 1:
        return _save_cohort(config, results, args.out)
    [result] = results
    _save(result, config, out)
    print(
        f"{result.status}: final test acc {result.final.get('test_acc', math.nan):.2f}% "
        f"in {result.seconds:.1f}s; saved {out}"
    )
    return 0 if result.status == "completed" else 1


def check_out(out: str, folder: bool) -> None:
    """Fail before training, not after it, when the model cannot be written: `out`'s
    folder (a cohort's `out` itself) must be makeable and writable, a file not a folder."""

    path = Path(out)
    where = path if folder else path.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = "a file is in the way" if isinstance(exc, FileExistsError) else exc.strerror
        raise ConfigError(
            f"--out {out}: cannot make {where} ({why}); pick a writable path"
        ) from None
    if not os.access(where, os.W_OK):
        raise ConfigError(f"--out {out}: {where} is not writable; pick a writable path")
    if not folder and path.is_dir():
        raise ConfigError(f"--out {out}: is a folder; name the model file, e.g. {out}/model.pt")


def show(metrics: dict, config: TrainConfig) -> None:
    print_epoch(metrics, config.epochs)
    if config.cohort > 1:
        print(f"          test acc: min {metrics['test_acc_min']:.2f}% over seeds", flush=True)


def _save_cohort(config: TrainConfig, results: list[TrainResult], out: str | None) -> int:
    for seed, result in zip(member_seeds(config), results, strict=True):
        path = f"{out}/seed{seed}.pt" if out else f"runs/{config.arch}-seed{seed}.pt"
        _save(result, config.replace(seed=seed, cohort=1), path)
        print(
            f"seed {seed}: {result.status}, final test acc {result.final['test_acc']:.2f}%; {path}"
        )
    seconds = results[0].seconds
    print(f"{len(results)} seeds in {seconds:.1f}s ({seconds / len(results):.1f}s a seed)")
    return 0 if all(r.status == "completed" for r in results) else 1


def _save(result: TrainResult, config: TrainConfig, out: str) -> None:
    """A model file in the single-run format (load_model and predict read it unchanged)."""
    save_model(
        out,
        result.model,
        config,
        status=result.status,
        final_test_acc=result.final.get("test_acc"),
        params=result.params,
        seconds=result.seconds,
        **provenance(str(resolve_device(config.device))),
    )


if __name__ == "__main__":
    raise SystemExit(main())
