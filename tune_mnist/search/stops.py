"""How a signal stops a command: the stop signal once one came (its exit status), SIGTERM
taking Ctrl-C's path, and signal handlers put back after a block that changes them.

Ray Tune's loop installs a SIGINT handler of its own and Ray's blocking waits drop a Ctrl-C
that lands inside them; `tune_mnist.search.ray_door` (fit, wait_one) uses these to keep the
signal heard in every stage of a chain.
"""

from __future__ import annotations

import contextlib
import signal
import threading

RECEIVED: dict[str, int] = {}  # the stop signal, once one came (for the exit status)


def catch_sigterm() -> None:
    """SIGTERM takes Ctrl-C's path: Ray Tune's own SIGINT handler (installed while its loop
    runs) stops the loop and saves its state, so running trials stay resumable. Installed
    after ray.init, which sets a SIGTERM handler of its own that would end the driver."""

    def on_signal(signum, frame):
        RECEIVED["signal"] = signum
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)


def stop_code() -> int:
    """128 + the stop signal once one came (143 for SIGTERM), else 0: a chain stops there
    even where the stage it came in happened to end."""
    return 128 + RECEIVED["signal"] if RECEIVED else 0


@contextlib.contextmanager
def handlers_kept(*signums: int):
    """The handlers of `signums` as the block found them, put back when it ends, however it
    ends; yields them by signal number."""
    kept = {s: signal.getsignal(s) for s in signums}
    try:
        yield kept
    finally:
        for signum, handler in kept.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def sigint_noted():
    """A SIGINT handler that notes the signal, hands it to the one it replaces (Python's
    raises KeyboardInterrupt; our SIGTERM path reads it), and raises KeyboardInterrupt where
    that one returned or was none. In the main thread only: elsewhere Python takes no
    handler, and the main thread hears it."""
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return
    with handlers_kept(signal.SIGINT) as kept:
        previous = kept[signal.SIGINT]

        def note(signum, frame):
            noted.append(signum)
            if callable(previous):
                previous(signum, frame)
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, note)
        yield noted
