import itertools

import pytest
import torch
from torch import nn

from tune_mnist.train.models import (
    MODELS,
    build_model,
    count_params,
    receptive_field,
)

TINY_SWEEP = [
    dict(width1=w1, width2=w2, width3=w3, depth1=d1, depth2=d2, depth3=d3, squeeze=sq)
    for w1, w2, w3, d1, d2, d3, sq in itertools.product(
        [4, 8], [8, 12], [12, 16], [1, 2], [1, 2], [0, 1], [True, False]
    )
]

# the reference project's own counts (its README): ours come within 5% of each
PUBLISHED_PARAMS = {"light": 4738, "lightest": 4274, "super_light": 4842}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_is_small_and_shaped(name):
    model = build_model(name)
    assert count_params(model) < 8000
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    kinds = {type(m) for m in model.modules()}
    assert nn.BatchNorm2d in kinds and nn.Dropout in kinds


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_reference_models_match_published_counts_and_see_the_whole_digit(name):
    published = PUBLISHED_PARAMS[name]
    assert abs(count_params(build_model(name)) - published) / published < 0.05
    assert receptive_field(name) >= 28
    pools = [m for m in build_model(name).modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) >= 1


def test_super_light_ends_with_gap_then_1x1():
    head = list(build_model("super_light").head)
    assert isinstance(head[0], nn.AdaptiveAvgPool2d)
    assert isinstance(head[1], nn.Conv2d) and head[1].kernel_size == (1, 1)
    assert head[1].out_channels == 10


def test_tiny_sweep_builds_and_runs():
    x = torch.zeros(2, 1, 28, 28)
    counts = []
    for params in TINY_SWEEP:
        model = build_model("tiny", **params, dropout=0.1)
        assert model(x).shape == (2, 10)
        counts.append(count_params(model))
    assert all(c < 8000 for c in counts)
    assert min(counts) < 1500 and max(counts) > 4000


def test_tiny_reaches_1500_to_8000():
    small = build_model("tiny", width1=4, width2=8, width3=12, depth1=1, depth2=1, depth3=1)
    big = build_model("tiny", width1=10, width2=16, width3=16, depth1=2, depth2=2, depth3=2)
    assert count_params(small) <= 1500
    assert 7000 < count_params(big) < 8000


def test_slim_is_cheaper_than_full_convs_and_sees_the_whole_digit():
    slim = build_model("slim", width1=8, width2=16, width3=16, depth2=3)
    # stem 72 + 1,152 weights, 3 separable blocks of 144 + 256, head 160, BatchNorm 2/channel
    assert count_params(slim) == 72 + 1152 + 3 * (144 + 256) + 160 + 2 * (8 + 16 + 3 * 16)
    assert receptive_field(slim) >= 28
    depthwise = [m for m in slim.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 3 and all(m.groups == m.in_channels for m in depthwise)


@pytest.mark.parametrize("depth2", [1, 2, 3, 4])
def test_slim_sweep_runs_under_budget(depth2):
    for w1, w2, w3 in itertools.product([4, 12], [8, 24], [8, 32]):
        model = build_model("slim", width1=w1, width2=w2, width3=w3, depth2=depth2)
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
        assert count_params(model) < 9000


def test_lean_defaults_are_super_light_and_widths_change_the_count():
    lean, ref = build_model("lean"), build_model("super_light")
    assert count_params(lean) == count_params(ref) == 4836
    assert receptive_field(lean) == receptive_field(ref) >= 28
    narrow = build_model("lean", width1=6, width2=10, squeeze_width=6, width5=12)
    # conv weights 54 + 540 + 60 + 540 + 1,080 + 1,296, head 120, BatchNorm 2 x 50 channels
    assert count_params(narrow) == 54 + 540 + 60 + 540 + 1080 + 1296 + 120 + 100
    assert narrow(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_lean_pool2_pools_before_the_last_conv_at_no_weight_cost():
    widths = dict(width1=8, width2=12, squeeze_width=6, width3=8, width4=10, width5=16)
    flat, pooled = build_model("lean", **widths), build_model("lean", pool2=True, **widths)
    assert count_params(flat) == count_params(pooled) == 3868
    # same weights, so checkpoints load either way and a seed initialises both alike
    assert flat.state_dict().keys() == pooled.state_dict().keys()
    sizes = {}
    pooled.head.register_forward_hook(lambda m, inputs, out: sizes.update(gap=inputs[0].shape))
    assert pooled(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert sizes["gap"][-2:] == (2, 2)  # 8 -> pool 4 -> unpadded 3x3 -> 2


def test_lean_activation_swaps_every_relu_and_nothing_else():
    relu, silu = build_model("lean"), build_model("lean", activation="silu")
    assert count_params(relu) == count_params(silu)
    kinds = lambda m: [type(x) for x in m.modules() if isinstance(x, (nn.ReLU, nn.SiLU))]  # noqa: E731
    assert kinds(relu) == [nn.ReLU] * 5 and kinds(silu) == [nn.SiLU] * 5


def test_lean_separable2_costs_a_depthwise_and_a_pointwise_conv():
    widths = dict(width1=8, width2=12, squeeze_width=6, width3=8, width4=10, width5=16)
    full, sep = build_model("lean", **widths), build_model("lean", separable2=True, **widths)
    # 8 -> 12: 9 x 8 x 12 = 864 weights, or 9 x 8 depthwise + 8 x 12 pointwise = 168
    assert count_params(full) - count_params(sep) == 864 - 168
    assert receptive_field(full) == receptive_field(sep)
    assert sep(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_lean_separable_late_makes_the_4th_and_5th_convs_separable_and_nothing_else():
    widths = dict(width1=8, width2=12, squeeze_width=6, width3=8, width4=10, width5=16)
    full, late = build_model("lean", **widths), build_model("lean", separable_late=True, **widths)
    # 8 -> 10: 720 weights, or 72 + 80; 10 -> 16: 1,440, or 90 + 160
    assert count_params(full) - count_params(late) == (720 - 152) + (1440 - 250)
    assert receptive_field(full) == receptive_field(late)
    depthwise = [m.groups for m in late.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise == [8, 10]  # the 4th and 5th convs' inputs, and no other conv
    assert late(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_tiny_dropout_value_is_used():
    model = build_model("tiny", dropout=0.2)
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.2}


def test_bad_name_lists_valid_names():
    with pytest.raises(KeyError, match="super_light"):
        build_model("resnet50")


def test_bad_parameter_lists_valid_ones():
    with pytest.raises(TypeError, match="width1"):
        build_model("tiny", widht1=4)


def test_loop_reuses_one_conv_and_counts_its_weights_once():
    calls = []
    loop = build_model("loop", width1=8, width2=12, width3=16, depth2=4)
    loop.shared.register_forward_hook(lambda *_: calls.append(1))
    assert loop(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert len(calls) == 4  # one module, four uses: 12 -> 10 -> 8 -> 6 -> 4
    # stem 72 + 864, 1x1 192, the shared conv once (2,304), a BatchNorm per use, head 160
    assert count_params(loop) == 72 + 864 + 192 + 2304 + 2 * (8 + 12) + 4 * 2 * 16 + 160
    shapes = [p.shape for p in loop.parameters()]
    assert shapes.count(torch.Size([16, 16, 3, 3])) == 1


def test_receptive_field_counts_a_reused_conv_at_every_use():
    # without GAP the field is 6 (stem + pool) + 4 per 3x3 use at stride 2
    for depth2 in (1, 3):
        loop = build_model("loop", depth2=depth2)
        loop.head = nn.Sequential(nn.Conv2d(16, 10, 1))  # drop the GAP: see the convs alone
        assert receptive_field(loop) == 6 + 4 * depth2
