"""Time evaluation at several batch sizes, side by side, on the same model and images.

Every epoch of every run evaluates its validation (and test) images; on a CPU a 5,000-image
batch spills a layer's activations out of cache. `TrainConfig.eval_batch` sets the size
(5,000 before it; a search's and a race's CPU runs take `CPU_EVAL_BATCH`). Prints each
size's best time, its ratio to the first size, and how far its logits and predictions move
from the first's (they should not, beyond float order).

    python scripts/bench_eval.py --model results/<experiment>/confirmed/<trial>/seed1.pt
    python scripts/bench_eval.py --arch super_light --smoke     # fresh weights, 1,000 images
"""

from __future__ import annotations

import time

import torch

from tune_mnist.parser import Parser
from tune_mnist.train import loop
from tune_mnist.train.config import TrainConfig
from tune_mnist.train.data import DATA_DIR_HELP, load_mnist
from tune_mnist.train.modelfile import load_model
from tune_mnist.train.models import build_from_config


def logits(model, images: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.inference_mode():
        parts = [model(loop.normalize(images[s : s + batch])) for s in range(0, len(images), batch)]
    return torch.cat(parts).flatten(1)


def timed(model, images, labels, batch: int) -> float:
    """Seconds for `loop.evaluate` (what a run's epoch calls) at `batch` images a pass."""
    started = time.perf_counter()
    loop.evaluate(model, images, labels, batch)
    return time.perf_counter() - started


def batches(text: str) -> list[int]:
    sizes = [int(s) for s in text.split(",") if s.strip().isdigit()]
    if not sizes or min(sizes) < 1 or len(sizes) != len(text.split(",")):
        raise ValueError(f"--batches {text!r}: comma-separated positive integers, e.g. 5000,500")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a model file (.pt) to evaluate (default: fresh --arch)")
    parser.add_argument("--arch", default="super_light", help="fresh weights of this arch")
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("--batches", default="5000,500", help="sizes to compare, first = base")
    parser.add_argument("--repeats", type=int, default=3, help="timings per size, best kept")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--smoke", dest="smoke_test", action="store_true", help="1,000 images")
    args = parser.parse_args(argv)
    try:
        sizes = batches(args.batches)
    except ValueError as exc:
        parser.error(str(exc))
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads: at least 1")
    torch.set_num_threads(args.threads)
    if args.model:
        model = load_model(args.model)
    else:
        model = build_from_config(TrainConfig(arch=args.arch)).eval()
    model.to(memory_format=torch.channels_last)  # the CPU step's layout (README, The CPU step)
    data = load_mnist(args.data_dir)
    n = 1000 if args.smoke_test else len(data.test_y)
    images, labels = data.test_x[:n], data.test_y[:n]
    best = {size: float("inf") for size in sizes}
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits every size
        for size in sizes:
            best[size] = min(best[size], timed(model, images, labels, size))
    base = logits(model, images, sizes[0])
    print(f"evaluating {n:,} test images, {args.threads} thread(s), best of {args.repeats}:")
    for size in sizes:
        other = logits(model, images, size)
        moved = float((other - base).abs().max())
        changed = int((other.argmax(1) != base.argmax(1)).sum())
        print(
            f"  batch {size:>6,}: {best[size]:6.3f} s  {best[sizes[0]] / best[size]:5.2f}x "
            f"faster than {sizes[0]:,}  logits within {moved:.1e}, {changed} predictions changed",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
