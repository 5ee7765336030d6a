"""End-to-end searches on subset data (CPU): Optuna + ASHA + parquet, over budget, resume."""

import json
import re
import subprocess
import time

import pytest
from searchutil import ROOT, env, journal, run_search, search_command, space_file

from tune_mnist.publish.labels import describe
from tune_mnist.results import EPOCH_COLUMNS, load

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(smoke_search):
    folder, stdout = smoke_search
    return load(folder), stdout


def test_three_tables_with_documented_columns_and_types(smoke):
    results, _ = smoke
    trials = results.trials
    assert len(trials) == 7
    for column in (
        "trial_id",
        "status",
        "arch",
        "width1",
        "dropout",
        "max_lr",
        "params",
        "epochs_run",
        "final_val_acc",
        "best_val_acc",
        "final_test_acc",
        "best_epoch",
        "val_size",
        "passed",
        "wall_s",
        "seed",
        "device",
        "torch_version",
        "ray_version",
        "optuna_version",
        "commit",
        "node_id",
        "gpu_share",
        "on_front",
    ):
        assert column in trials.columns, column
    assert trials["node_id"].str.len().eq(56).all()  # every trial knows its Ray node
    assert (trials["gpu_share"] == 0.0).all() and trials["on_front"].dtype == bool
    assert trials["width1"].dtype == "int64" and trials["squeeze"].dtype == bool
    assert trials["max_lr"].dtype == "float64" and trials["passed"].dtype == bool
    assert list(results.epochs.columns) == EPOCH_COLUMNS
    assert "best_test_acc" not in trials.columns  # a test figure picked on test: not kept
    trained = results.epochs[results.epochs["trial_id"].isin(trials["trial_id"])]
    assert trained["val_acc"].notna().all() and (trials["val_size"] == 1000).all()
    assert set(results.passing["trial_id"]) == set(trials.loc[trials["passed"], "trial_id"])
    assert results.passing["params"].is_monotonic_increasing


def test_asha_stopped_some_and_epochs_match(smoke):
    results, stdout = smoke
    trials = results.trials
    assert (trials["status"] == "asha_stopped").sum() >= 1
    counts = results.epochs.groupby("trial_id").size()
    for _, row in trials.iterrows():
        assert counts.get(row["trial_id"], 0) == row["epochs_run"]
        epochs = results.epochs[results.epochs["trial_id"] == row["trial_id"]]["epoch"]
        assert list(epochs) == list(range(1, row["epochs_run"] + 1))
    assert "search summary" in stdout and "full-fidelity share" in stdout and "slot time" in stdout
    judged = trials[trials["status"].isin(["completed", "asha_stopped"])]
    share = (judged["train_s"] * judged["threads"]).sum() / (
        judged["full_fidelity_s"] * judged["threads"]
    ).sum()  # what a reader recomputes from the table
    summary = json.loads((results.path / "summary.json").read_text())
    assert summary["full_fidelity_share"] == pytest.approx(share)
    assert f"full-fidelity share {100 * share:.0f}%" in stdout
    assert "progress: 7 of 7 trials ended, 0 running" in stdout  # and an estimate before it
    assert re.search(r"progress: [1-6] of 7 trials ended, \d running[^,]*, .* min left", stdout)


def test_each_trial_is_a_line_when_it_starts_and_when_it_ends(smoke):
    """Ray's own reporter is off (its tables and notices): our lines say what each trial is
    and how it ended, on validation."""
    results, stdout = smoke
    words = {
        "completed": "completed 3 epochs, val_acc ",
        "asha_stopped": "stopped by ASHA at epoch ",
        "over_budget": "over budget (",
    }
    for _, row in results.trials.iterrows():
        # the model as the leaderboard will name it
        assert f"trial {row['trial_id']} started: {describe(row)}\n" in stdout
        assert f"trial {row['trial_id']} ended: {words[row['status']]}" in stdout
    assert "Trial status:" not in stdout and "╭" not in stdout  # Ray's tables


def test_passed_means_a_full_run_at_target(smoke):
    trials = smoke[0].trials
    passed = trials[trials["passed"]]
    assert (passed["status"] == "completed").all()
    assert (passed["final_val_acc"] >= 50.0).all() and (passed["epochs_run"] == 3).all()
    failed = trials[(trials["status"] == "completed") & ~trials["passed"]]
    assert (failed["final_val_acc"] < 50.0).all()  # passing reads validation, not test
    assert not trials.loc[trials["status"] == "asha_stopped", "passed"].any()


def test_over_budget_recorded_without_training(smoke):
    trials = smoke[0].trials
    over = trials[trials["status"] == "over_budget"]
    assert len(over) >= 1 and (over["params"] > 4000).all()
    assert (over["epochs_run"] == 0).all() and not over["passed"].any()
    assert (over["wall_s"] < 1.0).all()


def test_conditional_space_in_the_rows(smoke):
    trials = smoke[0].trials
    sl = trials[trials["arch"] == "super_light"]
    assert (sl["width1"] == 8).all()  # the TrainConfig default: never sampled for it


def test_too_many_gpus_fails_fast_and_writes_nothing(tmp_path):
    started = time.perf_counter()
    command = search_command("--gpus", "64", "--smoke", "--name", "x")  # the last --gpus wins
    done = subprocess.run(
        command, capture_output=True, text=True, env=env(tmp_path / "results"), timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--gpus 64" in done.stderr
    assert not (tmp_path / "results").exists()
    assert time.perf_counter() - started < 60


def test_resume_of_unknown_name_is_refused(tmp_path):
    done = run_search(tmp_path / "results", "--smoke", "--name", "never", "--resume")
    assert done.returncode == 2 and "never" in done.stderr
    assert not (tmp_path / "results" / "never").exists()


def test_a_cohort_search_records_every_seed_and_passes_only_all_seed_passes(tmp_path):
    space = space_file(tmp_path, epochs=2, grace=2, samples=2, max_params=8000, images=2000)
    space.write_text(
        space.read_text().replace(
            "val_size: 1000}", "val_size: 1000,\n" + ("           seeds_per_trial: 2}")
        )
    )
    done = run_search(tmp_path / "results", "--space", str(space), "--name", "c", "--no-report")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = load(tmp_path / "results" / "c")
    trials, epochs = results.trials, results.epochs
    assert (trials["cohort"] == 2).all() and (trials["status"] == "completed").all()
    assert epochs["val_acc_seeds"].map(len).eq(2).all()
    for _, e in epochs.iterrows():
        assert e["val_acc"] == pytest.approx(sum(e["val_acc_seeds"]) / 2)
        assert e["val_acc_min"] == min(e["val_acc_seeds"])
    assert trials["final_test_acc_seeds"].map(len).eq(2).all()
    row = trials.iloc[0]  # passing reads the worst seed (test_selection.py: mean above, min below)
    last = epochs[epochs["trial_id"] == row["trial_id"]].iloc[-1]
    assert row["final_val_acc_min"] == min(last["val_acc_seeds"])
    assert row["passed"] == (row["final_val_acc_min"] >= 50.0)


def test_a_closed_output_pipe_is_one_line_naming_it_not_a_cluster_error(tmp_path):
    """`search.py ... | head` whose reader has ended: the search stops with one line that says
    so, not one that blames the Ray cluster (a broken pipe is also a ConnectionError)."""
    proc = subprocess.Popen(
        search_command("--smoke", "--samples", "1", "--name", "pipe", "--no-report"),
        env=env(tmp_path / "results"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # the reader is gone before the first line
    stderr = proc.stderr.read()
    assert proc.wait(timeout=300) == 1, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and stderr.endswith(errors[0] + "\n"), stderr[-2000:]
    assert (
        errors[0].startswith("error: the search's output was closed") and "cluster" not in errors[0]
    )
    assert "Traceback" not in stderr and "Exception ignored" not in stderr


def test_a_trial_line_names_a_config_no_trainconfig_takes_by_its_values():
    from tune_mnist.search.space_file import load_space
    from tune_mnist.search.writer import config_summary

    space = load_space(ROOT / "search_spaces" / "campaign4_3k_late.yaml")
    good = {"arch": "lean", "lean:width4": 24, "lean:width5": 30, "max_lr": 0.035}
    good |= space.fixed
    assert config_summary(space, good).startswith("lean 8-12s-(8)-16-24s-30s silu lr0.035")
    bad = {**good, "max_lr": -1.0}  # a value TrainConfig refuses: the cause of a failure
    assert "max_lr -1.0" in config_summary(space, bad)


def test_promotion_at_the_end_sends_the_first_rung_best_half_on_and_a_resume_keeps_it(tmp_path):
    """`--promotion end` in Ray: the trials that train past the first rung are exactly its
    best floor(n / 2) (reduction factor 2), whatever order they arrived in; the setting is
    recorded, and a resume asking for the other rule is refused in one line."""
    space = space_file(tmp_path, epochs=2, grace=1, samples=6, max_params=4000)
    results = tmp_path / "results"
    args = ("--space", str(space), "--name", "e", "--no-report")
    done = run_search(results, *args, "--promotion", "end")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    meta = json.loads((results / "e" / "search.json").read_text())
    assert meta["settings"]["promotion"] == "end"
    first, went_on = {}, set()
    for trial_id, entries in journal(results / "e").items():
        epochs = [e["result"] for e in entries if e["kind"] == "epoch"]
        if epochs and not epochs[0].get("over_budget"):
            first[trial_id] = epochs[0]["val_acc_avg3"]
            went_on |= {trial_id} if len(epochs) > 1 else set()
    assert len(first) >= 2 and len(went_on) == len(first) // 2
    assert min(first[t] for t in went_on) >= max(
        (first[t] for t in first if t not in went_on), default=0
    )
    again = run_search(results, *args, "--resume", "--promotion", "greedy")
    assert again.returncode == 2 and again.stderr.strip().count("\n") == 0
    assert "--promotion greedy" in again.stderr and "end" in again.stderr
