"""The one door to Ray: starting or joining it (`start_ray`), and every use of Ray beyond its
public API, each with why the public API does not serve and what to check on an upgrade.

Checked against Ray 2.60.0 (RAY_CHECKED; tests/test_ray_door.py fails on another version
until this file is checked again). On an upgrade, read each "Upgrade:" note and run the test
it names. Nothing else in the package imports `ray._*` or `*._internal*`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import signal
import socket
import subprocess
import sys

import torch

from tune_mnist.search import stops

RAY_CHECKED = "2.60.0"
# what a Ray of our own, or a loopback cluster's node, reads at start: the node address on
# loopback (keep_ray_local) and workers at normal priority (start_ray)
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_worker_niceness": "0"}


def fit(tuner):
    """`tuner.fit()`, with the SIGINT (and SIGUSR1) handlers it found put back after it.
    Ray Tune's handler (installed for its loop unless TUNE_DISABLE_SIGINT_HANDLER) puts back
    the one it found only when a Ctrl-C comes, and stays in place otherwise: a Ctrl-C in a
    later stage of the chain (the race) would then only set an event no loop reads. A
    Ctrl-C its loop took, even as the last trial ended, is the search's stop signal
    (stops.stop_code). Upgrade:
    test_chain.py::test_a_signal_during_the_race_stops_the_chain_there"""
    installs = not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER") or 0)
    with stops.handlers_kept(signal.SIGINT, signal.SIGUSR1) as ours:
        result = tuner.fit()
        if installs and signal.getsignal(signal.SIGINT) is ours[signal.SIGINT]:
            stops.RECEIVED.setdefault("signal", signal.SIGINT)  # its handler ran, and left
        return result


WAIT_S = 0.5  # seconds: how long a Ctrl-C may wait for wait_one to hear it


def wait_one(futures: list):
    """The first of `futures` to finish (`ray.wait` for one), in short waits. Ray's blocking
    wait drops a Ctrl-C that lands inside it (the task then runs to its end and the caller
    goes on); a SIGINT noted here stops the caller after the wait it landed in. Upgrade:
    test_chain.py::test_a_signal_during_the_race_stops_the_chain_there"""
    import ray

    with stops.sigint_noted() as noted:
        while True:
            ready, _ = ray.wait(futures, num_returns=1, timeout=WAIT_S)
            if noted:
                raise KeyboardInterrupt
            if ready:
                return ready[0]


def trial_dir_name(trial) -> str:
    """A trial's folder under the experiment: Ray names it there (`trial.storage`, no public
    accessor). Upgrade:
    test_kills.py::test_kills_at_many_moments_lose_nothing_and_retrain_nothing"""
    return trial.storage.trial_dir_name


def stop_paused(tune_controller, trial) -> None:
    """Stop a paused trial, as Ray's own HyperBandScheduler does (TuneController.stop_trial,
    a developer API: a scheduler's decisions only reach the trial reporting). Upgrade:
    test_search.py::test_asha_stopped_some_and_epochs_match"""
    tune_controller.stop_trial(trial)


def hold_restored(tune_controller, trial) -> None:
    """Mark a restored trial PAUSED. A resume (Tuner.restore, resume_unfinished) makes every
    unfinished trial PENDING, a trial paused at a rung too; one that waits for a promotion
    must not start, and while PENDING it counts toward the controller's pending limit (the
    searcher's concurrency), which stops new trials from being proposed. The controller's
    status setter keeps its per-status lists (a developer API). Upgrade:
    test_promotion.py::test_a_restored_waiting_trial_is_held_not_started"""
    tune_controller._set_trial_status(trial, "PAUSED")


def quiet_tune_output() -> None:
    """Ray Tune's own output off, in the driver: its new output engine prints a notice and a
    table for every failed trial whatever the verbosity (on_trial_error is not gated), so the
    legacy engine (RAY_AIR_NEW_OUTPUT=0), silent at verbosity 0; "Resume experiment with:
    Tuner.restore(...)" on Ctrl-C (ours names the command) and "Trials did not complete"
    (ours names each failed trial); every failure's traceback logged again (ours is one
    line). Upgrade: test_failures.py::test_bad_input_is_one_line_exit_2_and_writes_nothing"""
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)
    logging.getLogger("ray.tune.execution.tune_controller").setLevel(logging.CRITICAL)


def keep_ray_local(address: str | None) -> None:
    """Without a cluster to join, or to join one on this machine's loopback (as
    `python -m tune_mnist.search.loopback` starts), make Ray use 127.0.0.1 as the node
    address (as it does on a laptop OS): its servers then listen on loopback only, and Ray
    does not rewrite 127.0.0.1 to the machine's outward IP. Read when ray is first imported,
    so this runs before that; workers inherit it."""
    address = address or os.environ.get("RAY_ADDRESS")
    host = (address or "").rpartition(":")[0]
    if not address or host in ("127.0.0.1", "localhost"):
        key = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
        os.environ.setdefault(key, LOOPBACK_ENV[key])


def start_ray(
    address: str | None,
    cpus: float | None = None,
    gpus: float | None = None,
    worker_output: bool = False,
) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start a Ray of our own with
    `cpus` and `gpus` (default: this machine's), no dashboard. `worker_output`: the workers'
    prints reach this terminal, each line (retrain_best shows every seed's epochs); a search
    prints its own lines instead (tune_mnist.search.writer)."""
    address = address or os.environ.get("RAY_ADDRESS")
    keep_ray_local(address)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0" if worker_output else "1")
    # Ray starts its workers at nice 15: on a busy machine the trials (the whole point) then
    # starve behind any normal process; ours run at normal priority (a cluster keeps its own)
    os.environ.setdefault("RAY_worker_niceness", LOOPBACK_ENV["RAY_worker_niceness"])
    import ray  # lazy: Ray takes seconds to load, and after start_ray's settings

    if ray.is_initialized():  # a chain's later stage: the Ray its search started
        return  # (its workers' prints stay off: the stage's driver prints its progress)
    if address:
        # Ray's "Connecting to existing Ray cluster" lines are noise in a one-line error
        join(address, log_to_driver=worker_output, logging_level=logging.WARNING)
        return

    ray.init(
        # a new Ray of our own: without "local", Ray joins whatever cluster `ray start` last
        # started on this machine (and then refuses num_cpus)
        address="local",
        num_cpus=os.cpu_count() if cpus is None else cpus,
        num_gpus=torch.cuda.device_count() if gpus is None else gpus,
        include_dashboard=False,
        dashboard_host="127.0.0.1",
        log_to_driver=worker_output,
        configure_logging=False,
    )


# set while a chain of commands runs in this process (one_ray): they share one ray.init
_HELD: list[bool] = []


@contextlib.contextmanager
def one_ray():
    """One ray.init for every stage run inside (search, race, confirmation): stop_ray
    leaves it up and the block's end shuts it down. A second ray.init after ray.shutdown in
    one process leaves threads of the first connection behind that can crash it later
    (SIGSEGV, ray-project/ray#31145)."""
    _HELD.append(True)
    try:
        yield
    finally:
        _HELD.pop()
        stop_ray()


def stop_ray() -> None:
    """ray.shutdown, unless a chain keeps Ray up for its next stage (one_ray)."""
    if not _HELD and "ray" in sys.modules:
        sys.modules["ray"].shutdown()


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """A head that does not answer fails now, in one line: Ray itself retries a wrong
    address for many minutes before giving up."""
    host, _, port = address.rpartition(":")
    if "://" in address or not port.isdigit():  # ray://, "auto": Ray resolves those itself
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {address} ({exc.strerror or exc})") from None


def join(address: str, **init) -> None:
    """ray.init on the cluster at `address`, speaking its authentication: with a token on
    this machine, token authentication first (use_auth_token); a cluster started without
    it (Ray's own `cluster_utils.Cluster`, a `ray start` with RAY_AUTH_MODE=disabled, ...)
    then accepts the driver and runs its tasks, but kills every actor before it starts
    ("The actor never ran"), so every trial would fail. A probe actor tells, within
    seconds, started by a child process: this process calls ray.init once, since a second
    ray.init after ray.shutdown in one process leaves threads of the first connection
    behind that can crash it later (SIGSEGV, ray-project/ray#31145)."""
    import ray  # lazy: Ray takes seconds to load, and after start_ray's settings

    check_reachable(address)
    if use_auth_token() and not _actor_runs_in_child(address):
        _set_auth_mode("disabled")
        if not _actor_runs_in_child(address):
            raise ConnectionError(
                f"the cluster at {address} starts no actor with or without token "
                "authentication; check its RAY_AUTH_MODE and `ray status`"
            )
    ray.init(address=address, **init)


# a driver of its own: joins, starts one actor, exits 0 when it answered, 3 when Ray
# killed it before it ran (a mismatched authentication), 4 when none started in time
PROBE = """
import sys, ray
from ray.exceptions import GetTimeoutError, RayActorError
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
@ray.remote(num_cpus=0)
class Probe:
    def ping(self):
        return True
try:
    ray.get(Probe.remote().ping.remote(), timeout=float(sys.argv[2]))
except RayActorError:
    sys.exit(3)
except GetTimeoutError:
    sys.exit(4)
"""


def _actor_runs_in_child(address: str, timeout_s: float = 120.0) -> bool:
    """True when a probe actor (no CPU asked: busy nodes still place it) answers, asked by
    a child process with this process's authentication settings (RAY_AUTH_MODE)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", PROBE, address, str(timeout_s)],
            capture_output=True,
            text=True,
            timeout=timeout_s + 60,
        )
    except subprocess.TimeoutExpired:
        done = None
    if done is not None and done.returncode in (0, 3):
        return done.returncode == 0
    last = (done.stderr.strip().splitlines() or [""])[-1][:200] if done else ""
    why = f"no actor started within {timeout_s:.0f}s" if not last else last
    raise ConnectionError(f"{why}; see `ray status`")


def use_auth_token() -> bool:
    """`ray start --head` turns on token authentication when this machine has a token
    (~/.ray/auth_token, which any local ray.init writes), but a driver given an explicit
    address never sends it unless RAY_AUTH_MODE=token: it is then refused as
    "Authentication token is missing". Send it when there is one: the rule `ray start
    --head` follows, so a head started on this machine and its drivers agree. A cluster
    without authentication then needs RAY_AUTH_MODE=disabled here: with a mismatch the
    driver connects but no trial's actor ever starts (join() probes for that). An explicit
    RAY_AUTH_MODE wins. True when this call chose token authentication.

    Private: ray._raylet.AuthenticationTokenLoader (no public way to ask whether a token
    exists). Upgrade: if the import fails, this returns False (a Ray without tokens) and
    clusters with token auth refuse the driver:
    test_cluster.py::test_a_head_started_by_hand_runs_the_search_by_its_address."""
    if "RAY_AUTH_MODE" in os.environ:
        return False
    try:
        # lazy: Ray takes seconds to load, and after start_ray's settings
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:  # a Ray before token authentication
        return False
    if AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        _set_auth_mode("token")
        return True  # chosen here, not by the user: join() may take it back
    return False


def _set_auth_mode(mode: str) -> None:
    """Private: ray._raylet.Config / AuthenticationTokenLoader. Ray reads RAY_AUTH_MODE once
    per process; this is the refresh Ray itself does (there is no public one). Upgrade:
    test_cluster.py::test_a_cluster_made_by_rays_own_cluster_utils_runs_a_search."""
    # lazy: Ray takes seconds to load, and after start_ray's settings
    from ray._raylet import AuthenticationTokenLoader, Config

    os.environ["RAY_AUTH_MODE"] = mode
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()  # else a second ray.init keeps the old


def parse_storage(uri: str, filesystem=None):
    """(pyarrow filesystem, path) of a storage root, exactly as Ray Tune will parse it (with
    `filesystem`, the one the search hands Ray).
    Private: ray.train._internal.storage.get_fs_and_path (Tune parses storage_path with it;
    calling it first turns a bad URI into our one-line error, not a traceback from inside
    Ray). Upgrade: test_failures.py::test_bad_input_is_one_line_exit_2_and_writes_nothing
    (its storage_bad_uri case)."""
    # lazy: Ray takes seconds to load, and after start_ray's settings
    from ray.train._internal.storage import get_fs_and_path

    return get_fs_and_path(uri, filesystem)


def trial_storage():
    """(pyarrow filesystem, this trial's folder in the experiment's storage), inside a
    trial. Private: ray.train._internal.session.get_session (no public API names the trial's
    storage). Upgrade: test_kills.py::test_kills_at_many_moments_lose_nothing_and_retrain_nothing
    (it finds the checkpoints Ray had not registered when a kill came)."""
    # lazy: Ray takes seconds to load, and after start_ray's settings
    from ray.train._internal.session import get_session

    storage = get_session().storage
    return storage.storage_filesystem, storage.trial_fs_path


def damaged_state(experiment: str, journaled: int) -> str | None:
    """The first of Ray's newest saved-state files that Ray could not read back (empty or cut
    short: written by a Ray that copied it non-atomically when a kill came), or whose run
    knows no trial although the journal has `journaled`; else None. Ray itself logs "Failed
    to restore the run state", goes on with no trial, and saves that empty state as the
    newest, so every later resume would end at once with nothing done.
    Private: the names of Ray's state files (TuneController, SearchGenerator and Searcher's
    CKPT_FILE_TMPL) and that Ray picks the greatest name of each. Upgrade:
    test_kills.py::test_a_damaged_ray_state_is_refused_in_one_line."""

    import pyarrow.fs  # lazy: Ray (pyarrow with it) takes seconds, after start_ray
    import ray.cloudpickle as cloudpickle
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.search.search_generator import SearchGenerator
    from ray.tune.search.searcher import Searcher

    filesystem, path = parse_storage(experiment)
    try:
        listed = filesystem.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    except OSError:  # an unreachable store: Ray's restore says so in its own words
        return None
    names = [info.base_name for info in listed]

    def run_state(data: bytes) -> None:
        if not json.loads(data)["trial_data"] and journaled:
            raise ValueError("no trial")

    readers = (
        (TuneController.CKPT_FILE_TMPL, run_state),
        (SearchGenerator.CKPT_FILE_TMPL, cloudpickle.loads),
        (Searcher.CKPT_FILE_TMPL, cloudpickle.loads),
    )
    for template, read in readers:
        found = fnmatch.filter(names, template.format("*"))
        if not found:
            continue
        with filesystem.open_input_stream(f"{path}/{max(found)}") as handle:
            data = handle.read()
        try:
            read(data)
        except Exception as exc:  # noqa: BLE001 (any failure to decode is the damage itself)
            why = "empty" if not data else (str(exc).splitlines() or ["cut short"])[0][:80]
            return f"{path}/{max(found)} ({why})"
    return None


_STORAGE: list = []  # the storage root of the search this process resumes, and its filesystem


def repoint_new_trials(storage: str, filesystem=None) -> None:
    """Ray's restored searcher keeps the Experiment of the first run, whose storage names that
    run's folder, so the trials it creates after a resume of a moved search would write their
    checkpoints there (Ray re-points only the trials it restores). Point it at today's.
    Private: a patch of SearchGenerator.set_state reading its `_experiment`. Upgrade:
    test_kills.py::test_a_moved_search_resumes_in_its_new_place_and_leaves_the_old_alone."""
    # lazy: Ray takes seconds to load, and after start_ray's settings
    from ray.tune.search.search_generator import SearchGenerator

    _STORAGE[:] = [storage, filesystem]
    if not getattr(SearchGenerator.set_state, "repointed", False):
        SearchGenerator.set_state = _repointing(SearchGenerator.set_state)


def _repointing(set_state):
    def repointed(self, state):
        set_state(self, state)
        filesystem, fs_path = parse_storage(*_STORAGE)
        for context in (self._experiment.storage, self._experiment.spec.get("storage")):
            if context is not None:
                context.storage_filesystem, context.storage_fs_path = filesystem, fs_path

    repointed.repointed = True
    return repointed


def raylet_pid(node) -> int:
    """The pid of a `ray.cluster_utils.Cluster` node's raylet (what a test kills to lose a
    node). Private: ray._private.ray_constants. Upgrade:
    test_cluster.py::test_a_lost_node_costs_only_a_retry_from_the_checkpoint."""
    # lazy: Ray takes seconds to load, and after start_ray's settings
    from ray._private import ray_constants

    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
