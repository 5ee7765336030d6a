"""A Ray cluster of several nodes on this one machine, listening on loopback only.

It lets a user try the cluster path (`scripts/search.py --address ...`, a lost node) without
other machines, and the tests run it. Each node is a real Ray node (its own raylet, object
store and workers) started with Ray's `ray.cluster_utils.Cluster`: `ray start --address` cannot
join a head on 127.0.0.1, as Ray rewrites that address to the machine's outward IP.

    python -m tune_mnist.search.loopback --nodes 2 --cpus 2 --gpus 0 --info cluster.json

prints `RAY_ADDRESS=127.0.0.1:<port>`, writes the address and every node's id and raylet pid
to --info, and runs until Ctrl-C or SIGTERM, which stop every node it started.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from tune_mnist.parser import Parser
from tune_mnist.search.ray_door import LOOPBACK_ENV, raylet_pid, use_auth_token

# Ray then gives every node, and every server in it, the address 127.0.0.1 (read when ray is
# first imported, so before that; the nodes' processes inherit it)
# Its workers run at normal priority, not Ray's nice 15, which starves them on a busy machine.


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(
        prog="python -m tune_mnist.search.loopback",
        description="A multi-node Ray cluster on this machine, on 127.0.0.1 only.",
    )
    parser.add_argument("--nodes", type=int, default=2, help="Ray nodes, the head included")
    parser.add_argument("--cpus", type=float, default=2, help="logical CPUs of each node")
    parser.add_argument("--head-cpus", type=float, help="logical CPUs of the head (default --cpus)")
    parser.add_argument("--gpus", type=float, default=0, help="logical GPUs of each node")
    parser.add_argument("--info", type=Path, help="write the address and nodes here (JSON)")
    parser.add_argument(
        "--smoke", dest="smoke_test", action="store_true", help="start, report, stop"
    )
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
    # lazy: Ray takes seconds to load, and after start_ray's settings
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
