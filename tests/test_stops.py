"""tune_mnist.search.stops: handlers put back however a block ends, and a Ctrl-C noted."""

import os
import signal

import pytest

from tune_mnist.search import stops


def test_handlers_are_put_back_when_the_block_raises():
    def mine(signum, frame):
        pass

    before = signal.getsignal(signal.SIGUSR2)
    with pytest.raises(RuntimeError):
        with stops.handlers_kept(signal.SIGUSR2) as kept:
            assert kept == {signal.SIGUSR2: before}
            signal.signal(signal.SIGUSR2, mine)
            raise RuntimeError("the block failed")
    assert signal.getsignal(signal.SIGUSR2) is before


def test_a_ctrl_c_is_noted_handed_on_and_raised_and_the_handler_put_back():
    handed: list[int] = []

    def previous(signum, frame):  # returns: the noting handler raises all the same
        handed.append(signum)

    with stops.handlers_kept(signal.SIGINT):
        signal.signal(signal.SIGINT, previous)
        with pytest.raises(KeyboardInterrupt):
            with stops.sigint_noted() as noted:
                os.kill(os.getpid(), signal.SIGINT)
                pytest.fail("the noting handler did not raise")
        assert noted == [signal.SIGINT] and handed == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is previous


def test_stop_code_is_128_plus_the_signal_once_one_came(monkeypatch):
    monkeypatch.setattr(stops, "RECEIVED", {})
    assert stops.stop_code() == 0
    stops.RECEIVED["signal"] = signal.SIGTERM
    assert stops.stop_code() == 143
