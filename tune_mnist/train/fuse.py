"""K models of one architecture as one network, and back (HFTA-style horizontal fusion).

A small CNN uses a few percent of a GPU: each step is a handful of tiny kernels, launch-bound.
Fusing K copies makes each kernel K times wider instead of launching K times as many:

- every `Conv2d` becomes one grouped conv over K channel blocks (member k owns block k, and
  its groups never see another block; a depthwise conv stays depthwise);
- every `BatchNorm2d` becomes one BatchNorm over K * C channels: its statistics are per
  channel, so these are exactly K independent BatchNorms;
- everything else in these models (activations, dropout, pooling) acts per channel already.

Member k's input is channel k of an (N, K, 28, 28) batch, its own images; the fused network
returns (N, K, 10). All registered architectures end in `flatten(1)` of (N, 10 * K, 1, 1), whose
rows reshape member-major into (N, K, 10). Shared modules (`loop`'s reused conv) stay shared.

That is the GPU path. On a CPU, which is compute-bound, the fused layout gains nothing and its
copies cost (every layer's member blocks split and joined again: a 3-seed cohort cost 1.19x
three single runs): there `Fused` runs each member's own network on views of the fused
tensors instead, so the weights, their gradients, the optimiser state and the checkpoints are
one and the same on both devices.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

FUSED_KINDS = (nn.Conv2d, nn.BatchNorm2d)


class Fused(nn.Module):
    """`body` is a member's network with every conv and BatchNorm widened K-fold."""

    # each member's CPU random state for dropout, set by state.make_state: with it a
    # member's masks, and so its whole CPU training, are those of its single run
    member_rng: list[torch.Tensor] | None = None

    def __init__(self, body: nn.Module, k: int, template: nn.Module):
        super().__init__()
        self.body = body
        self.k = k
        self._template = [template]  # in a list: its weights are not this module's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K, H, W) images, member k's in channel k -> (N, K, classes) logits."""
        if x.dim() != 4 or x.shape[1] != self.k:
            raise ValueError(f"expected (N, {self.k}, H, W) input, got {tuple(x.shape)}")
        if x.device.type == "cpu" and self.k > 1:
            return self._one_by_one(x)
        return self._grouped(x)

    def _grouped(self, x: torch.Tensor) -> torch.Tensor:
        """Every member at once through the widened body: one launch per layer on a GPU."""
        return self.body(x).reshape(x.shape[0], self.k, -1)

    def _one_by_one(self, x: torch.Tensor) -> torch.Tensor:
        """On a CPU, each member's own network on its own images, on views of the fused
        weights and statistics (gradients and BatchNorm updates land in the fused tensors).
        A CPU is compute-bound: the fused layout only adds copies there (every layer's
        member blocks split and joined again), while K plain runs of the template cost K."""
        template = self._template[0].train(self.training)
        tensors = dict(self.body.named_parameters()) | dict(self.body.named_buffers())
        rngs = self.member_rng if self.training and self.member_rng else None
        outer = torch.get_rng_state() if rngs else None
        outputs = []
        for k in range(self.k):
            # a 0-dim buffer (BatchNorm's step count) is shared: each member counts on a copy
            own = {n: _block(t, k, self.k) if t.dim() else t.clone() for n, t in tensors.items()}
            if rngs:  # member k's dropout masks: those its own single run draws
                torch.set_rng_state(rngs[k])
            outputs.append(functional_call(template, own, (x[:, k : k + 1],)))
            if rngs:
                rngs[k] = torch.get_rng_state()
        if outer is not None:
            torch.set_rng_state(outer)
        if self.training:  # the shared step counts, once for the K members
            for module in self.body.modules():
                if isinstance(module, nn.BatchNorm2d) and module.num_batches_tracked is not None:
                    module.num_batches_tracked.add_(1)
        return torch.stack(outputs, dim=1)


def _fused_conv(convs: list[nn.Conv2d]) -> nn.Conv2d:
    first, k = convs[0], len(convs)
    if first.padding_mode != "zeros":
        raise ValueError("fuse() supports zero-padded convs only")
    fused = nn.Conv2d(
        first.in_channels * k,
        first.out_channels * k,
        first.kernel_size,
        stride=first.stride,
        padding=first.padding,
        dilation=first.dilation,
        groups=first.groups * k,  # block k of the output reads block k of the input only
        bias=first.bias is not None,
    )
    with torch.no_grad():
        fused.weight.copy_(torch.cat([c.weight for c in convs]))
        if first.bias is not None:
            fused.bias.copy_(torch.cat([c.bias for c in convs]))
    return fused.to(first.weight.device)


def _fused_norm(norms: list[nn.BatchNorm2d]) -> nn.BatchNorm2d:
    first, k = norms[0], len(norms)
    fused = nn.BatchNorm2d(
        first.num_features * k,
        eps=first.eps,
        momentum=first.momentum,
        affine=first.affine,
        track_running_stats=first.track_running_stats,
    )
    with torch.no_grad():
        for name, tensor in fused.named_parameters(recurse=False):
            tensor.copy_(torch.cat([getattr(n, name) for n in norms]))
        for name in ("running_mean", "running_var"):
            if getattr(first, name) is not None:
                getattr(fused, name).copy_(torch.cat([getattr(n, name) for n in norms]))
        if first.num_batches_tracked is not None:
            fused.num_batches_tracked.copy_(first.num_batches_tracked)
    return fused.to(first.weight.device if first.affine else first.running_mean.device)


def _members(models: list[nn.Module], name: str) -> list[nn.Module]:
    return [m.get_submodule(name) for m in models]


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def _check_same_shape(models: list[nn.Module]) -> None:
    if not models:
        raise ValueError("fuse() needs at least one model")
    shapes = [{k: v.shape for k, v in m.state_dict().items()} for m in models]
    kinds = {type(m) for m in models}
    if len(kinds) > 1 or any(s != shapes[0] for s in shapes):
        raise ValueError("fuse() needs models of one architecture with the same widths")


def fuse(models: list[nn.Module]) -> Fused:
    """One network computing all of `models` at once (copies: the inputs stay untouched)."""
    _check_same_shape(models)
    body = copy.deepcopy(models[0])
    done: dict[int, nn.Module] = {}  # id of a member-0 module -> its fused twin (sharing)
    for name, module in list(models[0].named_modules(remove_duplicate=False)):
        if not isinstance(module, FUSED_KINDS):
            continue
        if id(module) not in done:
            parts = _members(models, name)
            build = _fused_conv if isinstance(module, nn.Conv2d) else _fused_norm
            done[id(module)] = build(parts)
        _replace(body, name, done[id(module)])
    return Fused(body, len(models), copy.deepcopy(models[0]))


def _block(tensor: torch.Tensor | None, k: int, count: int) -> torch.Tensor | None:
    if tensor is None or tensor.dim() == 0:
        return tensor
    size = tensor.shape[0] // count
    return tensor[k * size : (k + 1) * size]


def member_state(fused: Fused, k: int) -> dict[str, torch.Tensor]:
    """Member k's state dict (a single model's layout), without building the model."""
    return {n: _block(t, k, fused.k).clone() for n, t in fused.body.state_dict().items()}


def unfuse(fused: Fused) -> list[nn.Module]:
    """The K member models, each a plain network with its own block of every fused tensor."""
    members = []
    for k in range(fused.k):
        member = copy.deepcopy(fused._template[0])
        member.load_state_dict(member_state(fused, k))
        members.append(member.train(fused.training))
    return members
