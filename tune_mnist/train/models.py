"""Tiny MNIST CNNs: the reference project's three models and the searchable families.

All models take normalised (N, 1, 28, 28) images and return (N, 10) logits. Convolutions have
no bias because BatchNorm follows each of them (the bias would be a wasted parameter).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

# Nonlinearities by config name. SiLU is smooth where ReLU has a kink: no weights either way.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU}


def bn_act(channels: int, dropout: float, activation: str = "relu") -> list[nn.Module]:
    """BatchNorm -> ReLU (or `activation`) -> Dropout: what follows every conv here."""
    return [nn.BatchNorm2d(channels), ACTIVATIONS[activation](), nn.Dropout(dropout)]


def conv_bn(
    c_in: int, c_out: int, dropout: float, padding: int = 0, activation: str = "relu"
) -> nn.Sequential:
    """3x3 conv -> BatchNorm -> ReLU (or `activation`) -> Dropout: every model's building block."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=padding, bias=False)
    return nn.Sequential(conv, *bn_act(c_out, dropout, activation))


def sep_bn(c_in: int, c_out: int, dropout: float, activation: str = "relu") -> nn.Sequential:
    """Depthwise-separable 3x3 block: a per-channel 3x3 then a 1x1 mix, BatchNorm, ReLU.
    Costs 9*c_in + c_in*c_out weights instead of 9*c_in*c_out: at 16 channels, 400 vs 2,304.
    No nonlinearity between the two convs (Xception found it hurts)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        *bn_act(c_out, dropout, activation),
    )


def conv1x1(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, bias=False)


class Light(nn.Module):
    """Reference `light`: two blocks, max-pool + 1x1 transitions, 1x1 to 10 classes, GAP."""

    def __init__(self, dropout: float = 0.05):
        super().__init__()
        self.block1 = nn.Sequential(conv_bn(1, 6, dropout), conv_bn(6, 8, dropout))  # 28->24
        self.trans1 = nn.Sequential(nn.MaxPool2d(2), conv1x1(8, 10))  # 24->12
        self.block2 = nn.Sequential(
            conv_bn(10, 10, dropout), conv_bn(10, 14, dropout), conv_bn(14, 14, dropout)
        )  # 12->6
        self.trans2 = nn.Sequential(nn.MaxPool2d(2), conv1x1(14, 10))  # 6->3
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trans1(self.block1(x))
        x = self.trans2(self.block2(x))
        return self.gap(x).flatten(1)


class Lightest(nn.Module):
    """Reference `lightest`: the `light` layout with narrower channels."""

    def __init__(self, dropout: float = 0.05):
        super().__init__()
        self.block1 = nn.Sequential(conv_bn(1, 6, dropout), conv_bn(6, 8, dropout))
        self.trans1 = nn.Sequential(nn.MaxPool2d(2), conv1x1(8, 8))
        self.block2 = nn.Sequential(
            conv_bn(8, 10, dropout), conv_bn(10, 14, dropout), conv_bn(14, 12, dropout)
        )
        self.trans2 = nn.Sequential(nn.MaxPool2d(2), conv1x1(12, 10))
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trans1(self.block1(x))
        x = self.trans2(self.block2(x))
        return self.gap(x).flatten(1)


class Lean(nn.Module):
    """The `super_light` layout with every width searchable: two unpadded 3x3 convs
    (28->26->24), max-pool + 1x1 transition to `squeeze_width` (24->12), three unpadded 3x3
    convs (12->10->8->6), GAP, 1x1 to the 10 classes. The defaults give `super_light` back.
    `pool2` adds a second max-pool before the last conv (8->4->2): no weights, but each of that
    conv's outputs then sees 24x24 pixels instead of 18x18. `activation` names the
    nonlinearity after each BatchNorm (a key of ACTIVATIONS). `separable2` makes the second
    conv depthwise-separable: at 8->12 channels 168 weights instead of 864, and a fifth of the
    multiply-adds of the whole model, freed for the later, wider layers. `separable_late`
    does the same to the 4th and 5th convs, where most of the weights are: at 12->16
    channels 300 weights instead of 1,728.
    """

    def __init__(
        self,
        width1: int = 8,
        width2: int = 12,
        squeeze_width: int = 8,
        width3: int = 10,
        width4: int = 12,
        width5: int = 16,
        dropout: float = 0.0,
        pool2: bool = False,
        activation: str = "relu",
        separable2: bool = False,
        separable_late: bool = False,
    ):
        super().__init__()

        def block(c_in: int, c_out: int, kind=conv_bn) -> nn.Sequential:
            return kind(c_in, c_out, dropout, activation=activation)

        second = sep_bn if separable2 else conv_bn
        late = sep_bn if separable_late else conv_bn
        self.block1 = nn.Sequential(block(1, width1), block(width1, width2, second))
        self.trans1 = nn.Sequential(nn.MaxPool2d(2), conv1x1(width2, squeeze_width))
        self.block2 = nn.Sequential(
            block(squeeze_width, width3), block(width3, width4, late), block(width4, width5, late)
        )
        # outside block2 so that its state-dict keys do not depend on pool2
        self.pool2 = nn.MaxPool2d(2) if pool2 else nn.Identity()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv1x1(width5, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trans1(self.block1(x))
        x = self.block2[:2](x)
        x = self.block2[2](self.pool2(x))
        return self.head(x).flatten(1)


class SuperLight(Lean):
    """Reference `super_light`: two convs, max-pool + 1x1 transition, three convs, then GAP
    and a 1x1 to 10 classes: `Lean` at its default widths 8-12-(8)-10-12-16."""

    def __init__(self, dropout: float = 0.05):
        super().__init__(dropout=dropout)


class Tiny(nn.Module):
    """Searchable family: 2-3 stages of `depth` same-padded 3x3 convs of `width` channels,
    each stage after the first entered through a max-pool and (if `squeeze`) a 1x1 conv that
    halves the channels; GAP then a 1x1 conv to the 10 classes.
    """

    def __init__(
        self,
        width1: int = 8,
        width2: int = 12,
        width3: int = 16,
        depth1: int = 2,
        depth2: int = 2,
        depth3: int = 1,
        squeeze: bool = True,
        dropout: float = 0.05,
    ):
        super().__init__()
        widths = [width1, width2, width3][: 3 if depth3 else 2]
        depths = [depth1, depth2, depth3][: len(widths)]
        layers: list[nn.Module] = []
        c_in = 1
        for stage, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            if stage > 0:
                layers.append(nn.MaxPool2d(2))
                if squeeze:
                    layers.append(conv1x1(c_in, max(c_in // 2, 2)))
                    c_in = max(c_in // 2, 2)
            for _ in range(depth):
                layers.append(conv_bn(c_in, width, dropout, padding=1))
                c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv1x1(c_in, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).flatten(1)


class Slim(nn.Module):
    """Searchable family built for parameter thrift: two full 3x3 convs on the 28x28 input
    (few channels there, so they are cheap in weights), a max-pool, then `depth2`
    depthwise-separable 3x3 blocks of `width3` channels, GAP and a 1x1 to the 10 classes.
    All convs are unpadded, like the reference models: 28->26->24, pool 12, then -2 per block.
    """

    def __init__(
        self,
        width1: int = 8,
        width2: int = 16,
        width3: int = 16,
        depth2: int = 3,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(1, width1, dropout), conv_bn(width1, width2, dropout))
        blocks = [sep_bn(width2 if i == 0 else width3, width3, dropout) for i in range(depth2)]
        self.body = nn.Sequential(nn.MaxPool2d(2), *blocks)  # 24->12, then 10, 8, 6, 4
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv1x1(width3, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x))).flatten(1)


class Loop(nn.Module):
    """Depth without parameters: super_light's stem (28->26->24, max-pool to 12, 1x1 to
    `width3`), then ONE unpadded 3x3 conv of `width3` channels applied `depth2` times
    (12->10->8->6->4), each use with its own BatchNorm, then GAP and a 1x1 to the 10 classes.
    The reused conv's 9*width3^2 weights count once: four uses of a 16-wide conv cost 2,304
    weights where super_light's three distinct convs (10, 12, 16 wide) cost 3,528.
    """

    def __init__(
        self,
        width1: int = 8,
        width2: int = 12,
        width3: int = 16,
        depth2: int = 3,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(1, width1, dropout), conv_bn(width1, width2, dropout))
        self.trans = nn.Sequential(nn.MaxPool2d(2), conv1x1(width2, width3))
        self.shared = nn.Conv2d(width3, width3, 3, bias=False)
        # per-use normalisation: each application sees differently scaled activations
        self.norms = nn.ModuleList(nn.Sequential(*bn_act(width3, dropout)) for _ in range(depth2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv1x1(width3, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trans(self.stem(x))
        for norm in self.norms:
            x = norm(self.shared(x))
        return self.head(x).flatten(1)


MODELS: dict[str, type[nn.Module]] = {
    "light": Light,
    "lightest": Lightest,
    "super_light": SuperLight,
    "tiny": Tiny,
    "slim": Slim,
    "lean": Lean,
    "loop": Loop,
}


def model_param_names(name: str) -> list[str]:
    """Constructor arguments of a registered model (its searchable config fields)."""
    return list(inspect.signature(_lookup(name)).parameters)


def _lookup(name: str) -> type[nn.Module]:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}: valid names are {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build_model(name: str, **params) -> nn.Module:
    """Instantiate a registered model; unknown names or parameters list the valid ones."""
    valid = model_param_names(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TypeError(
            f"model {name!r} takes no parameter(s) {', '.join(unknown)}: valid are {valid}"
        )
    return _lookup(name)(**params)


def build_from_config(config) -> nn.Module:
    """The model a `TrainConfig` describes (only the fields this architecture uses)."""
    names = model_param_names(config.arch)
    return build_model(config.arch, **{k: getattr(config, k) for k in names})


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def receptive_field(model: nn.Module | str, **params) -> int:
    """Receptive field (pixels) of the output on a 28x28 input. Global average pooling over
    a k x k map acts as a k x k kernel, so a GAP head widens the field to what it averages.
    Layers are taken in the order a forward pass calls them, so a reused conv counts per use.
    """
    if isinstance(model, str):
        model = build_model(model, **params)
    calls: list[tuple[int, int]] = []  # (kernel, stride) per call, in call order

    def record(module, inputs, _output):
        if isinstance(module, nn.AdaptiveAvgPool2d):
            calls.append((inputs[0].shape[-1], 1))  # averages its whole input
        else:
            pair = lambda v: v if isinstance(v, int) else v[0]  # noqa: E731
            calls.append((pair(module.kernel_size), pair(module.stride)))

    kinds = (nn.Conv2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)
    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 1, 28, 28))
    finally:
        for hook in hooks:
            hook.remove()
    rf, jump = 1, 1
    for kernel, stride in calls:
        rf += (kernel - 1) * jump
        jump *= stride
    return rf
