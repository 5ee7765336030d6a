"""A Ray cluster of several nodes on this one machine, listening on loopback only.

It lets a user try the cluster path (`scripts/search.py --address ...`, a lost node) without
other machines, and the tests run it. Each node is a real Ray node (its own raylet, object
store and workers) started with Ray's `ray.cluster_utils.Cluster`: `ray start --address` cannot
join a head on 127.0.0.1, as Ray rewrites that address to the machine's outward IP.

    python -m tune_mnist.loopback --nodes 2 --cpus 2 --gpus 0 --info cluster.json

prints `RAY_ADDRESS=127.0.0.1:<port>`, writes the address and every node's id and raylet pid
to --info, and runs until Ctrl-C or SIGTERM, which stop every node it started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tune_mnist.join import use_auth_token

# Ray then gives every node, and every server in it, the address 127.0.0.1 (read when ray is
# first imported, so before that; the nodes' processes inherit it)
# Its workers run at normal priority, not Ray's nice 15, which starves them on a busy machine.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_worker_niceness": "0"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tune_mnist.loopback",
        description="A multi-node Ray cluster on this machine, on 127.0.0.1 only.",
    )
    parser.add_argument("--nodes", type=int, default=2, help="Ray nodes, the head included")
    parser.add_argument("--cpus", type=float, default=2, help="logical CPUs of each node")
    parser.add_argument("--head-cpus", type=float, help="logical CPUs of the head (default --cpus)")
    parser.add_argument("--gpus", type=float, default=0, help="logical GPUs of each node")
    parser.add_argument("--info", type=Path, help="write the address and nodes here (JSON)")
    parser.add_argument("--smoke-test", action="store_true", help="start, report, stop")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.cpus < 0 or args.gpus < 0:
        parser.error("--nodes must be >= 1, --cpus and --gpus >= 0")
    return args


def start(nodes: int, cpus: float, gpus: float, head_cpus: float | None = None):
    """The cluster and its nodes, head first. Ray's files go to a temp folder of its own
    ($RAY_TMPDIR if set): Ray records the last cluster started on a machine there, and a
    plain `ray.init()` elsewhere on the machine would join this one."""
    os.environ.update(LOOPBACK_ENV)
    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="ray-loopback-"))
    # as `ray start --head` does: token authentication when this machine has a token, the
    # same rule by which the scripts decide to send it (a mismatch leaves actors unstarted)
    use_auth_token()
    from ray.cluster_utils import Cluster

    common = {"num_gpus": gpus, "object_store_memory": 200 * 1024**2}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": cpus if head_cpus is None else head_cpus,
            "include_dashboard": False,
            **common,
        },
    )
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=cpus, **common)
    cluster.wait_for_nodes()
    return cluster


def describe(cluster) -> dict:
    from ray._private import ray_constants

    def raylet_pid(node) -> int:
        return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid

    members = [cluster.head_node, *cluster.worker_nodes]
    return {
        "address": cluster.address,
        "pid": os.getpid(),
        "ray_tmpdir": os.environ["RAY_TMPDIR"],
        "nodes": [
            {
                "node_id": node.node_id,
                "head": node is cluster.head_node,
                "raylet_pid": raylet_pid(node),
            }
            for node in members
        ],
    }


S3_ENV = {  # what a client of the local S3 server needs: pyarrow (Ray's storage) and boto3 read it
    "AWS_ACCESS_KEY_ID": "loopback",
    "AWS_SECRET_ACCESS_KEY": "loopback",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    """A loopback port free a moment ago: bind to 0, read it, release it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def s3_server(bucket: str, log: Path):
    """An S3-compatible server (moto, from the dev extras) on 127.0.0.1 with one bucket;
    yields the environment a client needs (AWS_ENDPOINT_URL and keys). Stopped on exit."""
    port = free_port()
    env = {**S3_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _create_bucket(bucket, env, server, log)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


def _create_bucket(bucket: str, env: dict, server, log: Path, timeout_s: float = 120) -> None:
    import boto3
    import botocore.exceptions

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], **_keys(env))
    deadline = time.monotonic() + timeout_s
    while True:  # until the server answers
        try:
            client.create_bucket(Bucket=bucket)
            return
        except botocore.exceptions.EndpointConnectionError:
            if server.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text()[-500:]
                raise RuntimeError(f"the S3 server did not start: {tail}") from None
            time.sleep(0.2)


def _keys(env: dict) -> dict:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


def s3_keys(env: dict, bucket: str, prefix: str = "") -> list[str]:
    """Every object name under prefix in the bucket."""
    import boto3

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], **_keys(env))
    names = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        names += [item["Key"] for item in page.get("Contents", [])]
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    made_tmpdir = "RAY_TMPDIR" not in os.environ
    cluster = start(args.nodes, args.cpus, args.gpus, args.head_cpus)
    try:
        info = describe(cluster)
        if args.info:  # written whole, then renamed: a reader never sees half of it
            partial = args.info.with_suffix(".partial")
            partial.write_text(json.dumps(info, indent=1))
            partial.replace(args.info)
        print(f"RAY_ADDRESS={info['address']}  ({args.nodes} nodes; Ctrl-C stops them)")
        sys.stdout.flush()
        if not args.smoke_test:
            stop.wait()
    finally:
        cluster.shutdown()
        if made_tmpdir:
            shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
