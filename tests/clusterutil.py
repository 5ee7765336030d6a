"""A loopback Ray cluster for the tests (tune_mnist.search.loopback in its own session), the
processes it started, and the addresses they listen on. Every process is stopped at the end,
even when the test fails: SIGTERM first (Ray's own shutdown), then SIGKILL to the session."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from searchutil import ROOT

START_TIMEOUT_S = 300  # a loaded 2-core machine starts a node in ~10 s, rarely more


def wait_for(predicate, timeout_s: float, what: str, alive=None):
    """Polls `predicate` until it returns something true; fails after `timeout_s`, or at
    once when `alive()` says the process it waits on is gone."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = predicate()
        if found:
            return found
        if alive is not None and not alive():
            raise AssertionError(f"gone while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.2)


@contextlib.contextmanager
def loopback_cluster(*args: str):
    """Yields (info, env): the cluster's address and nodes, and the environment a driver
    needs to join it (RAY_ADDRESS, loopback addresses, the cluster's own RAY_TMPDIR)."""
    # short: Ray's socket paths live under it and must stay under 107 characters
    tmp = tempfile.mkdtemp(prefix="tm-ray-", dir="/tmp")
    info_path = Path(tmp) / "cluster.json"
    env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tune_mnist.search.loopback", "--info", str(info_path), *args],
        env=env,
        cwd=ROOT,
        start_new_session=True,  # every node's processes in one session: found, and stopped
        stdout=subprocess.DEVNULL,
        stderr=open(Path(tmp) / "loopback.log", "w"),  # noqa: SIM115 - closed with the process
    )
    try:
        wait_for(info_path.is_file, START_TIMEOUT_S, "the cluster", lambda: proc.poll() is None)
        info = json.loads(info_path.read_text())
        yield info, {**env, "RAY_ADDRESS": info["address"]}
    finally:
        stop_session(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def stop_session(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
    for pid in session_pids(proc.pid):  # whatever Ray's shutdown left
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


def _stats() -> dict[int, list[str]]:
    """pid -> the fields of /proc/<pid>/stat after the command name (which may hold spaces):
    [state, ppid, pgrp, session, ...]."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                found[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
    return found


def session_pids(sid: int) -> list[int]:
    """Processes of session `sid`."""
    return [pid for pid, fields in _stats().items() if int(fields[3]) == sid]


def kill_node(raylet_pid: int) -> list[int]:
    """A node dies as a machine would: its raylet and every process under it (the trials'
    workers, its agents) SIGKILLed at once. Returns their pids."""
    stats = _stats()
    tree, grew = {raylet_pid}, True
    while grew:
        more = {pid for pid, fields in stats.items() if int(fields[1]) in tree} - tree
        tree |= more
        grew = bool(more)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return sorted(tree)


def listening_addresses(pids: list[int]) -> set[str]:
    """The local addresses the given processes listen on (TCP, IPv4 and IPv6)."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    found.add(_address(cols[1].rsplit(":", 1)[0]))
    return found


def _address(hex_ip: str) -> str:
    """/proc/net/tcp's little-endian hex address as text (v4, or v6 with v4 mapped)."""
    raw = bytes.fromhex(hex_ip)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return ".".join(str(b) for b in words)
    if words[:12] == b"\0" * 10 + b"\xff\xff":
        return ".".join(str(b) for b in words[12:])
    return words.hex()
