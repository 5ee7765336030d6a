"""Time one training epoch of each CPU step variant, side by side, as ratios to today's step.

The variants are `tune_mnist.train.config.CPU_STEPS`: plain (fp32, contiguous), channels_last,
bf16 and bf16_channels_last. Each is a whole epoch through the real pipeline (MNIST as
tensors, the batched warps of the augmentation, AdamW + one-cycle), for `super_light` and a
~3,000-parameter model (campaign 2's lean 8-12s-(6)-10-8-16 silu). The epochs run
interleaved (every variant of a model, then again) so that drift in machine load hits all
alike; the fastest of `--repeats` counts. bf16 runs only where the CPU has bfloat16
instructions (elsewhere torch emulates it: the variant is skipped with one line).

    python scripts/bench_cpu_step.py --data-dir ../shared/mnist --threads 1
    python scripts/bench_cpu_step.py --smoke   # 2,560 images, seconds
"""

from __future__ import annotations

import sys
import time

import torch

from tune_mnist.machine import cpu_flags, cpu_name
from tune_mnist.parser import Parser
from tune_mnist.train.augment import AugmentSpec
from tune_mnist.train.config import CPU_STEPS, TrainConfig
from tune_mnist.train.data import DATA_DIR_HELP, DataError, load_mnist
from tune_mnist.train.loop import train_epoch
from tune_mnist.train.models import build_from_config, count_params
from tune_mnist.train.state import make_state
from tune_mnist.train.steps import CPU_BF16_FLAGS

MODELS = {
    "super_light": {"arch": "super_light", "perspective_p": 0.5},
    "lean 8-12s-(6)-10-8-16 silu": {
        **{"arch": "lean", "width1": 8, "width2": 12, "squeeze_width": 6, "width3": 10},
        **{"width4": 8, "width5": 16, "activation": "silu", "separable2": True},
    },
}


def time_epoch(config: TrainConfig, data) -> float:
    """Seconds for one augmented training epoch of `config` on the CPU."""
    state = make_state(config, torch.device("cpu"), len(data.train_y))
    spec = AugmentSpec.from_config(config)
    started = time.perf_counter()
    loss, _ = train_epoch(config, state, data, spec)
    loss.item()
    return time.perf_counter() - started


def variants() -> list[str]:
    """Every variant this CPU runs natively (bf16 ones need bfloat16 instructions)."""
    if cpu_flags() & CPU_BF16_FLAGS:
        return list(CPU_STEPS)
    print("no bfloat16 instructions on this CPU: the bf16 variants are not timed", flush=True)
    return [name for name, fields in CPU_STEPS.items() if fields["precision"] == "fp32"]


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a trial's 1)")
    parser.add_argument("--repeats", type=int, default=2, help="epochs timed per variant")
    parser.add_argument("--smoke", dest="smoke_test", action="store_true", help="2,560 images only")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        print("error: --threads and --repeats must be >= 1", file=sys.stderr)
        return 2
    try:
        data = load_mnist(args.data_dir)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    data = data.subset(2560 if args.smoke_test else 0)
    names = variants()
    print(
        f"one epoch, {len(data.train_y):,} images, batch 128, {args.threads} thread(s), "
        f"best of {args.repeats}, on {cpu_name()}",
        flush=True,
    )
    for label, fields in MODELS.items():
        base = TrainConfig(**fields, epochs=1, threads=args.threads)
        params = count_params(build_from_config(base))
        best = {name: float("inf") for name in names}
        for _ in range(args.repeats):
            for name in names:
                seconds = time_epoch(base.replace(**CPU_STEPS[name]), data)
                best[name] = min(best[name], seconds)
        print(f"\n{label} ({params:,} parameters)")
        print("| step variant | s/epoch | speed vs plain |\n| --- | ---: | ---: |")
        for name in names:
            print(f"| {name} | {best[name]:.2f} | {best['plain'] / best[name]:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
