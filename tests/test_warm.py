"""`scripts/search.py --warm-start results/<name>`: the new search's Optuna study is told the
earlier search's trials first, with the figures that search's sampler was told."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pandas as pd
import pytest
from searchutil import ROOT, run_search, space_file

from tune_mnist.search.plan import UsageError
from tune_mnist.search.space_file import load_space
from tune_mnist.search.tuner import make_search
from tune_mnist.search.warm import warm_study

RECORDED = ROOT / "results" / "cold-4k-r12"  # promoted at the end: told first-rung figures


def _warm(folder: Path = RECORDED):
    return warm_study(folder, load_space(folder / "space.yaml"), "results/x")


def test_each_trial_is_told_the_first_rung_figure_its_search_recorded():
    warm = _warm()
    trials = pd.read_parquet(RECORDED / "trials.parquet")
    assert (warm.told, warm.left_out) == (len(trials), 0)
    import optuna

    study = optuna.load_study(study_name="warm", storage=warm.storage)
    first = pd.read_csv(RECORDED / "first_rung.csv")["val_acc"]  # the sampler's record
    over = int((trials["status"] == "over_budget").sum())
    told = sorted(t.value for t in study.trials)
    assert told == sorted([0.0] * over + list(first)) and over > 0


def test_a_warm_searcher_starts_with_the_trials_and_keeps_them_through_rays_save(tmp_path):
    space = load_space(RECORDED / "space.yaml")
    warm = _warm()
    limiter, _ = make_search(space, seed=0, concurrency=2, warm=warm)
    searcher = limiter.searcher
    assert len(searcher._ot_study.trials) == warm.told
    assert not searcher._points_to_evaluate  # the reference point: among the told trials
    suggestion = limiter.suggest("t1")
    assert suggestion and len(searcher._ot_study.trials) == warm.told + 1
    searcher.save(str(tmp_path / "searcher.pkl"))  # what Ray keeps for a resume
    again, _ = make_search(space, seed=0, concurrency=2)  # a resume builds it cold ...
    again.searcher.restore(str(tmp_path / "searcher.pkl"))  # ... and Ray restores the study
    assert len(again.searcher._ot_study.trials) == warm.told + 1
    assert pickle.loads(pickle.dumps(warm.storage)) is not None


def test_a_space_that_holds_none_of_the_trials_is_refused(tmp_path):
    smoke = load_space(space_file(tmp_path))  # another space: tiny and super_light only
    with pytest.raises(UsageError, match="none of its 64 trials fits"):
        warm_study(RECORDED, smoke, "results/cold-4k-r12")


@pytest.mark.parametrize(
    "extra",
    [
        ("--warm-start", "NOWHERE"),
        ("--warm-start", "README.md"),  # a file, not a search's folder
        ("--resume", "--name", "a", "--warm-start", "results/cold-4k-r12"),
    ],
)
def test_a_warm_start_it_cannot_use_is_one_line_and_exit_2(tmp_path, extra):
    extra = tuple(str(tmp_path / "nothing") if e == "NOWHERE" else e for e in extra)
    done = run_search(tmp_path / "results", "--smoke", *extra, timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stderr.strip().count("\n") == 0 and "--warm-start" in done.stderr
    assert not (tmp_path / "results" / "a").exists()


@pytest.mark.slow
def test_a_search_warm_started_from_another_records_what_it_was_told(tmp_path):
    space = space_file(tmp_path, epochs=2, grace=1, samples=4, max_params=4000)
    results = tmp_path / "results"
    first = run_search(results, "--space", str(space), "--name", "a", "--no-report")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    args = ("--space", str(space), "--name", "b", "--no-report")
    second = run_search(results, *args, "--warm-start", str(results / "a"))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    meta = json.loads((results / "b" / "search.json").read_text())
    trials = pd.read_parquet(results / "a" / "trials.parquet")
    failed = trials["status"].isin(["diverged", "error", "lost"]).sum()
    assert meta["warm_start"]["trials"] == len(trials) - failed > 0
    assert not Path(meta["warm_start"]["from"]).is_absolute()  # a record names no machine
    assert len(pd.read_parquet(results / "b" / "trials.parquet")) == 4
    told = meta["warm_start"]["trials"]
    assert f"warm start: Optuna is told the {told} trials of results/a first" in second.stdout
