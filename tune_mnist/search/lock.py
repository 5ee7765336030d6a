"""One live search per name: an exclusive lock, held for as long as the search runs.

The lock is an `flock` on `results/.locks/<name>.lock`, taken after every input check and
before anything else is written. The kernel drops it when its process ends, however it ends
(a SIGKILL included), so a dead search never leaves its name locked.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import IO

from tune_mnist.search.plan import UsageError


def check_free(root: Path, name: str) -> None:
    """Refuse at once, naming the holder, if a live search holds `name`; writes nothing."""
    path = root / ".locks" / f"{name}.lock"
    if not path.is_file():
        return
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _taken(name, _holder(handle)) from None
        fcntl.flock(handle, fcntl.LOCK_UN)


def _holder(handle: IO[str], wait_s: float = 2.0) -> str:
    """The holder's line. It is written just after the lock is taken, so a search refused in
    that instant reads an empty file: read again for a moment before giving up."""
    deadline = time.monotonic() + wait_s
    while True:
        handle.seek(0)
        text = handle.read()
        if text.strip() or time.monotonic() > deadline:
            return text
        time.sleep(0.02)


def _taken(name: str, holder: str) -> UsageError:
    return UsageError(
        f"search {name!r} is already running ({holder.strip() or 'another process'}): wait "
        "for it to end, or pick another --name"
    )


def hold(root: Path, name: str) -> IO[str]:
    """Lock `name` for this process; keep the returned handle open for the whole search.
    A second holder is refused with a UsageError that names the first."""
    folder = root / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / f"{name}.lock", "a+")  # open for the whole search: the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(handle)
        handle.close()
        raise _taken(name, holder) from None
    handle.seek(0)
    handle.truncate()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}\n")
    handle.flush()
    return handle
