"""A model's name, as the search's trial lines and the published tables print it: its
architecture, then its recipe where it differs from the reference's
(`lean 8-15s-(12)-15-17-18 silu lr0.0309 ls0.05 clean3`)."""

from __future__ import annotations

import dataclasses

from tune_mnist.train.config import TrainConfig

# Recipe fields a model label names, with their format, where a row differs from TrainConfig's
# defaults (super_light's recipe); the augmentation fields are named together as one part.
RECIPE = {
    "batch_size": "b{:.0f}",
    "max_lr": "lr{:.3g}",
    "weight_decay": "wd{:g}",
    "label_smoothing": "ls{:g}",
    "ema_decay": "ema{:g}",
    "clean_epochs": "clean{:.0f}",
    "optimizer": "{}",
    "momentum": "m{:g}",
}
AUGMENT = ("rotate_deg", "translate_frac", "scale_min", "scale_max")
PHOTOMETRIC = ("brightness", "contrast", "photometric_p")
DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def label(config: TrainConfig) -> str:
    """Architecture label, then the recipe where it is not super_light's (see `recipe`)."""
    return " ".join(filter(None, [architecture(config), recipe(config)]))


def recipe(config: TrainConfig) -> str:
    """`b64 ema0.999 clean3 sgd m0.9 aug5/0.05/0.95-1.05 photo0.2/0.2p0.5`: batch, peak rate,
    weight decay, label smoothing, EMA decay, clean final epochs, optimizer and momentum,
    warp (degrees / shift / zoom range) and brightness/contrast (max change / probability),
    each only where it differs from super_light's recipe."""
    value = config.to_dict()
    parts = [form.format(value[k]) for k, form in RECIPE.items() if value[k] != DEFAULTS[k]]
    if any(value[k] != DEFAULTS[k] for k in AUGMENT):
        parts.append("aug{:g}/{:g}/{:g}-{:g}".format(*(value[k] for k in AUGMENT)))
    if value["photometric_p"] and (value["brightness"] or value["contrast"]):
        parts.append("photo{:g}/{:g}p{:g}".format(*(value[k] for k in PHOTOMETRIC)))
    return " ".join(parts)


def architecture(c: TrainConfig) -> str:
    """`slim 8-16-16 x3` = stem widths, separable width x blocks; `lean 8-12-(8)-10-12-16` =
    conv widths with the 1x1 transition's in brackets (`12s`: a depthwise-separable conv;
    `pool2`: a second max-pool before the last conv; `silu`: its nonlinearity where not ReLU);
    `loop 8-12-16 x3` = stem widths, the shared conv's width x its uses."""
    if c.arch in ("slim", "loop"):
        return f"{c.arch} {c.width1}-{c.width2}-{c.width3} x{c.depth2}"
    if c.arch == "lean":  # widths in order, the 1x1 transition in brackets
        s2, late = "s" * c.separable2, "s" * c.separable_late  # s: depthwise-separable
        widths = f"{c.width1}-{c.width2}{s2}-({c.squeeze_width})-{c.width3}"
        widths += f"-{c.width4}{late}-{c.width5}{late}"
        extras = [" pool2"] * c.pool2 + [f" {c.activation}"] * (c.activation != "relu")
        return f"lean {widths}" + "".join(extras)
    if c.arch == "tiny":
        depths = [c.depth1, c.depth2, c.depth3]
        widths = [c.width1, c.width2, c.width3][: 3 if depths[2] else 2]
        stages = "-".join(f"{a}x{d}" for a, d in zip(widths, depths, strict=False))
        return f"tiny {stages}" + (" sq" if c.squeeze else "")
    return c.arch
