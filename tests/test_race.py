"""The race on validation seeds (tune_mnist.publish.race): who is dropped, when it ends, that
its workers never see a test image, and that a rerun trains nothing again."""

import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from searchutil import ROOT

from tune_mnist.publish import race, race_level
from tune_mnist.publish.race_command import dropped_line, eta
from tune_mnist.publish.race_command import main as race_main
from tune_mnist.study import race_rules
from tune_mnist.tables import read_parquet
from tune_mnist.train.config import TrainConfig
from tune_mnist.train.loop import print_epoch, train


def contender(name, vals, params=3000, resampled=False):
    """The search's figure, then the race's runs."""
    return race.Contender(name, TrainConfig(), params, vals[0], list(vals[1:]), resampled)


def test_a_contender_clearly_below_the_leader_is_dropped_and_a_close_one_is_not():
    field = [
        contender("lead", [99.50, 99.48, 99.52]),
        contender("close", [99.46, 99.50, 99.44]),
        contender("far", [99.10, 99.12, 99.08]),
    ]
    race.judge(field, 99.4)
    assert [c.status for c in field][1:] == ["racing", "dropped"]


def test_the_race_ends_when_the_leaders_pass_chance_is_clearly_ahead():
    ahead = [contender("a", [99.55, 99.57, 99.53]), contender("b", [99.42, 99.43, 99.41])]
    assert race.judge(ahead, 99.4) and ahead[0].status == "winner"
    young = [contender("a", [99.55]), contender("b", [99.42])]  # one seed: not yet
    assert not race.judge(young, 99.4) and young[0].status == "racing"
    assert race.pass_chance(ahead[0], 99.4) > 0.5 > race.pass_chance(ahead[1], 99.4)


def test_more_seeds_on_the_searchs_images_cannot_make_a_pass_certain():
    # every seed reads the same 5,000 images: their sampling error stays in the chance
    three = contender("a", [99.55, 99.57, 99.53])
    many = contender("a", [99.55, 99.57, 99.53] * 30)
    assert abs(race.pass_chance(many, 99.4) - race.pass_chance(three, 99.4)) < 0.05
    assert race.pass_chance(many, 99.4) < 0.8
    one = 0.5 * (1 + math.erf((many.mean - 99.4) / (race.SEED_SD * math.sqrt(2))))
    assert one**5 > 0.85  # what seeds alone would have said


def test_a_resampled_race_leaves_the_searchs_figure_out_and_reads_at_the_tests_level(
    monkeypatch,
):
    lucky = contender("a", [99.90, 99.30, 99.34], resampled=True)
    assert lucky.figures == [99.30, 99.34] and lucky.mean == pytest.approx(99.32)
    assert contender("a", [99.90], resampled=True).figures == [99.90]  # before its first run
    # random held-out sets read lower than the test set: the offset raises the chance (its
    # measured size, race.LEVEL, follows the picks; here a set one)
    monkeypatch.setitem(race.LEVEL, "own", 0.1)
    raised = race.pass_chance(lucky, 99.4)
    monkeypatch.setitem(race.LEVEL, "own", 0.0)
    assert race.pass_chance(lucky, 99.4) < raised / 2
    # the spread of runs on their own images holds the images' error: wider than a seed's
    assert lucky.sd > math.hypot(race.SEED_SD, 0.1)


def test_a_resampled_race_judges_no_one_until_each_has_a_run_of_its_own():
    field = [contender("a", [99.6, 99.5], resampled=True), contender("b", [99.0], resampled=True)]
    assert not race.judge(field, 99.4) and {c.status for c in field} == {"racing"}
    field[1].vals.append(99.0)
    race.judge(field, 99.4)
    assert field[1].status == "dropped"
    assert race.lead(field) is field[0]


def test_a_race_out_of_budget_picks_the_likeliest_to_pass_not_the_best_mean():
    # the same mean, one steady and one wild: five seeds all at the mark favour the steady
    steady = contender("steady", [99.9, 99.50, 99.48, 99.52], params=3900, resampled=True)
    wild = contender("wild", [99.9, 99.80, 99.20, 99.55], params=3000, resampled=True)
    field = [wild, steady]
    assert race.lead(field) is wild  # the best mean (99.517 against 99.50)
    assert race.pass_chance(steady, 99.4) > race.pass_chance(wild, 99.4)
    assert race.pick(field, 99.4) is steady
    twin = contender("twin", [99.9, 99.50, 99.48, 99.52], params=3100, resampled=True)
    assert race.pick([steady, twin], 99.4) is twin  # a tie goes to the smaller
    wild.status = "winner"  # a decided race's winner is its pick
    assert race.pick(field, 99.4) is wild
    steady.status, wild.status = "racing", "dropped"  # a dropped one is never picked
    assert race.pick([wild, steady], 99.4) is steady


def test_on_their_own_images_contenders_are_compared_round_by_round():
    # each round's images move both alike (hard, easy, hard): the lead of 0.2 is steady
    leader = contender("a", [99.9, 99.30, 99.60, 99.32], resampled=True)
    steady = contender("b", [99.9, 99.10, 99.40, 99.12], resampled=True)
    gap, se = race.lead_over(leader, steady)
    assert gap == pytest.approx(0.2) and se < 0.07
    race.judge([leader, steady], 99.4)
    assert steady.status == "dropped"
    # the same figures in another order, the rounds no longer paired: kept in
    shuffled = contender("b", [99.9, 99.40, 99.12, 99.10], resampled=True)
    assert race.lead_over(leader, shuffled)[1] > 0.1
    leader.status = "racing"
    race.judge([leader, shuffled], 99.4)
    assert shuffled.status == "racing"


def test_after_rounds_2_and_4_the_field_keeps_its_better_half_and_no_more_is_dropped():
    # eight close contenders (none clearly below), each round's images alike for all
    def field_of(rounds):
        return [
            contender(
                f"c{i}",
                [99.9] + [99.40 + 0.01 * i + 0.005 * (r % 2) for r in range(rounds)],
                params=3000 + i,
                resampled=True,
            )
            for i in range(8)
        ]

    one = field_of(1)
    race.judge(one, 99.9)
    assert {c.status for c in one} == {"racing"}  # one round: all still in
    two = field_of(2)
    race.judge(two, 99.9)
    assert [c.trial_id for c in two if c.status == "racing"] == ["c4", "c5", "c6", "c7"]
    race.judge(two, 99.9)  # judged again (a resumed race): no one more
    assert sum(c.status == "racing" for c in two) == 4
    four = [c for c in field_of(4)]
    for c in four[:4]:
        c.status = "dropped"  # halved after round 2
    race.judge(four, 99.9)
    assert [c.trial_id for c in four if c.status == "racing"] == ["c6", "c7"]
    halved = field_of(2)
    race.judge(halved, 99.9)
    assert dropped_line(halved, {f"c{i}" for i in range(8)}) == (
        "dropped c0, c1, c2, c3 (4 still racing)"
    )
    assert dropped_line(halved, {"c4"}) is None  # no one it was told was racing
    # a round of 8 took 990 s; 8 runs left for a field of 4: 16 minutes, not twice that
    assert eta(8, 990 / 8) == ", at most about 16 min" and eta(8, None) == ""
    kept = field_of(2)
    race.judge(kept, 99.9, halvings=())  # the drops alone
    assert {c.status for c in kept} == {"racing"}
    tie = field_of(2)[:2]
    race.judge(tie, 99.9)  # never fewer than two
    assert {c.status for c in tie} == {"racing"}


def test_the_race_rules_study_recovers_known_spreads_and_races_both_rules(tmp_path, capsys):
    rng = np.random.default_rng(1)
    truth = {"contender": 0.06, "round": 0.1, "run": 0.07}
    rows = []
    for name in ("a", "b"):
        means = truth["contender"] * rng.standard_normal(40)
        images = truth["round"] * rng.standard_normal(30)
        for i, m in enumerate(means):
            for seed in range(1, 31):
                val = 99.3 + m + images[seed - 1] + truth["run"] * rng.standard_normal()
                rows.append({"trial_id": f"t{i}", "seed": seed, "val_split": seed, "val_acc": val})
        (tmp_path / name).mkdir()
        pd.DataFrame(rows).to_parquet(tmp_path / name / race.RUNS_TABLE)
        rows = []
    sd, count = race_rules.spreads(tmp_path)
    assert count == 2 and sd["df"] == 2 * 39 * 29
    for key, value in truth.items():
        assert sd[key] == pytest.approx(value, rel=0.3), key
    assert race_rules.main(["--results-dir", str(tmp_path), "--races", "20"]) == 0
    out = capsys.readouterr().out
    assert "drops alone" in out and "halving" in out and "20 simulated races of 8" in out


def test_a_racing_worker_gets_no_test_set_and_evaluates_only_its_own_images(mnist, capsys):
    data = race.validation_only(mnist)
    assert len(data.test_y) == 0 and torch.equal(data.train_x, mnist.train_x)
    # a resampled run (val_split 3) holds out its own images; the test set is never read
    split = data.holdout(5000, 3)
    assert len(split.train_y) == 55_000 and len(split.test_y) == 0
    assert not torch.equal(split.val_x, mnist.train_x[-5000:])
    config = TrainConfig(arch="tiny", epochs=1, val_size=1000, val_split=3, train_subset=3000)
    [result] = train(config, data, on_epoch=lambda metrics, state: print_epoch(metrics, 1))
    assert "val acc" in capsys.readouterr().out
    assert "val_acc" in result.final and "test_acc" not in result.final
    assert not result.history[-1]["diverged"]


def _two_contenders(smoke_search, folder, monkeypatch):
    """A copy of the smoke search whose best two trials count as completed (ASHA may let
    one trial or several finish), with a seed spread wide enough (its figures lie points
    apart on 1,000 images) to keep both in until a budget of 2 runs is spent."""
    monkeypatch.setattr(race, "SEED_SD", 20.0)
    shutil.copytree(smoke_search[0], folder)
    trials = read_parquet(folder / "trials.parquet")
    trained = trials["status"].isin(["completed", "asha_stopped"])
    best = trials[trained].sort_values("final_val_acc", ascending=False).index[:2]
    trials.loc[best, "status"] = "completed"
    trials.to_parquet(folder / "trials.parquet")
    return folder


def test_a_race_holds_out_each_runs_own_images_by_default(smoke_search, tmp_path, monkeypatch):
    mine = _two_contenders(smoke_search, tmp_path / "s2", monkeypatch)
    assert race_main(["--results", str(mine), "--top", "2", "--runs", "2", "--cpus", "2"]) == 0
    runs = read_parquet(mine / "race_runs.parquet")
    assert list(runs["seed"]) == [1, 1] and list(runs["val_split"]) == [1, 1]
    table = read_parquet(mine / "race.parquet")
    assert list(table["seeds"]) == [1, 1] and set(table["val_images"]) == {"own"}
    assert table["mean_val_acc"].tolist() == [
        runs.set_index("trial_id").loc[t, "val_acc"] for t in table["trial_id"]
    ]  # the search's figure is left out


def test_a_race_counts_only_the_recorded_runs_of_its_own_kind(tmp_path, capsys):
    # results/cold-4k raced on the search's images; a race on their own images has none yet
    folder = tmp_path / "cold"
    shutil.copytree(ROOT / "results" / "cold-4k", folder, ignore=shutil.ignore_patterns("journal"))
    recorded = read_parquet(folder / "race_runs.parquet")
    assert race_main(["--results", str(folder), "--val-images", "search", "--smoke"]) == 0
    rows = re.findall(r"^  (\w{8}) +[\d,]+ +(\d+)  (\S+)", capsys.readouterr().out, flags=re.M)
    seeds = recorded.groupby("trial_id").size()
    assert rows and all(int(n) == seeds.get(t, 0) + 1 and on == "search's" for t, n, on in rows)
    assert race_main(["--results", str(folder), "--smoke"]) == 0
    rows = re.findall(r"^  (\w{8}) +[\d,]+ +(\d+)  (\S+)", capsys.readouterr().out, flags=re.M)
    assert rows and all(n == "1" and on == "search's" for _, n, on in rows)


def test_a_race_on_a_search_records_its_runs_and_a_rerun_trains_nothing(
    smoke_search, tmp_path, monkeypatch
):
    mine = _two_contenders(smoke_search, tmp_path / "s1", monkeypatch)
    flags = ["--results", str(mine), "--top", "2", "--runs", "2", "--val-images", "search"]
    assert race_main([*flags, "--cpus", "2"]) == 0
    runs = read_parquet(mine / "race_runs.parquet")
    table = read_parquet(mine / "race.parquet")
    assert len(runs) == 2 and set(runs["seed"]) == {1}
    assert set(runs["val_split"]) == {0}  # every run holds out the search's images
    assert list(table["seeds"]) == [2, 2] and table["pass_chance"].between(0, 1).all()
    assert "test_acc" not in runs  # nothing the race records reads the test set
    trials = read_parquet(mine / "trials.parquet").set_index("trial_id")
    best = trials.loc[table["trial_id"]]["final_val_acc"]
    assert list(best) == sorted(best, reverse=True)  # the search's best two, by validation
    assert race_main(flags) == 0
    assert len(read_parquet(mine / "race_runs.parquet")) == 2  # nothing trained again


def test_a_folder_without_a_search_is_one_line_exit_2(tmp_path, capsys):
    assert race_main(["--results", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such folder" in err
    (tmp_path / "other").mkdir()  # a folder of something else: says what it lacks
    assert race_main(["--results", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a search's folder" in err


@pytest.mark.parametrize(
    "flags", [["--top", "1"], ["--runs", "-1"], ["--cpus", "0"], ["--max-params", "0"]]
)
def test_a_race_of_one_or_of_no_runs_or_cpus_is_refused_by_its_flags(flags):
    with pytest.raises(SystemExit) as exited:
        race_main(["--results", "x", *flags])
    assert exited.value.code == 2


def test_a_race_run_the_table_cannot_take_waits_in_a_side_file_and_counts_once(tmp_path):
    """The disk fills, or the table is damaged, between a run's training and its append:
    the run goes to a side file that the race counts, and the next append merges it in."""
    row = {"trial_id": "a", "val_acc": 99.4}
    assert race.append_runs(tmp_path, [{**row, "seed": 1}]) is None
    (tmp_path / race.RUNS_TABLE).write_bytes(b"PAR1 damaged meanwhile")
    side = race.append_runs(tmp_path, [{**row, "seed": 2}])
    assert side is not None and side.is_file()
    (tmp_path / race.RUNS_TABLE).unlink()  # the user moves the damaged table aside
    assert list(race.recorded_runs(tmp_path)["seed"]) == [2]  # the side file's run counts
    assert race.append_runs(tmp_path, [{**row, "seed": 3}]) is None
    assert list(read_parquet(tmp_path / race.RUNS_TABLE)["seed"]) == [2, 3]
    assert not side.exists() and list(race.recorded_runs(tmp_path)["seed"]) == [2, 3]


def test_a_race_summary_that_cannot_be_written_is_one_line_exit_1(tmp_path, monkeypatch, capsys):
    from searchutil import ROOT

    folder = tmp_path / "cold-4k"
    shutil.copytree(ROOT / "results" / "cold-4k", folder, ignore=shutil.ignore_patterns("journal"))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(race, "write_summary", full_disk)
    assert race_main(["--results", str(folder), "--runs", "0"]) == 1  # nothing to train
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "race.parquet" in err[0] and "No space left" in err[0], err


def test_a_race_where_no_contender_can_pass_says_so_and_trains_nothing(tmp_path, capsys):
    # results/cold-4k-96-s1: its race spent its 6 runs; every pass chance is under 1%
    folder = tmp_path / "cold"
    shutil.copytree(
        ROOT / "results" / "cold-4k-96-s1", folder, ignore=shutil.ignore_patterns("confirmed")
    )
    before = (folder / "race_runs.parquet").read_bytes()
    assert race_main(["--results", str(folder), "--runs", "6", "--val-images", "search"]) == 0
    out = capsys.readouterr().out
    assert "race over (budget of 6 runs spent; no contender's pass chance reaches 1%" in out
    assert (folder / "race_runs.parquet").read_bytes() == before
    assert read_parquet(folder / "race.parquet")["pass_chance"].max() < 0.01


def test_a_smaller_budget_races_only_the_recorded_trials_under_it(tmp_path, capsys):
    # results/campaign3-4k-narrow searched under 4,000; its best under 3,000 are raced
    folder = tmp_path / "narrow"
    shutil.copytree(
        ROOT / "results" / "campaign3-4k-narrow", folder, ignore=shutil.ignore_patterns("confirmed")
    )
    trials = read_parquet(folder / "trials.parquet")
    done = trials[(trials["status"] == "completed") & (trials["params"] < 3000)]
    best = done.sort_values("final_val_acc", ascending=False)["trial_id"].head(4)
    assert race_main(["--results", str(folder), "--max-params", "3000", "--smoke"]) == 0
    out = capsys.readouterr().out
    raced = re.findall(r"^  (\w{8}) +([\d,]+) ", out, flags=re.M)
    assert sorted(t for t, _ in raced) == sorted(best)
    assert all(int(p.replace(",", "")) < 3000 for _, p in raced)
    assert not (folder / "race.parquet").exists()  # a smoke race writes nothing
    assert race_main(["--results", str(folder), "--max-params", "900", "--smoke"]) == 2
    assert "no completed trial under 900 parameters" in capsys.readouterr().err


def test_the_race_level_is_what_the_recorded_picks_measure():
    # each kind of race's offset to the test set: the mean gap over the contenders that
    # races measured and 5 fresh seeds confirmed (results/*/race.parquet, confirmations)
    table = race_level.measured(ROOT / "results")
    assert set(table["val_images"]) == set(race.LEVEL)  # each level rests on picks
    for kind, gaps in table.groupby("val_images")["gap"]:
        assert gaps.mean() == pytest.approx(race.LEVEL[kind], abs=0.01), kind


def test_a_resumed_chain_races_on_the_images_its_recorded_runs_held_out(tmp_path):
    from tune_mnist import chain

    assert chain._race_images(tmp_path) == "own"  # a new race
    row = {"trial_id": "a", "val_acc": 99.4, "seed": 1}
    race.append_runs(tmp_path, [{**row, "val_split": 1}])
    assert chain._race_images(tmp_path) == "own"
    race.append_runs(tmp_path, [{**row, "seed": 2, "val_split": 0}])
    assert chain._race_images(tmp_path) == "search"
    # results/cold-4k raced before val_split existed: on the search's images
    assert chain._race_images(ROOT / "results" / "cold-4k") == "search"


def test_the_race_level_prints_its_picks_and_draws_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TUNE_MNIST_RESULTS", str(ROOT / "results"))
    assert race_level.main(["--plot", str(tmp_path / "level.png")]) == 0
    assert "cold-4k-c3full" in capsys.readouterr().out
    assert (tmp_path / "level.png").read_bytes()[:4] == b"\x89PNG"
    monkeypatch.setenv("TUNE_MNIST_RESULTS", str(tmp_path))  # no race confirmed there
    assert race_level.main([]) == 1
