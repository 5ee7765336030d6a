import pytest
import torch

from tune_mnist.train.augment import AugmentSpec, augment


def batch(mnist, n=64):
    return mnist.train_x[:n].unsqueeze(1).float() / 255


def gen(seed=0):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


SPECS = [
    AugmentSpec(rotate_deg=15),
    AugmentSpec(translate_frac=0.1),
    AugmentSpec(scale_min=0.8, scale_max=1.2),
    AugmentSpec(shear_deg=20),
    AugmentSpec(perspective=0.3, perspective_p=1.0),
    AugmentSpec(rotate_deg=10, translate_frac=0.1, perspective=0.2, perspective_p=0.5),
    AugmentSpec(brightness=0.2, contrast=0.3, photometric_p=1.0),
    AugmentSpec(rotate_deg=7, brightness=0.2, contrast=0.2, photometric_p=0.5),
]


def test_off_is_exactly_identity(mnist):
    x = batch(mnist)
    assert augment(x, AugmentSpec(), gen()) is x
    assert augment(x, AugmentSpec(perspective=0.5, perspective_p=0.0), gen()) is x
    assert augment(x, AugmentSpec(brightness=0.5, contrast=0.5), gen()) is x  # p = 0


def test_photometric_off_draws_nothing_so_old_batches_stay(mnist):
    """A run without brightness/contrast draws exactly what it drew before they existed."""
    x, g1, g2 = batch(mnist), gen(5), gen(5)
    augment(x, AugmentSpec(rotate_deg=10, brightness=0.3), g1)  # p = 0: off
    augment(x, AugmentSpec(rotate_deg=10), g2)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


def test_photometric_scales_and_shifts_each_drawn_sample_only(mnist):
    x = batch(mnist, 256)
    y = augment(x, AugmentSpec(brightness=0.2, contrast=0.3, photometric_p=0.5), gen())
    same = (y == x).flatten(1).all(1)
    assert 0.3 < same.float().mean().item() < 0.7  # the others left exactly as they were
    background = y[~same][:, :, :2, :2].flatten(1)  # a corner: 0 before, the shift after
    assert background.amax() > 0 and background.amax() <= 0.2 + 1e-6
    assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("spec", SPECS)
def test_on_changes_pixels_keeps_shape_dtype_and_range(mnist, spec):
    x = batch(mnist)
    y = augment(x, spec, gen())
    assert y.shape == x.shape and y.dtype == x.dtype
    assert (y - x).abs().mean() > 1e-3
    assert y.min() >= 0 and y.max() <= 1 + 1e-6
    # the digit stays mostly inside the frame: ink is moved, not destroyed
    assert y.sum() / x.sum() > 0.5


@pytest.mark.parametrize("spec", SPECS)
def test_same_seed_same_batch(mnist, spec):
    x = batch(mnist)
    assert torch.equal(augment(x, spec, gen(3)), augment(x, spec, gen(3)))
    assert not torch.equal(augment(x, spec, gen(3)), augment(x, spec, gen(4)))


def test_each_sample_gets_its_own_draw(mnist):
    x = batch(mnist, 2)[:1].repeat(8, 1, 1, 1)
    y = augment(x, AugmentSpec(rotate_deg=30), gen())
    assert not torch.equal(y[0], y[1])


def test_perspective_probability_leaves_some_untouched(mnist):
    x = batch(mnist, 256)
    y = augment(x, AugmentSpec(perspective=0.4, perspective_p=0.5), gen())
    changed = ((y - x).abs().flatten(1).amax(1) > 1e-4).float().mean().item()
    assert 0.3 < changed < 0.7
