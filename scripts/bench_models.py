"""Time a training epoch of several confirmed models, side by side, as ratios to the first.

Each model is named as `results/<search>:<trial_id>` and rebuilt from its parquet row (the
same TrainConfig the search and the confirmations ran). The epochs are interleaved (A B C A B
C ...) so that drift in machine load hits every model alike; the best of `--repeats` counts.

    python scripts/bench_models.py --data-dir ../shared/mnist \\
        results/silu:69902ede results/separable:0af19f02
    python scripts/bench_models.py --smoke results/default-12:4ef0c387   # seconds
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
import torch

from tune_mnist.parser import Parser
from tune_mnist.publish.confirm import InputError
from tune_mnist.results import config_of
from tune_mnist.train.augment import AugmentSpec
from tune_mnist.train.config import TrainConfig
from tune_mnist.train.data import DATA_DIR_HELP, DataError, load_mnist
from tune_mnist.train.labels import architecture
from tune_mnist.train.loop import train_epoch
from tune_mnist.train.models import build_from_config, count_params
from tune_mnist.train.state import make_state, resolve_device


def load_config(name: str) -> TrainConfig:
    """`results/<search>:<trial_id>` -> that trial's TrainConfig (seed 0, one epoch)."""
    folder, _, trial = name.rpartition(":")
    path = Path(folder) / "trials.parquet"
    if not folder or not trial:
        raise InputError(f"{name!r}: name a model as results/<search>:<trial_id>")
    if not path.is_file():
        raise InputError(f"{path} not found: run scripts/search.py first or fix the folder")
    trials = pd.read_parquet(path)
    rows = trials[trials["trial_id"] == trial]
    if rows.empty:
        raise InputError(f"{path}: no trial {trial!r}; trials are {', '.join(trials.trial_id)}")
    return config_of(rows.iloc[0], seed=0, epochs=1, clean_epochs=0)


def time_epoch(config: TrainConfig, data, device) -> float:
    """Seconds for one augmented training epoch (clean_epochs=0: every batch is warped)."""
    state = make_state(config, device, len(data.train_y))
    spec = AugmentSpec.from_config(config)
    started = time.perf_counter()
    loss, _ = train_epoch(config, state, data, spec)
    loss.item()  # waits for the device
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="results/<search>:<trial_id>, first = baseline")
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--repeats", type=int, default=2, help="epochs timed per model")
    parser.add_argument(
        "--smoke", dest="smoke_test", action="store_true", help="2,560 images, 1 repeat"
    )
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    try:
        configs = [load_config(name).replace(device=str(device)) for name in args.models]
        data = load_mnist(args.data_dir)
    except (InputError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    repeats = 1 if args.smoke_test else args.repeats
    data = data.subset(2560 if args.smoke_test else 0, 0).to(device)
    print(
        f"one epoch of {len(data.train_y):,} images on {device}, "
        f"{torch.get_num_threads()} torch threads, best of {repeats}",
        flush=True,
    )
    times: list[list[float]] = [[] for _ in configs]
    for _ in range(repeats):
        for config, seconds in zip(configs, times, strict=True):
            seconds.append(time_epoch(config, data, device))
    base = min(times[0])
    for name, config, seconds in zip(args.models, configs, times, strict=True):
        params = count_params(build_from_config(config))
        print(
            f"  {min(seconds):7.2f} s  x{base / min(seconds):.2f} speed  {params:6,} params  "
            f"{architecture(config)}  ({name})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
