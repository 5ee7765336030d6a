"""Time one training epoch, side by side: this project's pipeline vs the stock recipe.

(a) tune_mnist: MNIST as device tensors, batched affine + perspective on the device.
(b) stock: torchvision `MNIST` + PIL `RandomAffine` + `RandomPerspective` transforms +
    `DataLoader(batch_size=128, num_workers=2)`.
Same model, same augmentation strengths, same AdamW + OneCycleLR step per batch. Prints both
times and the ratio; run both in one process so machine noise hits both alike.

    python scripts/bench_epoch.py --data-dir ../shared/mnist            # full epoch
    python scripts/bench_epoch.py --data-dir ../shared/mnist --smoke  # 2,560 images
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tune_mnist.parser import Parser
from tune_mnist.train.augment import AugmentSpec
from tune_mnist.train.config import TrainConfig
from tune_mnist.train.data import (
    DATA_DIR_HELP,
    FILES,
    MEAN,
    STD,
    find_file,
    load_mnist,
    resolve_data_dir,
)
from tune_mnist.train.loop import train_epoch
from tune_mnist.train.state import make_state, resolve_device

AUG = dict(
    rotate_deg=10.0,
    translate_frac=0.1,
    scale_min=0.9,
    scale_max=1.1,
    perspective=0.2,
    perspective_p=0.5,
)


def ours(config: TrainConfig, data, device) -> float:
    data = data.subset(config.train_subset).to(device)
    state = make_state(config, device, len(data.train_y))
    spec = AugmentSpec.from_config(config)
    _sync(device)
    started = time.perf_counter()
    loss, _ = train_epoch(config, state, data, spec)
    loss.item()  # wait for the device
    return time.perf_counter() - started


def stock(config: TrainConfig, data_dir: Path, device, workers: int) -> float:
    from torchvision import datasets, transforms

    augment = transforms.Compose(
        [
            transforms.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            transforms.RandomPerspective(distortion_scale=0.2, p=0.5),
            transforms.ToTensor(),
            transforms.Normalize((MEAN,), (STD,)),
        ]
    )
    dataset = datasets.MNIST(str(data_dir), train=True, download=False, transform=augment)
    if config.train_subset:
        dataset = torch.utils.data.Subset(dataset, range(config.train_subset))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    state = make_state(config, device, len(dataset))
    state.model.train()
    _sync(device)
    started = time.perf_counter()
    for images, target in loader:
        images, target = images.to(device), target.to(device)
        loss = F.cross_entropy(state.model(images).flatten(1), target)  # a cohort of one
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        state.scheduler.step()
    loss.item()
    return time.perf_counter() - started


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def torchvision_root(data_dir: Path, scratch: Path) -> Path:
    """torchvision wants decompressed files in <root>/MNIST/raw; the data dir is read-only."""
    raw = scratch / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES:
        source = find_file(data_dir, name)
        with gzip.open(source) if source.suffix == ".gz" else open(source, "rb") as fin:
            with open(raw / name, "wb") as fout:
                shutil.copyfileobj(fin, fout)
    return scratch


def main(argv: list[str] | None = None) -> None:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("--arch", default="super_light")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (stock)")
    parser.add_argument("--repeats", type=int, default=1, help="epochs timed per pipeline")
    parser.add_argument("--smoke", dest="smoke_test", action="store_true", help="2,560 images only")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    config = TrainConfig(
        arch=args.arch,
        device=str(device),
        epochs=1,
        train_subset=2560 if args.smoke_test else 0,
        **AUG,
    )
    data = load_mnist(args.data_dir)
    n = config.train_subset or len(data.train_y)
    print(
        f"one epoch of {args.arch}, {n:,} images, batch {config.batch_size}, on {device}, "
        f"{torch.get_num_threads()} torch threads",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as scratch:
        root = torchvision_root(resolve_data_dir(args.data_dir), Path(scratch))
        times_ours, times_stock = [], []
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits both
            times_ours.append(ours(config, data, device))
            print(f"  (a) tune_mnist pipeline: {times_ours[-1]:7.2f} s", flush=True)
            times_stock.append(stock(config, root, device, args.workers))
            print(
                f"  (b) stock torchvision + DataLoader({args.workers} workers): "
                f"{times_stock[-1]:7.2f} s",
                flush=True,
            )
    best_ours, best_stock = min(times_ours), min(times_stock)
    print(
        f"ours {best_ours:.2f} s, stock {best_stock:.2f} s: ours is "
        f"{best_stock / best_ours:.2f}x faster (best of {args.repeats})"
    )


if __name__ == "__main__":
    main()
