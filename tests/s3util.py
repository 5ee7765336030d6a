"""A local S3-compatible server for the tests (moto, from the dev extras): the storage tests
and tests/bench_cluster.py write a search's experiment to it as to a bucket."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

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
