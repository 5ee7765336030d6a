"""Fusion: K models as one grouped network computes exactly what the K models compute."""

import pytest
import torch
import torch.nn.functional as F
from test_pinned import ARCHS

from tune_mnist.train.config import TrainConfig
from tune_mnist.train.fuse import Fused, fuse, member_state, unfuse
from tune_mnist.train.models import count_params
from tune_mnist.train.state import init_member

SEEDS = (3, 4, 5)


def members(name: str, dropout_off: bool = False) -> list[torch.nn.Module]:
    """K single-seed models exactly as training initialises them."""
    values = {**ARCHS[name], **({"dropout": 0.0} if dropout_off else {})}
    out = []
    for seed in SEEDS:
        config = TrainConfig.from_dict({**values, "seed": seed, "device": "cpu"})
        out.append(init_member(config, torch.device("cpu"))[0])
    return out


def batch(n: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, len(SEEDS), 28, 28, generator=g)


@pytest.fixture(params=["grouped", "one-by-one"])
def path(request, monkeypatch):
    """Both ways a fused network runs: its grouped body (the GPU's; here on a CPU) and
    member by member (the CPU's)."""
    if request.param == "grouped":  # a CPU runs members one by one; here the GPU's path
        monkeypatch.setattr(Fused, "forward", lambda self, x: self._grouped(x))
    return request.param


def separate(models, x):
    return torch.stack([m(x[:, k : k + 1]) for k, m in enumerate(models)], dim=1)


@pytest.mark.parametrize("name", sorted(ARCHS))
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_fused_forward_equals_the_separate_forwards(name, mode, path):
    models = members(name, dropout_off=True)  # dropout masks are independent, not equal
    fused = fuse(models)
    for m in [*models, fused]:
        m.train(mode == "train")
    x = batch()
    out = fused(x)
    assert out.shape == (6, len(SEEDS), 10)
    assert (out - separate(models, x)).abs().max() <= 1e-5
    if mode == "train":  # BatchNorm's running statistics moved per member, as in each model
        for k, model in enumerate(models):
            for key, value in member_state(fused, k).items():
                assert torch.allclose(value.float(), model.state_dict()[key].float(), atol=1e-6)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_unfuse_round_trips_bit_for_bit(name):
    models = members(name)
    back = unfuse(fuse(models))
    for model, again in zip(models, back, strict=True):
        assert type(again) is type(model) and count_params(again) == count_params(model)
        for key, value in model.state_dict().items():
            assert torch.equal(again.state_dict()[key], value), key


def test_grouped_convs_keep_members_apart(path):
    fused = fuse(members("lean-all-knobs"))
    convs = [m for m in fused.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.groups % len(SEEDS) == 0 for c in convs)
    depthwise = [c for c in convs if c.groups == c.in_channels]
    assert depthwise  # the separable second conv's depthwise half stays depthwise
    x = batch()
    y = x.clone()
    y[:, 1] = 0  # change member 1's images only
    fused.eval()
    a, b = fused(x), fused(y)
    assert torch.equal(a[:, 0], b[:, 0]) and torch.equal(a[:, 2], b[:, 2])
    assert not torch.equal(a[:, 1], b[:, 1])


def test_loop_keeps_its_shared_conv_shared():
    fused = fuse(members("loop"))
    assert count_params(fused) == len(SEEDS) * count_params(members("loop")[0])


def _grads(module, prefix="body."):
    return {n.removeprefix(prefix): p.grad for n, p in module.named_parameters()}


@pytest.mark.parametrize("name", ["super_light", "lean-all-knobs", "loop", "slim", "tiny"])
def test_one_adamw_step_gives_each_member_its_own_step(name, path):
    models = members(name, dropout_off=True)
    fused = fuse(models)
    x = batch(16)
    target = torch.arange(16) % 10
    for k, model in enumerate(models):
        opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01)
        F.cross_entropy(model(x[:, k : k + 1]), target).backward()
        opt.step()
    fused_opt = torch.optim.AdamW(fused.parameters(), lr=0.01, weight_decay=0.01)
    out = fused(x)
    # one loss: the sum of the members' mean losses, so member k's gradient is its own
    sum(F.cross_entropy(out[:, k], target) for k in range(len(SEEDS))).backward()
    fused_opt.step()
    fused_grads = _grads(fused)
    for k, model in enumerate(models):
        for key, grad in _grads(model, "").items():  # Adam's first step hides a scaled one
            block = fused_grads[key].chunk(len(SEEDS))[k]
            assert torch.allclose(block, grad, rtol=1e-4, atol=1e-7), key
        # Adam divides by |gradient|: where one is ~0 (a cancellation: 3e-7 in one of loop's
        # 2,304 shared weights) the summation order's last bits decide its step, so those
        # entries are held to the gradient check above instead
        steady = {n: p.grad.abs() > 1e-5 for n, p in model.named_parameters()}
        kept = sum(int(m.sum()) for m in steady.values())
        assert kept > 0.98 * sum(m.numel() for m in steady.values())  # nearly all checked
        for key, value in member_state(fused, k).items():
            diff = (value.float() - model.state_dict()[key].float()).abs()
            diff = diff[steady[key]] if key in steady else diff
            if diff.numel():
                assert diff.max() <= 1e-6, (key, float(diff.max()))


def test_fuse_refuses_models_that_differ():
    with pytest.raises(ValueError, match="one architecture"):
        fuse([members("lean")[0], members("super_light")[0]])
    with pytest.raises(ValueError, match="at least one"):
        fuse([])
    with pytest.raises(ValueError, match="expected"):
        fuse(members("lean"))(torch.zeros(2, 1, 28, 28))
