"""Select on validation, report on test: the split, and that no test figure reaches a choice."""

import pandas as pd
import pytest
import torch

from tune_mnist.publish.confirm import InputError, pick, selection_of
from tune_mnist.results import TrialView, build_tables
from tune_mnist.search.space_file import load_space
from tune_mnist.train.config import ConfigError, TrainConfig
from tune_mnist.train.loop import train


def test_holdout_takes_the_last_training_images(mnist):
    split = mnist.holdout(5000)
    assert len(split.train_y) == 55000 and len(split.val_y) == 5000
    assert torch.equal(split.train_x, mnist.train_x[:55000])
    assert torch.equal(split.val_x, mnist.train_x[55000:])
    assert torch.equal(split.test_x, mnist.test_x)  # the test set is never touched
    assert torch.bincount(split.val_y).min() > 400  # every class is there
    assert mnist.holdout(0) is mnist and len(mnist.val_y) == 0
    sub = split.subset(2000, 1000)  # subsets cut the training part, keep validation whole
    assert len(sub.train_y) == 2000 and len(sub.val_y) == 5000 and len(sub.test_y) == 1000


def test_a_resampled_split_holds_out_its_own_images_and_is_the_same_for_its_seed(mnist):
    from tune_mnist.train.data import MNIST

    # images that carry their own index in two pixels, to follow each one through the split
    n = 12_000
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    images[:, 0, 0], images[:, 0, 1] = torch.arange(n) % 256, torch.arange(n) // 256
    data = MNIST(images, torch.arange(n) % 10, mnist.test_x, mnist.test_y)

    def index(part):
        return (part[:, 0, 0].long() + 256 * part[:, 0, 1].long()).tolist()

    one, again, two = data.holdout(1000, 1), data.holdout(1000, 1), data.holdout(1000, 2)
    kept, held = index(one.train_x), index(one.val_x)
    assert sorted(kept + held) == list(range(n)) and len(held) == 1000  # a partition
    assert kept == sorted(kept)  # the training images keep their order
    assert index(again.val_x) == held and index(again.train_x) == kept  # the same for seed 1
    assert set(index(two.val_x)) != set(held)
    assert index(data.holdout(1000).val_x) == list(range(n - 1000, n))  # split 0: the last
    assert torch.equal(one.test_x, mnist.test_x)  # the test set is never touched
    assert one.train_y.tolist() == [i % 10 for i in kept]  # labels follow their images
    assert one.val_y.tolist() == [i % 10 for i in held]


@pytest.mark.parametrize("size", [-1, 30001])
def test_val_size_range(size):
    with pytest.raises(ConfigError, match="val_size"):
        TrainConfig(val_size=size)


def test_training_reports_validation_beside_test(mnist):
    config = TrainConfig(epochs=1, train_subset=1000, test_subset=500, val_size=500)
    config = config.replace(device="cpu")
    metrics = train(config, mnist)[0].history[0]
    assert 0 <= metrics["val_acc"] <= 100 and metrics["val_loss"] > 0
    assert metrics["val_acc_avg3"] == metrics["val_acc"] and "test_acc" in metrics
    plain = train(config.replace(val_size=0), mnist)[0].history[0]
    assert "val_acc" not in plain  # no validation images: no validation figure


def view(trial_id, val, test, epochs=3):
    rows = [
        {
            **{"epoch": e, "val_acc": val - (epochs - e), "test_acc": test, "params": 1000},
            **{"diverged": False, "start_epoch": 0, "epoch_s": 1.0},
        }
        for e in range(1, epochs + 1)
    ]
    config = {"arch": "super_light", "max_lr": 0.02}
    return TrialView(trial_id, "TERMINATED", config, rows[-1], rows)


def test_passing_and_ranking_read_validation_never_test(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "settings: {epochs: 3, target_acc: 99.0, max_params: 8000}\narch: {super_light: {}}\n"
    )
    space = load_space(path)
    # test accuracy ranks these in the opposite order of validation accuracy
    views = [view("a", 99.5, 98.0), view("b", 99.2, 99.9), view("c", 98.0, 100.0)]
    trials, _, passing = build_tables(views, space, 1, {})
    assert set(passing["trial_id"]) == {"a", "b"}  # c would pass on test, not on validation
    assert trials.set_index("trial_id").loc["a", "best_epoch"] == 3
    assert pick(passing, "accuracy", 1)["trial_id"].tolist() == ["a"]
    assert pick(passing, "accuracy", 2)["trial_id"].tolist() == ["a", "b"]
    assert selection_of(passing) == "val_acc" and selection_of(passing.iloc[0]) == "val_acc"


def test_a_cohort_passes_only_when_its_worst_seed_does(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "settings: {epochs: 3, target_acc: 99.0, seeds_per_trial: 2}\narch: {super_light: {}}\n"
    )
    space = load_space(path)
    assert space.train_config({"arch": "super_light"}).cohort == 2
    both, one = view("both", 99.5, 98.0), view("one", 99.5, 98.0)
    for trial, seeds in ((both, [99.4, 99.6]), (one, [98.9, 100.1])):  # the same mean
        trial.results[-1] |= {"val_acc_seeds": seeds, "val_acc_min": min(seeds)}
    trials, _, passing = build_tables([both, one], space, 1, {})
    assert list(passing["trial_id"]) == ["both"]
    assert trials.set_index("trial_id").loc["one", "final_val_acc_min"] == 98.9


def test_without_validation_figures_nothing_is_ranked():
    old = pd.DataFrame({"trial_id": ["x"], "params": [10], "final_test_acc": [99.9]})
    assert selection_of(old) == "test_acc"
    with pytest.raises(InputError, match="--trials"):
        pick(old, "accuracy", 1)


@pytest.mark.parametrize(
    "name",
    ["default", "campaign3_8k", "smoke", *(f"experiments/{n}" for n in ("lean", "pareto_probe"))],
)
def test_optuna_and_asha_are_built_on_validation_metrics(monkeypatch, name):
    """What make_tuner hands Optuna, ASHA and Tune for a shipped space: never a test metric."""
    from argparse import Namespace

    from searchutil import ROOT

    import tune_mnist.search.tuner as run
    from tune_mnist.search.plan import Plan

    seen = {}

    def capture(kind):
        def build(*args, **kwargs):
            seen[kind] = kwargs
            return kind

        return build

    for kind in ("OptunaSearch", "ScreenSearch", "PromotionASHA", "Limiter"):
        monkeypatch.setattr(run, kind, capture(kind))
    for kind in ("with_parameters", "with_resources", "TuneConfig", "RunConfig", "Tuner"):
        monkeypatch.setattr(run.tune, kind, capture(kind))
    space = load_space(ROOT / "search_spaces" / f"{name}.yaml")
    args = Namespace(resume=False, seed=0, max_failures=0, cpus_per_trial=1)
    run.make_tuner(args, space, "n", "/tmp/x", "e", None, Plan({"cpu": 1}, 1), None)
    # promotion at the end: Optuna told each first-rung figure (tune_mnist.search.screen)
    searcher = "ScreenSearch" if space.settings["promotion"] == "end" else "OptunaSearch"
    assert set(seen) & {"OptunaSearch", "ScreenSearch"} == {searcher}
    optuna_metrics = seen[searcher]["metric"]  # two in Pareto mode: accuracy and size
    if isinstance(optuna_metrics, list):
        assert optuna_metrics[1:] == ["params"] and seen[searcher]["mode"][1] == "min"
        optuna_metrics = optuna_metrics[0]
    metrics = [optuna_metrics, seen["TuneConfig"]["metric"], seen["PromotionASHA"]["metric"]]
    chosen = [m for m in metrics if m is not None]
    assert chosen and all(m.startswith("val_") for m in chosen), metrics


def test_a_confirmation_trains_on_all_images_even_after_a_subset_search():
    """A search on a subset (a CPU probe) is confirmed on all 60,000 training and all 10,000
    test images: a figure on 2,000 test images is not one to publish. Asked for, a subset."""
    from tune_mnist.publish.retrain import parse_args, seed_configs

    row = {**TrainConfig(val_size=2000, train_subset=12000, test_subset=2000).to_dict()}
    row |= {"seed": 0, "epochs": 6}
    configs = seed_configs(row, parse_args(["--seeds", "2"]), "cpu", parallel=False)
    assert [c.seed for c in configs] == [1, 2]
    assert {(c.train_subset, c.test_subset, c.val_size) for c in configs} == {(0, 0, 0)}
    quick = parse_args(["--seeds", "1", "--train-subset", "500", "--test-subset", "100"])
    (config,) = seed_configs(row, quick, "cpu", parallel=False)
    assert (config.train_subset, config.test_subset) == (500, 100)
    with pytest.raises(InputError):
        parse_args(["--train-subset", "60001"])


def test_a_subset_search_is_confirmed_against_the_products_mark_not_its_proxy():
    from tune_mnist.publish.retrain import confirmation_target, parse_args

    probe = {"target_acc": 98.5, "train_subset": 12000, "test_subset": 2000}
    assert confirmation_target(parse_args([]), probe) == 99.4  # all images: the real mark
    assert confirmation_target(parse_args(["--target", "98"]), probe) == 98.0  # asked for
    quick = parse_args(["--train-subset", "12000", "--test-subset", "2000"])
    assert confirmation_target(quick, probe) == 98.5  # the probe's own sizes: its own mark
    full = {"target_acc": 99.45, "train_subset": 0, "test_subset": 0}
    assert confirmation_target(parse_args([]), full) == 99.45
