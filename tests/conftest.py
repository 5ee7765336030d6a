"""Shared fixtures. The real MNIST is read from $TUNE_MNIST_DATA (.ci/run points it at
../shared/mnist); unset, ../shared/mnist beside the checkout is used when it exists, else the
loader's user cache (downloading, as for any user). Where none of these holds MNIST, the
tests that need it skip with one reason; the others run."""

from __future__ import annotations

import os

# Two pytest workers, searches and scripts share 2 cores: a torch op on 2 threads then waits
# for a thread that is not running, and OpenMP's default wait spins, burning the core the
# other needs (a 3-epoch retrain beside two busy processes: 30-36 s, 16-21 s with PASSIVE,
# the same bits). Set before torch loads; subprocesses and Ray's workers inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402 (after the setting above)
from searchutil import ROOT, run_search, space_file  # noqa: E402

from tune_mnist.train.data import ENV_VAR, DataError, load_mnist  # noqa: E402

SHARED = ROOT.parent / "shared" / "mnist"
if not os.environ.get(ENV_VAR) and SHARED.is_dir():
    os.environ[ENV_VAR] = str(SHARED)  # subprocesses (search.py, retrain_best.py) read it too


@pytest.fixture(autouse=True)
def _results_root_kept():
    """A command's --results-dir sets $TUNE_MNIST_RESULTS for its process (paths.
    use_results_dir): one in-process call must not move the next test's results."""
    before = os.environ.get("TUNE_MNIST_RESULTS")
    yield
    if before is None:
        os.environ.pop("TUNE_MNIST_RESULTS", None)
    else:
        os.environ["TUNE_MNIST_RESULTS"] = before


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
def smoke_search(tmp_path_factory, worker_id):
    """One search of 7 trials, 2 at a time, on subset data; super_light (4,836 params) is over
    its 4,000 budget. Returns (results/<name> folder, the driver's stdout). It runs once per
    pytest run: under pytest-xdist the first worker to ask runs it, under a file lock, and
    the others read it. Read-only: a test that writes there works on a copy."""
    from filelock import FileLock

    # the workers of one run share their base folder's parent; a run without workers does not
    shared = worker_id != "master"
    root = tmp_path_factory.getbasetemp().parent if shared else tmp_path_factory.mktemp("s")
    folder, log = root / "smoke", root / "smoke" / "stdout.txt"
    with FileLock(str(root / "smoke.lock")):
        if not log.is_file():
            folder.mkdir(exist_ok=True)
            space = space_file(folder, points=OVER_BUDGET_POINT)
            # --cpu-step auto: the search -> retrain -> reproduce chain runs channels-last
            args = ("--space", str(space), "--name", "s1", "--cpu-step", "auto")
            done = run_search(folder / "results", *args)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            log.write_text(done.stdout)
    return folder / "results" / "s1", log.read_text()


# pytest-xdist: `-n auto` asks this hook. Two workers at most: each search starts its own Ray
# sized to the whole machine, and a training test runs on one thread; on 2 cores two workers
# fill the CPUs that one leaves idle while it waits on Ray, a subprocess or a single thread.
def pytest_xdist_auto_num_workers(config):
    return max(1, min(2, os.cpu_count() or 1))


# Each test file runs whole on one worker (--dist loadfile), so its module fixtures (a
# cluster, a search) start once. Files go to the workers in this order (xdist's own reorder
# is off): the longest first, then the other end-to-end ones, then the rest, so the last file
# a worker takes is a short one.
LONGEST = ["test_kills.py", "test_cluster.py", "test_confirm.py", "test_failures.py"]


def pytest_collection_modifyitems(config, items):
    def rank(item) -> tuple[int, int]:
        name = item.path.name
        first = LONGEST.index(name) if name in LONGEST else len(LONGEST)
        return first, item.get_closest_marker("slow") is None

    items.sort(key=rank)  # a stable sort: a file's tests keep their order
