"""The cluster path's cost, measured side by side in one run: the same smoke search on one
local Ray node, on a two-node loopback cluster of the same logical CPUs in all, and on one
node with `--storage s3://...` on a local S3 server (moto, from the dev extras).

    python scripts/bench_cluster.py --data-dir ../shared/mnist      # ~3 min on 2 cores
    python scripts/bench_cluster.py --smoke-test                     # 2 trials each

All three share this machine's cores: the two-node figure is Ray's multi-node overhead, not a
speed-up (that needs a second machine). Prints wall times, trials per node and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the loopback cluster helper the tests use


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="scripts/bench_cluster.py", description=__doc__)
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "smoke.yaml"))
    parser.add_argument("--samples", type=int, help="trials per search (default: the space's)")
    parser.add_argument("--data-dir", help="folder with the MNIST IDX files ($TUNE_MNIST_DATA)")
    parser.add_argument("--smoke-test", action="store_true", help="2 trials per search")
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.samples = 2
    return args


def search(env: dict, results: Path, name: str, args, *extra: str) -> dict:
    """One search; its wall time (process start to exit) and trials per Ray node."""
    command = [sys.executable, str(ROOT / "scripts" / "search.py"), "--gpus", "0"]
    command += ["--space", args.space, "--name", name, "--no-report", *extra]
    if args.samples:
        command += ["--samples", str(args.samples)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    started = time.perf_counter()
    done = subprocess.run(
        command, env={**env, "TUNE_MNIST_RESULTS": str(results)}, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"error: search {name} failed: {done.stderr.strip()[-500:]}")
    summary = json.loads((results / name / "summary.json").read_text())
    return {"name": name, "wall_s": wall, "per_node": sorted(summary["trials_per_node"].values())}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from clusterutil import loopback_cluster

    from tune_mnist.loopback import s3_server

    cpus = os.cpu_count() or 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        results = Path(tmp) / "results"
        env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="tm-b-", dir="/tmp")}
        rows.append(search(env, results, "one-node", args))
        half = str(max(1, cpus // 2))
        with loopback_cluster("--nodes", "2", "--cpus", half) as (_, cluster_env):
            rows.append(search(cluster_env, results, "two-nodes", args))
        with s3_server("bench", Path(tmp) / "moto.log") as s3:
            storage = ("--storage", "s3://bench/runs")
            rows.append(search({**env, **s3}, results, "one-node-s3", args, *storage))
    base = rows[0]["wall_s"]
    print(f"smoke search ({args.space}), {cpus} cores, logical CPUs {cpus} in all:")
    for row in rows:
        print(
            f"  {row['name']:12s} wall {row['wall_s']:6.1f}s  ({row['wall_s'] / base:.2f}x "
            f"one node)  trials per node {row['per_node']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
