"""Failure injection for the tests, out of the product: with this folder on PYTHONPATH (see
searchutil.env), every Python process of a search, the driver and each Ray worker, imports this
at start-up. With TUNE_MNIST_FAIL_AT_EPOCH=N it makes the trainable raise at epoch N of every
trial; "N:once" only in a run that started from scratch, so a retry from the checkpoint goes
through. Nothing is changed when the variable is unset."""

import importlib.abc
import importlib.util
import os
import sys

FAIL_ENV = "TUNE_MNIST_FAIL_AT_EPOCH"
TARGET = "tune_mnist.search.trainable"


def failing(report_epoch, fail_at: int, once: bool):
    def report(metrics, state, where, start_epoch, history):
        if metrics["epoch"] == fail_at and not (once and start_epoch > 0):
            raise RuntimeError(f"injected failure at epoch {metrics['epoch']} ({FAIL_ENV})")
        return report_epoch(metrics, state, where, start_epoch, history)

    return report


class Patcher(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Loads the trainable module as usual, then wraps its report_epoch."""

    def __init__(self, fail_at: int, once: bool):
        self.fail_at, self.once, self.spec = fail_at, once, None

    def find_spec(self, name, path=None, target=None):
        if name != TARGET or self.spec is not None:
            return None
        sys.meta_path.remove(self)
        try:
            self.spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        self.loader = self.spec.loader
        self.spec.loader = self
        return self.spec

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        module.report_epoch = failing(module.report_epoch, self.fail_at, self.once)


_fail_at, _, _once = os.environ.get(FAIL_ENV, "").partition(":")
if _fail_at:
    sys.meta_path.insert(0, Patcher(int(_fail_at), bool(_once)))
