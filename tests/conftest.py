"""Shared fixtures. The real MNIST is read from $TUNE_MNIST_DATA (.ci/run points it at
../shared/mnist); without it the loader downloads into the user cache, as for any user."""

from __future__ import annotations

import pytest
from searchutil import run_search, space_file

from tune_mnist.data import load_mnist


@pytest.fixture(scope="session")
def mnist():
    return load_mnist()


@pytest.fixture(scope="session")
def small(mnist):
    """2,000 train / 1,000 test images: enough to see learning in seconds."""
    return mnist.subset(2000, 1000)


OVER_BUDGET_POINT = "points_to_evaluate:\n  - {arch: super_light, max_lr: 0.02, rotate_deg: 10.0}\n"


@pytest.fixture(scope="session")
def smoke_search(tmp_path_factory):
    """One search of 7 trials, 2 at a time, on subset data; super_light (4,836 params) is over
    its 4,000 budget. Returns (results/<name> folder, the driver's stdout)."""
    folder = tmp_path_factory.mktemp("smoke")
    space = space_file(folder, points=OVER_BUDGET_POINT)
    done = run_search(folder / "results", "--space", str(space), "--name", "s1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder / "results" / "s1", done.stdout
