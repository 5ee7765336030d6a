"""Shared fixtures. The real MNIST is read from $TUNE_MNIST_DATA (.ci/run points it at
../shared/mnist); without it the loader downloads into the user cache, as for any user."""

from __future__ import annotations

import pytest

from tune_mnist.data import load_mnist


@pytest.fixture(scope="session")
def mnist():
    return load_mnist()


@pytest.fixture(scope="session")
def small(mnist):
    """2,000 train / 1,000 test images: enough to see learning in seconds."""
    return mnist.subset(2000, 1000)
