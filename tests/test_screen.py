"""Optuna told each trial's first-rung figure on arrival (tune_mnist.search.screen): the
study holds that value, later reports and the trial's end change nothing, a trial that ends
before its first rung is told as Ray tells it, and the searcher's saved state keeps it."""

from __future__ import annotations

import logging

import optuna
import pytest
from ray.tune.search.optuna import OptunaSearch

from tune_mnist.search.screen import ScreenSearch


def searcher(cls=ScreenSearch, **screen):
    space = {"lr": optuna.distributions.FloatDistribution(0.01, 0.1)}
    kwargs = {"time_attr": "level", "first": 1.0} if cls is ScreenSearch else {}
    search = cls(space=space, metric="val_acc", mode="max", seed=0, **kwargs)
    return search


def report(search, trial_id, level, acc, step):
    search.on_trial_result(trial_id, {"level": level, "val_acc": acc, "training_iteration": step})


@pytest.mark.parametrize("cls", [ScreenSearch, OptunaSearch])
def test_the_study_learns_the_first_rung_figure_and_nothing_after(cls, caplog):
    search = searcher(cls)
    assert search.suggest("a") is not None
    report(search, "a", 0.0, 97.0, 1)
    report(search, "a", 1.0, 99.0, 2)  # the first rung's end
    study = search._ot_study
    first = study.trials[0]
    if cls is ScreenSearch:
        assert first.state == optuna.trial.TrialState.COMPLETE and first.value == 99.0
    else:  # Ray's: nothing told before the trial ends
        assert first.state == optuna.trial.TrialState.RUNNING
    with caplog.at_level(logging.WARNING):
        report(search, "a", 1.0, 95.0, 3)  # the full run, restarted
        search.on_trial_complete("a", {"level": 4.0, "val_acc": 99.4, "training_iteration": 4})
    value = study.trials[0].value
    assert value == (99.0 if cls is ScreenSearch else 99.4)
    assert not [r for r in caplog.records if "already finished" in r.getMessage()]


def test_a_trial_that_ends_before_its_first_rung_is_told_at_its_end(tmp_path):
    search = searcher()
    search.suggest("x")
    report(search, "x", 0.0, 10.0, 1)
    search.on_trial_complete("x", None, error=True)
    assert search._ot_study.trials[0].state == optuna.trial.TrialState.FAIL
    search.suggest("y")
    report(search, "y", 1.0, 98.0, 1)
    search.save(str(tmp_path / "searcher.pkl"))
    restored = searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("y", {"level": 4.0, "val_acc": 99.0, "training_iteration": 2})
    assert restored._ot_study.trials[1].value == 98.0  # the restored one remembers "y"
