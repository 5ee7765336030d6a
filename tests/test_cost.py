"""A chain's cost in core-minutes, read back from its tables."""

import json

import pandas as pd

from tune_mnist.cost import chain_cost, cost_line
from tune_mnist.tables import REQUIRED


def write(folder, name, columns):
    """A table with the columns given, and every column its readers require."""
    frame = pd.DataFrame(columns)
    for column in REQUIRED[name]:
        if column not in frame:
            frame[column] = 0
    frame.to_parquet(folder / name)


def test_cost_counts_each_runs_cores_and_only_the_picks_last_seeds(tmp_path):
    trials = {"trial_id": ["a", "b", "c"], "train_s": [600.0, 120.0, None], "threads": [1, 2, 1]}
    write(tmp_path, "trials.parquet", trials)
    write(tmp_path, "race_runs.parquet", {"trial_id": ["a", "a"], "train_s": [300.0, 300.0]})
    confirmed = {"trial_id": ["a", "a", "a", "b"], "seed": [1, 1, 2, 1]}
    confirmed["train_s"] = [999.0, 180.0, 240.0, 60.0]  # seed 1 confirmed twice: the last
    write(tmp_path, "confirmations.parquet", confirmed)
    (tmp_path / "summary.json").write_text(json.dumps({"wall_s": 900.0, "slots": 2}))
    cost = chain_cost(tmp_path, "a", 2)
    assert cost["search"] == (600 + 2 * 120) / 60  # a failed trial's missing seconds: none
    assert cost["race"] == 10.0 and cost["confirmation"] == 7.0
    assert cost["total"] == 14 + 10 + 7
    assert cost["search_held"] == 30.0 and cost["search_wall"] == 15.0
    assert cost_line(cost).startswith("cost: 31 core-minutes of training (search 14, race 10,")


def test_a_chain_without_race_or_confirmation_costs_its_search_alone(tmp_path):
    write(tmp_path, "trials.parquet", {"trial_id": ["a"], "train_s": [60.0]})
    cost = chain_cost(tmp_path)
    assert cost["total"] == cost["search"] == 1.0
    assert cost["race"] == cost["confirmation"] == cost["search_held"] == 0.0


def test_a_table_without_seconds_costs_nothing_rather_than_failing(tmp_path):
    write(tmp_path, "trials.parquet", {"trial_id": ["a"]})
    assert chain_cost(tmp_path)["total"] == 0.0


def test_a_resumed_search_adds_its_wall_clock_to_the_earlier_invocations(tmp_path):
    from tune_mnist.search.summary import across_invocations

    assert across_invocations(tmp_path, False, 60.0, 2, 2) == {
        "wall_s_all": 60.0,
        "held_core_s": 120.0,
        "peak_running": 2,
    }
    # a summary from before the sums: its one invocation
    (tmp_path / "summary.json").write_text(
        json.dumps({"wall_s": 900.0, "slots": 2, "peak_running": 2})
    )
    first = across_invocations(tmp_path, True, 60.0, 2, 1)  # a resume that ran one at most
    assert first == {"wall_s_all": 960.0, "held_core_s": 1920.0, "peak_running": 2}
    (tmp_path / "summary.json").write_text(json.dumps({"wall_s": 60.0, "slots": 2, **first}))
    assert across_invocations(tmp_path, True, 30.0, 4)["held_core_s"] == 1920.0 + 120.0
    assert across_invocations(tmp_path, False, 30.0, 4)["wall_s_all"] == 30.0  # a new search
    write(tmp_path, "trials.parquet", {"trial_id": ["a"], "train_s": [60.0]})
    cost = chain_cost(tmp_path)  # what the chain's cost line reads: every invocation
    assert cost["search_wall"] == 16.0 and cost["search_held"] == 32.0
    (tmp_path / "summary.json").write_text("{damaged")
    assert across_invocations(tmp_path, True, 30.0, 1)["held_core_s"] == 30.0


def test_a_warm_started_chain_adds_all_its_source_trained(tmp_path):
    source, chain = tmp_path / "results" / "src", tmp_path / "results" / "new"
    source.mkdir(parents=True)
    chain.mkdir()
    write(source, "trials.parquet", {"trial_id": ["a"], "train_s": [120.0]})
    write(source, "race_runs.parquet", {"trial_id": ["a"], "train_s": [60.0]})
    write(source, "confirmations.parquet", {"trial_id": ["a"], "seed": [1], "train_s": [60.0]})
    write(chain, "trials.parquet", {"trial_id": ["b"], "train_s": [60.0]})
    (chain / "search.json").write_text(json.dumps({"warm_start": {"from": "results/src"}}))
    cost = chain_cost(chain)
    assert cost["warm"] == 4.0 and cost["total"] == 5.0
    assert "search 1, race 0, confirmation 0, the search it warm-started from 4)" in cost_line(cost)
    (chain / "search.json").write_text(json.dumps({"warm_start": {"from": "results/new"}}))
    assert chain_cost(chain)["total"] == 1.0  # itself: counted once


def test_a_chain_that_confirms_an_earlier_stage_adds_the_later_stages_own_training(tmp_path):
    first, stage = tmp_path / "results" / "c", tmp_path / "results" / "c-w1"
    stage.mkdir(parents=True)
    first.mkdir()
    write(first, "trials.parquet", {"trial_id": ["a"], "train_s": [120.0]})
    write(first, "confirmations.parquet", {"trial_id": ["a"], "seed": [1], "train_s": [60.0]})
    write(stage, "trials.parquet", {"trial_id": ["b"], "train_s": [60.0]})
    write(stage, "race_runs.parquet", {"trial_id": ["b"], "train_s": [120.0]})
    (stage / "search.json").write_text(json.dumps({"warm_start": {"from": "results/c"}}))
    cost = chain_cost(first, "a", 1, [stage])  # the later stage's source is not counted twice
    assert cost["later"] == 3.0 and cost["total"] == 6.0
    assert "confirmation 1, the chain's later warm stages 3)" in cost_line(cost)
    assert chain_cost(first, "a", 1, [first])["total"] == 3.0  # itself: counted once
