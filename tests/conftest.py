"""Shared fixtures. The real MNIST is read from $TUNE_MNIST_DATA (.ci/run points it at
../shared/mnist); unset, ../shared/mnist beside the checkout is used when it exists, else the
loader's user cache (downloading, as for any user). Where none of these holds MNIST, the
tests that need it skip with one reason; the others run."""

from __future__ import annotations

import os

import pytest
from searchutil import ROOT, run_search, space_file

from tune_mnist.train.data import ENV_VAR, DataError, load_mnist

SHARED = ROOT.parent / "shared" / "mnist"
if not os.environ.get(ENV_VAR) and SHARED.is_dir():
    os.environ[ENV_VAR] = str(SHARED)  # subprocesses (search.py, retrain_best.py) read it too


@pytest.fixture(scope="session")
def mnist():
    try:
        return load_mnist()
    except DataError as exc:
        pytest.skip(f"no MNIST: set ${ENV_VAR} to a folder with the four IDX files ({exc})")


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
    # --cpu-step auto: the search -> retrain -> reproduce chain runs the channels-last step
    done = run_search(
        folder / "results", "--space", str(space), "--name", "s1", "--cpu-step", "auto"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder / "results" / "s1", done.stdout
