"""The cluster path, on real Ray nodes on loopback (tune_mnist.search.loopback): trials spread over
two nodes, `--gpus 2 --trials-per-gpu 2` on one logical GPU per node runs 4 trials at once, two
on each node, too many GPUs is refused, retrain_best.py --address trains its seeds there, and
a node killed mid-search (its raylet) costs only a retry from the last checkpoint on the node
that is left."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from clusterutil import (
    kill_node,
    listening_addresses,
    loopback_cluster,
    session_pids,
    stop_session,
    wait_for,
)
from s3util import free_port
from searchutil import ROOT, space_file

from tune_mnist.search.loopback import LOOPBACK_ENV

pytestmark = pytest.mark.slow

ENDED = {"completed", "asha_stopped", "over_budget", "diverged", "error"}
LOOPBACK = {"127.0.0.1", "0" * 31 + "1"}  # v4 and v6 (::1)


def small_space(folder: Path, **kw) -> Path:
    return space_file(folder, images=2000, **kw)


def run(script: str, results: Path, env: dict, *args: str, timeout=900):
    """`python scripts/<script> args`; a search without the race after it (its own test
    is tests/test_chain.py)."""
    if script == "search.py":
        args = ("--race-runs", "0", *args)
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        env={**env, "TUNE_MNIST_RESULTS": str(results), "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def cluster():
    """Two nodes of 2 logical CPUs and 1 logical GPU each (no CUDA behind them): room for
    exactly two half-GPU trials on each node."""
    with loopback_cluster("--nodes", "2", "--cpus", "2", "--gpus", "1") as made:
        yield made


@pytest.fixture(scope="module")
def gpu_search(cluster, tmp_path_factory):
    _, env = cluster
    folder = tmp_path_factory.mktemp("cluster")
    # long enough (6 epochs, none over budget) that all 4 are running at one moment: their
    # workers start together and import torch side by side on 2 cores
    space = small_space(folder, epochs=6, grace=6, samples=4, max_params=8000)  # none skipped
    args = ("--gpus", "2", "--trials-per-gpu", "2", "--space", str(space), "--name", "g")
    done = run("search.py", folder / "results", env, *args, "--no-report")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder / "results" / "g"


def test_logical_gpus_pack_two_trials_each_over_two_nodes(cluster, gpu_search):
    info, _ = cluster
    trials = pd.read_parquet(gpu_search / "trials.parquet")
    summary = json.loads((gpu_search / "summary.json").read_text())
    assert len(trials) == 4 and set(trials["status"]) <= ENDED
    assert summary["per_trial"] == {"cpu": 1, "gpu": 0.5}
    assert summary["peak_running"] == 4  # 2 GPUs x 2 trials, all held at one moment
    assert (trials["gpu_share"] == 0.5).all()
    assert set(trials["device"]) == {"cpu"}  # no CUDA here: the trials fell back to CPU
    nodes = {node["node_id"] for node in info["nodes"]}
    assert set(trials["node_id"]) <= nodes
    assert (trials["node_id"].value_counts() == 2).all(), trials["node_id"].value_counts()
    epochs = pd.read_parquet(gpu_search / "epochs.parquet")
    assert set(epochs["node_id"]) <= nodes


def test_cluster_listens_on_loopback_only(cluster):
    info, _ = cluster
    found = listening_addresses(session_pids(info["pid"]))
    assert found, "no listening socket found: the check would prove nothing"
    assert found <= LOOPBACK, found


def test_more_gpus_than_the_cluster_has_is_one_line(cluster, tmp_path):
    _, env = cluster
    space = small_space(tmp_path, samples=1)
    done = run("search.py", tmp_path / "r", env, "--gpus", "4", "--space", str(space))
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --gpus 4: only 2 GPU(s)"), lines
    assert not list((tmp_path / "r").glob("*/trials.parquet"))


def test_retrain_runs_its_seeds_on_the_cluster(cluster, gpu_search):
    info, env = cluster
    args = ("--results", str(gpu_search), "--seeds", "2", "--epochs", "1")
    args += ("--train-subset", "2000", "--test-subset", "500")  # the search's sizes
    done = run("retrain_best.py", gpu_search.parent, env, *args, "--address", info["address"])
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
    rows = pd.read_parquet(gpu_search / "confirmations.parquet")
    assert len(rows) == 2
    assert set(rows["node_id"]) <= {node["node_id"] for node in info["nodes"]}


def test_the_race_runs_its_seeds_on_the_cluster(cluster, gpu_search, tmp_path):
    info, env = cluster
    folder = tmp_path / "g"
    shutil.copytree(gpu_search, folder)
    # two finished contenders tied on validation: neither is dropped, both get a run
    trials = pd.read_parquet(folder / "trials.parquet")
    trained = trials["status"].isin(["completed", "asha_stopped"])
    best = trials[trained].sort_values("final_val_acc", ascending=False).index[:2]
    trials.loc[best, "status"] = "completed"
    trials.loc[best, "final_val_acc"] = trials.loc[best, "final_val_acc"].max()
    trials.to_parquet(folder / "trials.parquet")
    args = ("--results", str(folder), "--top", "2", "--runs", "2", "--address", info["address"])
    done = run("race.py", tmp_path, env, *args)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = pd.read_parquet(folder / "race_runs.parquet")
    assert len(runs) == 2 and set(runs["node_id"]) <= {n["node_id"] for n in info["nodes"]}


def _running_on(folder: Path, node: str) -> set[str]:
    """Trials that have not ended and whose newest journaled epoch ran on `node`."""
    found = set()
    for path in (folder / "journal").glob("*.jsonl") if folder.is_dir() else []:
        where, ended = None, False
        for line in path.read_text().splitlines():
            entry = json.loads(line) if line.strip() else {}
            ended = ended or entry.get("kind") == "end"
            if entry.get("kind") == "epoch" and entry["result"].get("epoch", 0) >= 1:
                where = entry["result"].get("node_id")
        if where == node and not ended:
            found.add(path.stem)
    return found


def test_a_lost_node_costs_only_a_retry_from_the_checkpoint(tmp_path):
    """The head has 1 CPU, the other node 2: trials start on both; the other node's raylet
    is killed once a trial there reported an epoch. Its trials finish on the head."""
    with loopback_cluster("--nodes", "2", "--cpus", "2", "--head-cpus", "1") as (info, env):
        head, other = (n["node_id"] for n in sorted(info["nodes"], key=lambda n: not n["head"]))
        space = small_space(tmp_path, epochs=4, grace=4, samples=3)  # all 3 at once
        folder = tmp_path / "results" / "lost"
        search = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "search.py"), "--gpus", "0"]
            + ["--space", str(space), "--name", "lost", "--no-report", "--race-runs", "0"],
            env={**env, "TUNE_MNIST_RESULTS": str(tmp_path / "results")},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            victims = wait_for(
                lambda: _running_on(folder, other),
                600,
                "a trial running on the second node",
                lambda: search.poll() is None,
            )
            raylet = next(n["raylet_pid"] for n in info["nodes"] if n["node_id"] == other)
            assert len(kill_node(raylet)) > 1  # the raylet and the trials' workers under it
            _, err = search.communicate(timeout=900)
        finally:
            if search.poll() is None:
                search.kill()
        assert search.returncode == 0, err[-3000:]
    trials = pd.read_parquet(folder / "trials.parquet")
    epochs = pd.read_parquet(folder / "epochs.parquet")
    assert len(trials) == 3 and set(trials["status"]) <= ENDED - {"error"}, trials["status"]
    assert set(trials.loc[trials["trial_id"].isin(victims), "status"]) == {"completed"}
    for trial in victims:
        rows = epochs[epochs["trial_id"] == trial]
        assert list(rows["epoch"]) == [1, 2, 3, 4]  # finished: none lost, none twice
        later = rows[(rows["node_id"] == head) & ~rows["replayed"]]  # retried on the head
        assert len(later) > 0, rows.to_dict("records")
        # from its checkpoint, even one Ray had not registered when the node died (a retry
        # also looks in storage)
        assert (later["start_epoch"] >= 1).all(), rows.to_dict("records")


def test_a_head_started_by_hand_runs_the_search_by_its_address(tmp_path):
    """The README's head command (`ray start --head --port ...`, here on loopback and with
    --block, so it stops with its process) and a search sent to it through RAY_ADDRESS."""
    tmp = tempfile.mkdtemp(prefix="tm-rs-", dir="/tmp")  # short: Ray's socket paths
    port = free_port()
    env = {**os.environ, "RAY_TMPDIR": tmp, **LOOPBACK_ENV}
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}"]
    command += ["--num-cpus=2", "--num-gpus=1", f"--temp-dir={tmp}", "--block"]
    command += ["--include-dashboard=false", "--disable-usage-stats"]
    head = subprocess.Popen(
        command,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: list(Path(tmp).rglob("ray_current_cluster")),
            300,
            "the head",
            lambda: head.poll() is None,
        )
        space = small_space(tmp_path, epochs=1, grace=1, samples=2, max_params=8000)
        args = ("--gpus", "1", "--trials-per-gpu", "2", "--space", str(space), "--name", "h")
        done = run("search.py", tmp_path / "r", {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}, *args)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        trials = pd.read_parquet(tmp_path / "r" / "h" / "trials.parquet")
        assert len(trials) == 2 and (trials["gpu_share"] == 0.5).all()
    finally:
        stop_session(head)
        shutil.rmtree(tmp, ignore_errors=True)


def test_an_address_where_nothing_answers_is_one_line_at_once(tmp_path):
    """Ray itself retries a wrong address for many minutes; we say so in one line."""
    port = free_port()  # free a moment ago: nothing listens there
    space = small_space(tmp_path, samples=1)
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    done = run("search.py", tmp_path / "r", env, "--space", str(space), timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot join the Ray cluster at"), lines
    assert not list((tmp_path / "r").glob("*/trials.parquet"))


CLUSTER_UTILS = """
import sys, time
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": GPUS})
cluster.add_node(num_cpus=1, num_gpus=GPUS)
cluster.wait_for_nodes()
open(sys.argv[1] + ".part", "w").write(cluster.address)
import os; os.rename(sys.argv[1] + ".part", sys.argv[1])
while True:
    time.sleep(1)
"""


def test_a_cluster_made_by_rays_own_cluster_utils_runs_a_search(tmp_path):
    """Users start clusters in many ways; one started without token authentication by Ray's
    `cluster_utils.Cluster` (head + 1 node, 1 CPU and 1 logical GPU each) must run the search,
    on its GPUs and on CPUs alone, although this machine holds a token: a driver that speaks
    token authentication to a cluster without it sees every trial fail ("The actor never
    ran")."""
    tmp = tempfile.mkdtemp(prefix="tm-cu-", dir="/tmp")  # short: Ray's socket paths
    address_file = Path(tmp) / "address"
    env = {**os.environ, "RAY_TMPDIR": tmp, **LOOPBACK_ENV}
    env.pop("RAY_AUTH_MODE", None)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", CLUSTER_UTILS.replace("GPUS", "1"), str(address_file)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(address_file.is_file, 300, "the cluster", lambda: proc.poll() is None)
        driver = {**env, "RAY_AUTH_TOKEN": "0123456789abcdef" * 4}  # a token on this machine
        address = address_file.read_text()
        space = small_space(tmp_path, epochs=1, samples=2, max_params=8000)
        smoke = ("--space", str(space), "--no-report")  # two trials' actors tell
        for gpus, share in (("1", 0.25), ("0", 0.0)):  # 4 trials per GPU by default
            results = tmp_path / f"gpus-{gpus}"
            done = run("search.py", results, driver, *smoke, "--address", address, "--gpus", gpus)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
            trials = pd.read_parquet(next(results.glob("*/trials.parquet")))
            assert len(trials) == 2 and (trials["epochs_run"] > 0).all(), trials["status"].tolist()
            assert (trials["gpu_share"] == share).all(), trials["gpu_share"].tolist()
    finally:
        stop_session(proc)
        shutil.rmtree(tmp, ignore_errors=True)
