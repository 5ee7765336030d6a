"""Model-epochs per second of a fused K-seed cohort against single runs, measured side by side.

One training epoch of `--arch` (augmented, as in training) for single seeds and for cohorts of
K seeds, epochs interleaved (single, K=3, single, K=3, ...) so machine load hits all alike;
the best of `--repeats` counts. A K-cohort trains K models per epoch, so its model-epochs per
second are K / its epoch time; every figure is printed as a ratio to the single run's.

    python scripts/bench_fused.py --data-dir ../shared/mnist            # K = 1, 3 on a CPU
    python scripts/bench_fused.py --device cuda --sizes 1,3,8,32,128    # on a GPU
    python scripts/bench_fused.py --smoke-test                          # seconds
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from tune_mnist.augment import AugmentSpec
from tune_mnist.cohort import cohort_epoch, make_cohort_state
from tune_mnist.config import ConfigError, TrainConfig
from tune_mnist.data import DataError, load_mnist
from tune_mnist.engine import make_state, resolve_device, train_epoch


def time_epoch(config: TrainConfig, data, device: torch.device) -> float:
    """Seconds for one augmented epoch: a single run (cohort 1) or a fused cohort."""
    spec = AugmentSpec.from_config(config)
    if config.cohort == 1:
        state = make_state(config, device, len(data.train_y))
        started = time.perf_counter()
        loss, _ = train_epoch(config, state, data, spec)
    else:
        state = make_cohort_state(config, device, len(data.train_y))
        started = time.perf_counter()
        loss, _ = cohort_epoch(config, state, data, spec)
    loss.sum().item()  # waits for the device
    return time.perf_counter() - started


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="super_light", help="registered architecture")
    parser.add_argument("--sizes", default="1,3", help="cohort sizes K to time (1 = single)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--train-subset", type=int, default=0, help="images an epoch (0: all)")
    parser.add_argument("--repeats", type=int, default=2, help="best of N interleaved epochs")
    parser.add_argument("--data-dir", help="folder with the MNIST IDX files ($TUNE_MNIST_DATA)")
    parser.add_argument("--smoke-test", action="store_true", help="2,560 images, 1 repeat")
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.train_subset, args.repeats = 2560, 1
    try:
        args.sizes = sorted({int(k) for k in args.sizes.split(",")})
    except ValueError:
        raise ConfigError(f"--sizes {args.sizes!r}: comma-separated integers") from None
    if args.repeats < 1 or args.sizes[0] < 1:
        raise ConfigError("--repeats and every --sizes entry must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        config = TrainConfig(
            arch=args.arch, epochs=1, device=args.device, threads=args.threads,
            train_subset=args.train_subset,
        )  # fmt: skip
        configs = {k: config.replace(cohort=k) for k in args.sizes}
        device = resolve_device(args.device)
        data = load_mnist(args.data_dir, device=device).subset(args.train_subset)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    best = {k: float("inf") for k in configs}
    for _ in range(args.repeats):
        for k, cfg in configs.items():
            best[k] = min(best[k], time_epoch(cfg, data, device))
    base = 1 / best[args.sizes[0]] * args.sizes[0]  # model-epochs per second of the first
    print(
        f"{args.arch}, {len(data.train_y):,} images an epoch, {device}, "
        f"{torch.get_num_threads()} thread(s), best of {args.repeats}:"
    )
    for k, seconds in best.items():
        rate = k / seconds
        print(
            f"  K={k:<4d} {seconds:7.2f} s an epoch  {rate:7.3f} model-epochs/s  "
            f"x{rate / base:.2f} the K={args.sizes[0]} rate  "
            f"(cost {seconds / (k * best[args.sizes[0]] / args.sizes[0]):.2f}x of {k} runs)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
