"""The cluster path's cost, measured side by side in one run: the same smoke search on one
local Ray node, on a two-node loopback cluster of the same logical CPUs in all, and on one
node with `--storage s3://...` on a local S3 server (moto, from the dev extras).

    python tests/bench_cluster.py --data-dir ../shared/mnist      # ~3 min on 2 cores
    python tests/bench_cluster.py --smoke                     # 2 trials each

It lives beside the tests because it uses their helpers (the loopback cluster, the S3 server).

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
sys.path.insert(0, str(ROOT / "tests"))  # python tests/bench_cluster.py: its helpers beside it


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="tests/bench_cluster.py", description=__doc__)
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "smoke.yaml"))
    parser.add_argument("--samples", type=int, help="trials per search (default: the space's)")
    parser.add_argument("--data-dir", help="folder with the MNIST IDX files ($TUNE_MNIST_DATA)")
    parser.add_argument("--smoke", action="store_true", help="2 trials per search")
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.samples = 2
    return args


def search(env: dict, results: Path, name: str, args, *extra: str) -> dict:
    """One search; its wall time (process start to exit) and trials per Ray node."""
    from searchutil import search_command

    command = search_command()  # search.py --gpus 0, no race after it
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
    from s3util import s3_server

    cpus = os.cpu_count() or 2
    rows = []
    # Ray's socket paths live under RAY_TMPDIR and must stay short: /tmp, not a deep folder
    with tempfile.TemporaryDirectory(prefix="tm-b-", dir="/tmp") as tmp:
        results = Path(tmp) / "results"
        env = {**os.environ, "RAY_TMPDIR": str(Path(tmp) / "r")}
        # (name, reference): a search joining a running cluster skips Ray's start-up, so the
        # two-node figure is compared with a one-node cluster, and S3 with a local folder
        rows.append(search(env, results, "local", args) | {"vs": None})
        with s3_server("bench", Path(tmp) / "moto.log") as s3:
            storage = ("--storage", "s3://bench/runs")
            rows.append(search({**env, **s3}, results, "local-s3", args, *storage) | {"vs": 0})
        half = str(max(1, cpus // 2))
        for nodes, cpus_each, vs in (("1", str(cpus), None), ("2", half, 2)):
            with loopback_cluster("--nodes", nodes, "--cpus", cpus_each) as (_, cluster_env):
                name = f"cluster-{nodes}-node"
                rows.append(search(cluster_env, results, name, args) | {"vs": vs})
    print(f"smoke search ({args.space}), {cpus} cores, {cpus} logical CPUs in every setup:")
    for row in rows:
        ref = rows[row["vs"]] if row["vs"] is not None else None
        ratio = f"{row['wall_s'] / ref['wall_s']:.2f}x {ref['name']}" if ref else "reference"
        print(
            f"  {row['name']:15s} wall {row['wall_s']:6.1f}s  ({ratio})  "
            f"trials per node {row['per_node']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
