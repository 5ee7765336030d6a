"""Pinned reproduction: a refactor must not change a model's initial weights or what it trains on.

Every published number is a function of (config, seed): the initial weights drawn for each
architecture, the batch order and the augmented pixels. This file pins checksums of those for
every architecture (each knob that builds layers) and a few seeds, in tests/pinned.json. A
change that moves them (say, building two layers in the other order) fails here, loudly; if
the change is wanted, rerun what the README publishes, then regenerate the pins with
`python tests/test_pinned.py --update` and say so in the commit.

Weights and batch indices come straight from torch's generators, so they are compared bit for
bit. Augmented pixels go through trigonometry and `grid_sample`, whose last bits may differ
between CPU instruction sets: they are compared to 1e-4 per image sum, far below what any
change to the augmentation itself moves (a whole pixel is 1/255 of an image sum).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

from tune_mnist.train.augment import AugmentSpec
from tune_mnist.train.config import TrainConfig
from tune_mnist.train.fuse import member_state
from tune_mnist.train.state import make_state
from tune_mnist.train.stream import training_batches

PINS = Path(__file__).with_name("pinned.json")
SEEDS = (0, 1, 7)
# one entry per way of building layers: every architecture, and each knob that adds, removes
# or reorders a layer (activation and dropout build none, but a refactor could make them)
ARCHS = {
    "light": {"arch": "light"},
    "lightest": {"arch": "lightest"},
    "super_light": {"arch": "super_light"},
    "lean": {"arch": "lean"},
    "lean-separable2": {"arch": "lean", "separable2": True},
    "lean-separable-late": {"arch": "lean", "separable_late": True},
    "lean-pool2-silu": {"arch": "lean", "pool2": True, "activation": "silu"},
    "lean-all-knobs": {
        "arch": "lean",
        **{"width1": 7, "width2": 11, "width3": 9, "width4": 13, "width5": 17},
        **{"squeeze_width": 5, "separable2": True, "pool2": True, "activation": "silu"},
        "dropout": 0.05,
    },
    "tiny": {"arch": "tiny"},
    "tiny-flat": {"arch": "tiny", "depth1": 1, "depth2": 3, "depth3": 0, "squeeze": False},
    "slim": {"arch": "slim"},
    "slim-deep": {"arch": "slim", "depth2": 3, "width3": 10},
    "loop": {"arch": "loop"},
    "loop-4": {"arch": "loop", "depth2": 4},
}
# the data streams: default augmentation, every warp on, no warp, the validation split
STREAMS = {
    "default": {},
    "all-warps": {"shear_deg": 10.0, "perspective": 0.2, "perspective_p": 0.5},
    "no-warp": {"rotate_deg": 0.0, "translate_frac": 0.0, "scale_min": 1.0, "scale_max": 1.0},
    "val5000-b64": {"val_size": 5000, "batch_size": 64},
}
BATCHES = 3  # batches of the first epoch that are pinned


def digest(tensors) -> str:
    h = hashlib.sha256()
    for name, tensor in tensors:
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def initial_weights(values: dict, seed: int) -> str:
    config = TrainConfig.from_dict({**values, "seed": seed, "device": "cpu"})
    state = make_state(config, torch.device("cpu"), 60000)  # a run's state: a cohort of one
    return digest(member_state(state.model, 0).items())


def first_batches(values: dict, seed: int, mnist) -> dict:
    """What training reads first: via the training loop's own batch stream."""
    config = TrainConfig.from_dict({**values, "seed": seed, "device": "cpu"})
    data = mnist.holdout(config.val_size)
    state = make_state(config, torch.device("cpu"), len(data.train_y))
    [generator] = state.generators
    stream = training_batches(config, data, generator, AugmentSpec.from_config(config))
    indices, sums = [], []
    for _, (index, images, _labels) in zip(range(BATCHES), stream, strict=False):
        indices.append(index)
        sums.extend(images.double().sum(dim=(1, 2, 3))[:4].tolist())
    return {
        "indices": digest((str(i), index) for i, index in enumerate(indices)),
        "generator": digest([("state", generator.get_state())]),
        "image_sums": [round(s, 5) for s in sums],
    }


def compute(mnist) -> dict:
    return {
        "weights": {
            name: {str(seed): initial_weights(values, seed) for seed in SEEDS}
            for name, values in ARCHS.items()
        },
        "batches": {
            name: {str(seed): first_batches(values, seed, mnist) for seed in SEEDS[:2]}
            for name, values in STREAMS.items()
        },
    }


@pytest.fixture(scope="module")
def pins():
    return json.loads(PINS.read_text())


def test_every_architecture_is_pinned(pins):
    from tune_mnist.train.models import MODELS

    assert {v["arch"] for v in ARCHS.values()} == set(MODELS)
    assert set(pins["weights"]) == set(ARCHS) and set(pins["batches"]) == set(STREAMS)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_initial_weights_are_pinned(pins, name):
    found = {str(seed): initial_weights(ARCHS[name], seed) for seed in SEEDS}
    assert found == pins["weights"][name], (
        f"{name}: the initial weights for a seed changed; every published number of this "
        "architecture moves with them (see this file's docstring)"
    )


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_batches_and_augmented_pixels_are_pinned(pins, name, mnist):
    for seed in SEEDS[:2]:
        found = first_batches(STREAMS[name], seed, mnist)
        pinned = pins["batches"][name][str(seed)]
        assert found["indices"] == pinned["indices"], f"{name} seed {seed}: batch order changed"
        assert found["generator"] == pinned["generator"], (
            f"{name} seed {seed}: the augmentation draws a different amount of randomness"
        )
        assert found["image_sums"] == pytest.approx(pinned["image_sums"], abs=1e-4), (
            f"{name} seed {seed}: the augmented pixels changed"
        )


def test_a_seed_changes_the_pins():  # the pins must be able to fail
    assert initial_weights(ARCHS["lean"], 0) != initial_weights(ARCHS["lean"], 1)


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    from tune_mnist.train.data import load_mnist

    PINS.write_text(json.dumps(compute(load_mnist()), indent=1) + "\n")
    print(f"wrote {PINS}")
