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


def use_auth_token() -> None:
    """`ray start --head` turns on token authentication when this machine has a token
    (~/.ray/auth_token, which any local ray.init writes), but a driver given an explicit
    address never sends it unless RAY_AUTH_MODE=token: it is then refused as
    "Authentication token is missing". Send it when there is one: the rule `ray start
    --head` follows, so a head started on this machine and its drivers agree. A cluster
    without authentication then needs RAY_AUTH_MODE=disabled here: with a mismatch the
    driver connects but no trial's actor ever starts. An explicit RAY_AUTH_MODE wins."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray before token authentication
        return
    if AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        os.environ["RAY_AUTH_MODE"] = "token"
        Config.initialize("")  # Ray reads its mode once; the same refresh Ray itself does
