"""Joining an existing Ray cluster: fail at once where nothing answers, and speak its
authentication. Read before ray.init; shared by the search, retrain_best and the loopback
cluster (which must decide on authentication exactly as the drivers do)."""

from __future__ import annotations

import os
import socket


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
    ("The actor never ran"), so every trial would fail. One probe actor tells, within a
    second; on that answer the driver joins again without authentication."""
    import ray

    check_reachable(address)
    chose = use_auth_token()
    ray.init(address=address, **init)
    if not chose or _actor_runs():
        return
    ray.shutdown()
    _set_auth_mode("disabled")
    ray.init(address=address, **init)
    if not _actor_runs():
        ray.shutdown()
        raise ConnectionError(
            f"the cluster at {address} starts no actor with or without token "
            "authentication; check its RAY_AUTH_MODE and `ray status`"
        )


def _actor_runs(timeout_s: float = 120.0) -> bool:
    """True when a probe actor (no CPU asked: busy nodes still place it) answers."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    @ray.remote(num_cpus=0)
    class Probe:
        def ping(self) -> bool:
            return True

    try:
        return ray.get(Probe.remote().ping.remote(), timeout=timeout_s)
    except RayActorError:
        return False
    except GetTimeoutError:
        raise ConnectionError(
            f"no actor started within {timeout_s:.0f}s; see `ray status`"
        ) from None


def use_auth_token() -> bool:
    """`ray start --head` turns on token authentication when this machine has a token
    (~/.ray/auth_token, which any local ray.init writes), but a driver given an explicit
    address never sends it unless RAY_AUTH_MODE=token: it is then refused as
    "Authentication token is missing". Send it when there is one: the rule `ray start
    --head` follows, so a head started on this machine and its drivers agree. A cluster
    without authentication then needs RAY_AUTH_MODE=disabled here: with a mismatch the
    driver connects but no trial's actor ever starts (join() probes for that). An explicit
    RAY_AUTH_MODE wins. True when this call chose token authentication."""
    if "RAY_AUTH_MODE" in os.environ:
        return False
    try:
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:  # a Ray before token authentication
        return False
    if AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        _set_auth_mode("token")
        return True  # chosen here, not by the user: join() may take it back
    return False


def _set_auth_mode(mode: str) -> None:
    from ray._raylet import AuthenticationTokenLoader, Config

    os.environ["RAY_AUTH_MODE"] = mode
    Config.initialize("")  # Ray reads its mode once; the same refresh Ray itself does
    AuthenticationTokenLoader.instance().reset_cache()  # else a second ray.init keeps the old
