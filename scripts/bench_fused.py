"""Model-epochs per second of a fused K-seed cohort against single runs, measured side by side.

One training epoch of `--arch` (augmented, as in training) for single seeds and for cohorts of
K seeds, epochs interleaved (single, K=3, single, K=3, ...) so machine load hits all alike;
the best of `--repeats` counts. On CUDA each size runs eager (fused AdamW), as one CUDA graph,
and as a graph with bf16 autocast (see tune_mnist/train/steps.py). A K-cohort trains K models per
epoch, so its model-epochs per second are K / its epoch time; every figure is printed as a
ratio to the eager single run's.

    python scripts/bench_fused.py --data-dir ../shared/mnist            # K = 1, 3 on a CPU
    python scripts/bench_fused.py --device cuda --sizes 1,3,8,32,128    # on a GPU
    python scripts/bench_fused.py --smoke                          # seconds
"""

from __future__ import annotations

import sys
import time

import torch

from tune_mnist.parser import Parser
from tune_mnist.train.augment import AugmentSpec
from tune_mnist.train.config import ConfigError, TrainConfig
from tune_mnist.train.data import DATA_DIR_HELP, DataError, load_mnist
from tune_mnist.train.loop import loss_fn, train_epoch
from tune_mnist.train.state import make_state, resolve_device
from tune_mnist.train.steps import Steps


def time_epoch(config: TrainConfig, data, device: torch.device) -> float:
    """Seconds for one augmented epoch, the second of a run (the first warms up: kernels,
    and on CUDA the graph's capture): a single run (cohort 1) or a fused cohort."""
    spec = AugmentSpec.from_config(config)
    state = make_state(config, device, len(data.train_y))
    steps = Steps(config, state, loss_fn(config, state.model), device)
    for _ in range(2):
        started = time.perf_counter()
        loss, _ = train_epoch(config, state, data, spec, steps)
        loss.sum().item()  # waits for the device
    if steps.graphed and not steps.replaying:
        raise RuntimeError("the CUDA graph was not captured")
    return time.perf_counter() - started


MODES = {  # name -> config changes; graph and bf16 only where CUDA runs
    "eager": {"cuda_graph": False},
    "graph": {"cuda_graph": True},
    "graph+bf16": {"cuda_graph": True, "precision": "bf16"},
}


def parse_args(argv):
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="super_light", help="registered architecture")
    parser.add_argument("--sizes", default="1,3", help="cohort sizes K to time (1 = single)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--train-subset", type=int, default=0, help="images an epoch (0: all)")
    parser.add_argument("--repeats", type=int, default=2, help="best of N interleaved epochs")
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument(
        "--smoke", dest="smoke_test", action="store_true", help="2,560 images, 1 repeat"
    )
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
        device = resolve_device(args.device)
        modes = ["eager"] + (["graph", "graph+bf16"] if device.type == "cuda" else [])
        config = TrainConfig(
            arch=args.arch, epochs=2, device=args.device, threads=args.threads,
            train_subset=args.train_subset,
        )  # fmt: skip
        configs = {
            (mode, k): config.replace(cohort=k, **MODES[mode]) for mode in modes for k in args.sizes
        }
        data = load_mnist(args.data_dir, device=device).subset(args.train_subset)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    best = {key: float("inf") for key in configs}
    for _ in range(args.repeats):
        for key, cfg in configs.items():
            best[key] = min(best[key], time_epoch(cfg, data, device))
    first = args.sizes[0]
    base = first / best[("eager", first)]  # model-epochs per second of the first eager size
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(
        f"{args.arch}, {len(data.train_y):,} images an epoch, {name}, "
        f"{torch.get_num_threads()} thread(s), best of {args.repeats} (2nd epoch of a run):"
    )
    for (mode, k), seconds in best.items():
        rate = k / seconds
        print(
            f"  {mode:<10s} K={k:<4d} {seconds:7.3f} s an epoch  {rate:8.3f} model-epochs/s  "
            f"x{rate / base:.2f} the eager K={first} rate  "
            f"(cost {seconds / (k * best[('eager', first)] / first):.2f}x of {k} eager runs)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
