"""A run's stream of training batches: the batch order, then each batch's warp, drawn from the
member's own generator. The pinned-reproduction tests read this stream, so a change here
shows up there."""

from __future__ import annotations

import torch

from tune_mnist.train.augment import AugmentSpec, apply, augment, concat, draw
from tune_mnist.train.config import TrainConfig
from tune_mnist.train.data import MNIST, batches

WARP_CHUNK = 16384  # images warped per call on the whole-epoch path (bounds its memory)


def training_batches(
    config: TrainConfig, data: MNIST, generator: torch.Generator, spec, whole_epoch=False
):
    """One epoch's (index, augmented [0, 1] images, labels), in the order `generator` draws:
    the batch order first (one randperm), then each batch's warp. `whole_epoch` (the GPU
    path) draws the same numbers batch by batch, then warps all the epoch's images at once:
    the same images, without a dozen small kernels in every step."""
    order = batches(len(data.train_y), config.batch_size, generator, data.device)
    if whole_epoch:
        yield from _whole_epoch(order, data, generator, spec)
        return
    for index in order:
        images = data.train_x[index].unsqueeze(1).float() / 255.0
        yield index, augment(images, spec, generator), data.train_y[index]


def _whole_epoch(order, data: MNIST, generator: torch.Generator, spec: AugmentSpec):
    """Every batch's random numbers first, in the per-batch order, then the images warped
    WARP_CHUNK at a time as the epoch reaches them: four calls an epoch instead of 469, and
    a K-seed cohort holds K chunks, not K warped epochs, on the device."""
    draws = [draw(spec, len(index), generator, data.device) for index in order]
    group: list[int] = []
    size = 0
    for i, index in enumerate(order):
        group.append(i)
        size += len(index)
        if size < WARP_CHUNK and i + 1 < len(order):
            continue
        index = torch.cat([order[j] for j in group])
        images = data.train_x[index].unsqueeze(1).float() / 255.0
        if spec.on:
            images = apply(images, spec, concat([draws[j] for j in group]))
        start = 0
        for j in group:
            stop = start + len(order[j])
            yield order[j], images[start:stop], data.train_y[order[j]]
            start = stop
        group, size = [], 0


def whole_epoch(data: MNIST) -> bool:
    """Augment a whole epoch at once (see training_batches): on a GPU, where the per-batch
    kernels would cost more than the warp itself; a CPU keeps the per-batch path."""
    return data.device.type == "cuda"
