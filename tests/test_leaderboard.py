"""The leaderboard: grouping seed rows into models, the Pareto table, the README block."""

import pandas as pd
import pytest
from searchutil import ROOT

from tune_mnist.publish.labels import describe
from tune_mnist.publish.leaderboard import best_by_budget, collect, main
from tune_mnist.publish.readme_blocks import END, HISTORY_END, HISTORY_START, START, update_readme
from tune_mnist.train.config import TrainConfig


def seed_rows(trial, params, accs, arch="slim", epochs=15, **config):
    base = {"selected_on": "test_acc", **TrainConfig(arch=arch).to_dict(), **config}
    base["epochs"] = epochs
    return [
        {
            "trial_id": trial,
            **base,
            "seed": seed,
            "params": params,
            "status": "completed",
            "final_test_acc": acc,
            "train_s": 100.0,
        }
        for seed, acc in enumerate(accs, start=1)
    ]


@pytest.fixture
def root(tmp_path):
    a = tmp_path / "search-a"
    a.mkdir()
    rows = (
        seed_rows("small", 1900, [99.30, 99.35, 99.20], width1=6)
        + seed_rows("mid", 2900, [99.45, 99.41, 99.50])
        + seed_rows(
            "five", 6300, [99.45, 99.41, 99.50, 99.44, 99.47], "lean", selected_on="val_acc"
        )
        + seed_rows("mid", 2900, [99.45, 99.41, 99.50], epochs=10)  # another model
        + seed_rows("three", 6100, [99.6, 99.7, 99.6], selected_on="val_acc")  # 3 seeds
        + seed_rows(
            "ontest", 6200, [99.6, 99.7] * 2 + [99.6], selected_on="test_acc"
        )  # chosen on test
        + seed_rows("two", 2500, [99.9, 99.9])  # two seeds: never published
        + seed_rows("lean", 5000, [99.0, 99.0, 99.0], arch="lean")
    )
    pd.DataFrame(rows).to_parquet(a / "confirmations.parquet")
    b = tmp_path / "search-b"
    b.mkdir()
    rows = seed_rows("big", 4800, [99.55, 99.38, 99.60], arch="super_light")
    rows += seed_rows("big", 4800, [99.55], arch="super_light")  # seed 1 confirmed again
    # an older experiment, from before the lean widths existed: the concat makes them floats
    pd.DataFrame(rows).drop(columns=["width4", "squeeze_width"]).to_parquet(
        b / "confirmations.parquet"
    )
    return tmp_path


def test_models_group_seeds_and_pass_only_when_every_seed_does(root):
    seeds, models = collect(root)
    assert len(seeds) == 3 + 3 + 5 + 3 + 3 + 5 + 2 + 3 + 3  # the repeated seed counts once
    by = models.set_index(["trial_id", "epochs"])
    assert by.loc[("five", 15), "passed"] and by.loc[("five", 15), "min"] == pytest.approx(99.41)
    assert not by.loc[("mid", 15), "passed"]  # every seed >= 99.4, 3 seeds chosen on test
    assert not by.loc[("three", 15), "passed"]  # every seed >= 99.4, but 3 seeds only
    assert not by.loc[("ontest", 15), "passed"]  # 5 seeds, but chosen on the test set
    assert not by.loc[("small", 15), "passed"]
    assert not by.loc[("big", 15), "passed"]  # mean 99.51 but one seed at 99.38
    assert not by.loc[("two", 15), "passed"]  # 99.9 on two seeds only
    assert by.loc[("mid", 15), "model"] == "slim 8-12-16 x2"  # TrainConfig defaults
    assert by.loc[("lean", 15), "model"] == "lean 8-12-(8)-16-12-16"  # ints, not 8.0
    assert "--trials mid --seeds 3" in by.loc[("mid", 15), "command"]
    assert models["params"].is_monotonic_increasing


def test_one_call_returns_every_confirmed_seed_with_the_rules_verdict(root, tmp_path):
    from tune_mnist.confirmed import confirmed_rows

    seeds = confirmed_rows(root)
    _, models = collect(root)
    assert len(seeds) == models["seeds"].sum() and seeds["selected_on"].notna().all()
    assert set(seeds["selected_on"]) == {"val_acc", "test_acc"}
    verdict = seeds.groupby("trial_id")["passes"].agg(["min", "max"])
    assert (verdict["min"] == verdict["max"]).all()  # one verdict per model
    assert verdict["min"].to_dict() == models.set_index("trial_id")["passed"].to_dict()
    assert confirmed_rows(tmp_path / "nothing").empty


def test_reproduce_commands_name_threads_and_epochs_and_the_selection_is_shown(tmp_path):
    (tmp_path / "e").mkdir()
    rows = [
        *seed_rows("one", 3000, [99.5] * 3, threads=1, selected_on="val_acc"),
        *seed_rows("two", 3100, [99.5] * 3, threads=2, epochs=10),
        *seed_rows("old", 3200, [99.5] * 3, threads=0),  # torch's default, before the split
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "e" / "confirmations.parquet")
    _, models = collect(tmp_path)
    by = models.set_index("trial_id")
    assert by.loc["one", "command"].endswith("--trials one --seeds 3 --threads 1")
    assert by.loc["two", "command"].endswith("--threads 2 --epochs 10")
    assert by.loc["old", "command"].endswith("--threads 0")
    assert by["chosen_on"].to_dict() == {"one": "val", "two": "test", "old": "test"}
    from tune_mnist.publish.leaderboard import results_markdown

    assert "| 15 | val | `python" in results_markdown(models)


def test_pareto_takes_best_mean_at_or_under_each_budget(root):
    _, models = collect(root)
    table = best_by_budget(models, budgets=(1000, 2000, 3000, 5000)).set_index("budget")
    assert pd.isna(table.loc[1000, "params"])  # nothing that small
    assert table.loc[2000, "trial_id"] == "small"  # not passing, still the best there
    assert table.loc[3000, "trial_id"] == "mid"  # the 2-seed 99.9 does not count
    assert table.loc[5000, "trial_id"] == "big" and not table.loc[5000, "passed"]


def test_pareto_breaks_a_printed_tie_for_the_passing_then_smaller_model(tmp_path):
    (tmp_path / "e").mkdir()
    rows = [
        # all print as 99.43%; the first is a hair higher in floating point but fails a seed
        *seed_rows("fails", 3868, [99.36, 99.48, 99.46, 99.46, 99.4401], selected_on="val_acc"),
        *seed_rows("passes", 3848, [99.41, 99.45, 99.44, 99.46, 99.44], selected_on="val_acc"),
        *seed_rows("bigger", 3900, [99.41, 99.45, 99.44, 99.46, 99.44], selected_on="val_acc"),
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "e" / "confirmations.parquet")
    _, models = collect(tmp_path)
    assert models.set_index("trial_id")["mean"].idxmax() == "fails"  # the naive pick
    best = best_by_budget(models, budgets=(4000,)).iloc[0]
    assert best["trial_id"] == "passes" and best["passed"]


def test_readme_and_history_blocks_are_rewritten_between_markers_and_checked(
    root, tmp_path, capsys
):
    readme, history = tmp_path / "README.md", tmp_path / "history.md"
    readme.write_text(f"# title\n\n{START}\nold\n{END}\n\nafter\n")
    history.write_text(f"# history\n\n{HISTORY_START}\nold\n{HISTORY_END}\n")
    both = ["--results-dir", str(root), "--readme", str(readme), "--history", str(history)]
    assert main(both) == 0
    text, old = readme.read_text(), history.read_text()
    assert text.startswith("# title") and text.endswith("after\n") and "old" not in text
    # the fixture's models but one were chosen on test: only that one in the README
    assert "| model | params | seeds | mean |" in text and "slim" not in text.split("By budget")[0]
    budget_rows = [row.split(" | ") for row in old.splitlines() if row.startswith("| ")]
    assert any("3,000" in row[0] and "slim" in row[1] for row in budget_rows)  # a span's too
    assert "99.45%" in old and "| test |" in old
    assert (root / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"
    assert main([*both, "--check"]) == 0
    block = START + text.split(START)[1].split(END)[0] + END
    assert not update_readme(readme, block)  # already current: file untouched
    history.write_text(old.replace("99.45%", "99.99%"))
    assert main([*both, "--check"]) == 1
    assert "stale" in capsys.readouterr().out


def test_labels_name_the_architecture_then_only_the_recipe_changes():
    def label(**config):
        return describe(pd.Series(seed_rows("t", 1, [99.0], **config)[0]))

    assert label(arch="super_light") == "super_light"
    assert label(arch="lean", width3=8) == "lean 8-12-(8)-8-12-16"
    assert label(arch="lean", pool2=True) == "lean 8-12-(8)-16-12-16 pool2"
    assert label(arch="lean", activation="silu") == "lean 8-12-(8)-16-12-16 silu"
    assert label(arch="lean", separable2=True) == "lean 8-12s-(8)-16-12-16"
    assert label(arch="lean", separable_late=True) == "lean 8-12-(8)-16-12s-16s"
    assert label(arch="loop", width3=14, depth2=4) == "loop 8-12-14 x4"
    changed = label(
        arch="loop", batch_size=64, ema_decay=0.999, rotate_deg=5.0, max_lr=0.05241, clean_epochs=3
    )
    assert changed == "loop 8-12-16 x2 b64 lr0.0524 ema0.999 clean3 aug5/0.08/0.9-1.1"
    assert label(arch="lean", weight_decay=0.005) == "lean 8-12-(8)-16-12-16 wd0.005"
    sgd = label(arch="super_light", optimizer="sgd", momentum=0.9, brightness=0.2, contrast=0.1)
    assert sgd == "super_light sgd m0.9"  # brightness/contrast without a probability: off
    photo = label(arch="super_light", brightness=0.2, contrast=0.1, photometric_p=0.5)
    assert photo == "super_light photo0.2/0.1p0.5"
    # a row from before ema_decay existed (NaN after a concat) ran without EMA
    assert describe(pd.Series({**seed_rows("t", 1, [99.0])[0], "ema_decay": float("nan")})) == (
        "slim 8-12-16 x2"
    )


def test_smoke_confirmations_are_never_published(root):
    smoke = root / "smoke-x"
    smoke.mkdir()
    rows = seed_rows("tiny", 900, [99.9] * 3, train_subset=2000, test_subset=1000)
    pd.DataFrame(rows).to_parquet(smoke / "confirmations.parquet")
    seeds, models = collect(root)
    assert "tiny" not in set(models["trial_id"]) and "smoke-x" not in set(seeds["experiment"])


@pytest.mark.parametrize("kind", ["missing", "folder", "binary", "no_markers"])
def test_a_bad_readme_is_one_line_exit_2_before_anything_is_written(root, tmp_path, kind, capsys):
    readme = {"missing": tmp_path / "no.md", "folder": tmp_path}.get(kind, tmp_path / "R.md")
    if kind == "binary":
        readme.write_bytes(b"\x89PNG\xff\xfe")
    if kind == "no_markers":
        readme.write_text("# title\n")
    assert main(["--results-dir", str(root), "--readme", str(readme)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (root / "leaderboard.csv").exists() and not (root / "leaderboard.png").exists()


def test_no_confirmations_is_one_line_exit_2(tmp_path, capsys):
    assert main(["--results-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_committed_readme_matches_committed_confirmations(monkeypatch):
    """The README's tables are generated from results/*/confirmations.parquet, never typed."""
    monkeypatch.chdir(ROOT)
    args = ["--results-dir", "results", "--readme", "README.md", "--history", "docs/history.md"]
    assert main([*args, "--check"]) == 0


def test_campaign_table_takes_only_five_seed_models_chosen_on_validation(tmp_path):
    (tmp_path / "e").mkdir()
    val = {"selected_on": "val_acc", "threads": 1}
    rows = [
        *seed_rows("five", 2400, [99.41, 99.45, 99.44, 99.40, 99.47], **val),
        *seed_rows("three", 2300, [99.6] * 3, **val),  # better, but 3 seeds
        *seed_rows("test", 2200, [99.7] * 5, selected_on="test_acc"),  # chosen on test
        *seed_rows("fails", 2900, [99.5, 99.5, 99.5, 99.5, 99.39], **val),
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "e" / "confirmations.parquet")
    _, models = collect(tmp_path)
    table = best_by_budget(models, budgets=(2000, 2500, 3000), strict=True).set_index("budget")
    assert pd.isna(table.loc[2000, "params"])
    assert table.loc[2500, "trial_id"] == "five" and table.loc[2500, "passed"]
    assert table.loc[3000, "trial_id"] == "fails" and not table.loc[3000, "passed"]
    assert "--trials five --seeds 5 --threads 1" in table.loc[2500, "command"]
    from tune_mnist.publish.leaderboard import render

    block = render(models)
    assert "By budget" in block and "| 2,500 | slim" in block
    assert "three" not in block and "--trials test " not in block  # 3 seeds; chosen on test
    # the 2 honest rows, and the budgets from 2,500 to 8,000 that hold one of them: 2,500
    # (five) and 3,000 to 8,000 (fails, the better mean) in one row
    assert block.count("`python scripts/retrain_best.py") == 2 + 2
    assert "| 3,000-8,000 | slim" in block and "| 4,000 |" not in block


def test_a_reproduce_command_names_the_epochs_when_the_search_ran_fewer(tmp_path):
    """A 6-epoch subset probe confirmed at 15 epochs: retrain_best.py defaults to the
    search's 6, so the command must say 15."""
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "search.json").write_text('{"settings": {"epochs": 6}}')
    pd.DataFrame(seed_rows("p", 3000, [99.5] * 3, threads=1)).to_parquet(
        tmp_path / "probe" / "confirmations.parquet"
    )
    _, models = collect(tmp_path)
    assert models.iloc[0]["command"].endswith("--threads 1 --epochs 15")


def test_a_budget_admits_fewer_parameters_than_it_names():
    from tune_mnist import rule

    assert rule.within(3999, 4000) and not rule.within(4000, 4000)
    assert rule.passes(5, 99.5, True, 7999, "val") and not rule.passes(5, 99.5, True, 8000, "val")


@pytest.mark.parametrize("trial", ["23684415", "1234e567", "00000042"])
def test_a_trial_id_of_digits_stays_a_string_in_the_published_table(tmp_path, trial):
    # Tune's ids are 8 hex digits: about 2% are digits only, which pandas reads from a CSV
    # as a number (and "1234e567" as a float)
    folder = tmp_path / "search-d"
    folder.mkdir()
    rows = seed_rows(trial, 3000, [99.45, 99.41, 99.50], selected_on="val_acc")
    pd.DataFrame(rows).to_parquet(folder / "confirmations.parquet")
    assert main(["--results-dir", str(tmp_path)]) == 0
    board = pd.read_parquet(tmp_path / "leaderboard.parquet")
    assert board["trial_id"].tolist() == [trial]
    assert (
        pd.read_csv(tmp_path / "leaderboard.csv", dtype={"trial_id": str})["trial_id"][0] == trial
    )
    assert set(board.columns) == set(pd.read_csv(tmp_path / "leaderboard.csv").columns)


@pytest.mark.parametrize("accs", [[99.5], [99.5, 99.4]])
def test_confirmations_too_few_to_publish_still_draw_an_empty_leaderboard(tmp_path, accs):
    # a `--confirm 1` chain ends here: nothing qualifies, and the table and plot say so
    (tmp_path / "x").mkdir()
    pd.DataFrame(seed_rows("one", 3000, accs)).to_parquet(tmp_path / "x" / "confirmations.parquet")
    assert main(["--results-dir", str(tmp_path)]) == 0
    assert (tmp_path / "leaderboard.png").stat().st_size > 0
    assert best_by_budget(collect(tmp_path)[1])["params"].isna().all()
