"""Pareto mode (settings.pareto): Optuna optimises validation accuracy and parameter count
together, ASHA still stops on accuracy, and the tables, summary and report show the front."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest
from searchutil import run_search, space_file

from tune_mnist.results import on_front
from tune_mnist.search.space import SpaceError
from tune_mnist.search.space_file import load_space
from tune_mnist.search.tuner import make_search


def test_the_front_holds_the_completed_trials_nothing_beats():
    trials = pd.DataFrame(
        {
            "trial_id": list("abcdefg"),
            "status": ["completed"] * 5 + ["asha_stopped", "completed"],
            "params": [1000, 2000, 2000, 3000, 1500, 500, 1000],
            "final_val_acc": [98.0, 99.0, 98.5, 99.0, 97.9, 99.9, 98.0],
        }
    )
    # b beats c (same size, more accurate) and d (smaller, as accurate); e is beaten by a;
    # f stopped early: never on the front; a and g tie: neither beats the other
    assert list(trials.loc[on_front(trials), "trial_id"]) == ["a", "b", "g"]


def _space(tmp_path, pareto: str, asha: str = "val_acc_avg3"):
    path = space_file(tmp_path, images=2000)  # a front needs no more
    text = path.read_text().replace("asha_metric: val_acc_avg3", f"asha_metric: {asha}")
    path.write_text(text.replace("val_size: 1000}", f"val_size: 1000, pareto: {pareto}}}"))
    return path


def test_pareto_mode_asks_optuna_for_two_objectives_and_asha_for_one(tmp_path):
    space = load_space(_space(tmp_path, "true", "val_acc"))
    searcher, scheduler = make_search(space, seed=0, concurrency=1)
    maximize, minimize = optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE
    assert searcher.searcher._ot_study.directions == [maximize, minimize]
    assert (scheduler.metric, scheduler._mode) == ("val_acc", "max")
    space = load_space(_space(tmp_path, "false", "val_acc"))
    searcher, scheduler = make_search(space, seed=0, concurrency=1)
    assert searcher.searcher._ot_study.directions == [maximize]
    assert scheduler.metric is None  # one metric: Tune's config names it for both


@pytest.mark.parametrize("value", ["maybe", "1", "null"])  # (YAML reads yes as true)
def test_pareto_must_be_true_or_false(tmp_path, value):
    with pytest.raises(SpaceError, match="settings.pareto"):
        load_space(_space(tmp_path, value))


@pytest.mark.slow
def test_a_pareto_search_writes_and_prints_its_front(tmp_path):
    space = _space(tmp_path, "true")
    done = run_search(tmp_path / "results", "--space", str(space), "--name", "p", "--no-report")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "results" / "p" / "trials.parquet")
    assert trials["on_front"].equals(on_front(trials))
    front = trials[trials["on_front"]]
    assert len(front) >= 1 and set(front["status"]) == {"completed"}
    assert "asha_stopped" in set(trials["status"])  # ASHA still stops on accuracy
    assert f"Pareto front (completed trials, validation accuracy vs parameters): {len(front)}" in (
        done.stdout
    )
