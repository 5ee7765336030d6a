"""Batched augmentation on the training device: random affine, random perspective, and
random brightness/contrast.

Each transform draws its per-sample parameters from an explicit `torch.Generator`, so the same
seed gives the same augmented batch. Both are folded into one 3x3 homography per sample and
applied with a single `grid_sample`, on [0, 1] images so the fill is black (0), as in the
PIL recipe. With every strength at 0 the batch is returned untouched: off is exactly identity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentSpec:
    rotate_deg: float = 0.0  # max |rotation|, degrees
    translate_frac: float = 0.0  # max |shift|, fraction of the side
    scale_min: float = 1.0  # zoom range, factor
    scale_max: float = 1.0
    shear_deg: float = 0.0  # max |x-shear|, degrees
    perspective: float = 0.0  # corner displacement, fraction of half the side
    perspective_p: float = 0.0  # probability of the perspective warp per sample
    brightness: float = 0.0  # max |intensity shift|, fraction of white
    contrast: float = 0.0  # max |contrast change|: intensities scaled by 1 +- this
    photometric_p: float = 0.0  # probability of brightness/contrast per sample

    @property
    def affine_on(self) -> bool:
        zoom = self.scale_min != 1.0 or self.scale_max != 1.0
        return bool(self.rotate_deg or self.translate_frac or self.shear_deg or zoom)

    @property
    def perspective_on(self) -> bool:
        return self.perspective > 0 and self.perspective_p > 0

    @property
    def photometric_on(self) -> bool:
        return (self.brightness > 0 or self.contrast > 0) and self.photometric_p > 0

    @property
    def geometric_on(self) -> bool:
        return self.affine_on or self.perspective_on

    @property
    def on(self) -> bool:
        return self.geometric_on or self.photometric_on

    @classmethod
    def from_config(cls, config) -> AugmentSpec:
        return cls(**{name: getattr(config, name) for name in cls.__dataclass_fields__})


def _uniform(n: int, low: float, high: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (high - low) + low


Draws = dict[str, torch.Tensor]  # the random numbers of n samples' augmentation, by name


def draw(spec: AugmentSpec, n: int, g: torch.Generator, device) -> Draws:
    """Every random number `augment` uses for n samples, drawn from `g` in a fixed order
    (affine, perspective, photometric; only the parts that are on). Drawing is split from
    applying so a whole epoch can draw batch by batch, in exactly the order per-batch
    augmentation draws, and then warp all its images in one call (`apply`)."""
    d: Draws = {}
    if spec.affine_on:
        d["angle"] = _uniform(n, -spec.rotate_deg, spec.rotate_deg, g, device) * (math.pi / 180)
        shift = _uniform(2 * n, -spec.translate_frac, spec.translate_frac, g, device)
        d["shift"] = shift.view(n, 2) * 2
        d["scale"] = _uniform(n, spec.scale_min, spec.scale_max, g, device)
        d["shear"] = _uniform(n, -spec.shear_deg, spec.shear_deg, g, device) * (math.pi / 180)
    if spec.perspective_on:
        d["pull"] = torch.rand(n, 4, 2, generator=g, device=device) * spec.perspective
        d["warped"] = torch.rand(n, generator=g, device=device) < spec.perspective_p
    if spec.photometric_on:
        applied = (torch.rand(n, generator=g, device=device) < spec.photometric_p).float()
        d["gain"] = _uniform(n, -spec.contrast, spec.contrast, g, device) * applied
        d["offset"] = _uniform(n, -spec.brightness, spec.brightness, g, device) * applied
    return d


def concat(parts: list[Draws]) -> Draws:
    """Many batches' draws as one (every tensor's first dimension is the sample)."""
    return {name: torch.cat([d[name] for d in parts]) for name in parts[0]} if parts else {}


def affine_matrices(d: Draws) -> torch.Tensor:
    """(n, 3, 3) forward affine maps in normalised [-1, 1] coordinates."""
    scale = d["scale"]
    n, device = len(scale), scale.device
    cos, sin, tan = d["angle"].cos(), d["angle"].sin(), d["shear"].tan()
    m = torch.zeros(n, 3, 3, device=device)
    # rotation @ shear-x @ scale, then the shift
    m[:, 0, 0] = cos * scale
    m[:, 0, 1] = (cos * tan - sin) * scale
    m[:, 1, 0] = sin * scale
    m[:, 1, 1] = (sin * tan + cos) * scale
    m[:, :2, 2] = d["shift"]
    m[:, 2, 2] = 1
    return m


def perspective_matrices(d: Draws) -> torch.Tensor:
    """(n, 3, 3) homographies moving each corner inward by up to `perspective` of half-side."""
    pull = d["pull"]
    n, device = len(pull), pull.device
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], device=device)
    moved = corners * (1 - pull)  # every corner moves towards the centre
    moved = torch.where(d["warped"][:, None, None], moved, corners)
    # Solve the 8 homography unknowns from 4 point pairs (corners -> moved), batched.
    x, y = corners[:, 0].expand(n, 4), corners[:, 1].expand(n, 4)
    u, v = moved[..., 0], moved[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=1)
    b = torch.cat([u, v], dim=1).unsqueeze(-1)
    h = torch.linalg.solve(a, b).squeeze(-1)
    return torch.cat([h, torch.ones(n, 1, device=device)], dim=1).view(n, 3, 3)


def augment(images: torch.Tensor, spec: AugmentSpec, g: torch.Generator) -> torch.Tensor:
    """Warp a batch of [0, 1] images (N, 1, H, W), then change brightness and contrast;
    identity (same tensor) when `spec` is off. Each step draws from `g` only when it is on,
    so a run without it keeps the random stream (and the pinned batches) it had before."""
    return apply(images, spec, draw(spec, images.shape[0], g, images.device))


def apply(images: torch.Tensor, spec: AugmentSpec, d: Draws) -> torch.Tensor:
    """`augment` with its random numbers given: each sample depends on its own draws only."""
    if spec.geometric_on:
        images = warp(images, spec, d)
    if spec.photometric_on:
        images = photometric(images, d)
    return images


def photometric(images: torch.Tensor, d: Draws) -> torch.Tensor:
    """x * (1 + c) + b per sample, c in +-contrast, b in +-brightness, clipped to [0, 1]; a
    sample not drawn (1 - photometric_p) is left exactly as it was."""
    n = images.shape[0]
    gain, shift = d["gain"].view(n, 1, 1, 1), d["offset"].view(n, 1, 1, 1)
    return (images * (1 + gain) + shift).clamp(0, 1)


def warp(images: torch.Tensor, spec: AugmentSpec, d: Draws) -> torch.Tensor:
    """The affine and perspective warps, folded into one homography per sample."""
    n, _, h, w = images.shape
    device = images.device
    forward = torch.eye(3, device=device).expand(n, 3, 3)
    if spec.affine_on:
        forward = affine_matrices(d)
    if spec.perspective_on:
        forward = perspective_matrices(d) @ forward
    inverse = torch.linalg.inv(forward)  # output pixel -> where to sample in the input
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=device)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).view(1, h * w, 3)
    src = base @ inverse.transpose(1, 2)
    grid = (src[..., :2] / src[..., 2:]).view(n, h, w, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
