"""Branch variants: `lean-late` is a second box of arch `lean`, told apart by a constant."""

from pathlib import Path

import optuna
import pandas as pd
import pytest

from tune_mnist.search.space import SpaceError, arch_of
from tune_mnist.search.space_file import load_space

VARIANTS = """
settings: {epochs: 3, grace_period: 1, samples: 4, max_params: 8000}
params:
  max_lr: {loguniform: [0.01, 0.05]}
arch:
  super_light: {}
  lean:
    width4: {int: [8, 12]}
  lean-late:
    separable_late: true
    width4: {int: [20, 40]}
points_to_evaluate:
  - {arch: lean-late, width4: 30, max_lr: 0.02}
"""


def write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_a_variant_trains_its_architecture_with_its_constant_and_its_own_ranges(tmp_path):
    space = load_space(write(tmp_path, VARIANTS))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {}
    for _ in range(40):
        trial = study.ask()
        constants = space.define_by_run(trial)
        values = {**trial.params, **constants}
        config = space.train_config(values)
        branch = values["arch"]
        seen[branch] = config
        assert config.arch == arch_of(branch)
        assert config.separable_late == (branch == "lean-late")
        if branch == "lean-late":
            assert 20 <= config.width4 <= 40 and "lean:width4" not in values
        elif branch == "lean":
            assert 8 <= config.width4 <= 12 and "lean-late:width4" not in values
        study.tell(trial, 0.0)
    assert set(seen) == {"super_light", "lean", "lean-late"}
    assert space.optuna_points() == [{"arch": "lean-late", "lean-late:width4": 30, "max_lr": 0.02}]


def test_a_recorded_row_names_its_branch_back(tmp_path):
    space = load_space(write(tmp_path, VARIANTS))
    late = {"arch": "lean-late", "lean-late:width4": 30, "lean-late:separable_late": True}
    late = space.train_config(late).to_dict()
    plain = space.train_config({"arch": "lean", "lean:width4": 9}).to_dict()
    assert late["arch"] == plain["arch"] == "lean"  # the row holds the model
    assert space.branch_of(late) == "lean-late"
    assert space.branch_of(plain) == "lean"
    assert space.branch_of({**plain, "arch": "tiny"}) is None  # not of this space
    assert space.branch_of(pd.Series(late)) == "lean-late"  # as pandas hands rows over


def test_the_study_rebuilt_from_tables_keeps_each_trials_branch(tmp_path):
    from tune_mnist.search.optuna_journal import views_from_tables

    space = load_space(write(tmp_path, VARIANTS))
    drawn = {"a": ("lean-late", 33), "b": ("lean", 10)}
    trials = pd.DataFrame(
        {
            "trial_id": t,
            **space.train_config(
                {"arch": b, f"{b}:width4": w, "max_lr": 0.03, "separable_late": b == "lean-late"}
            ).to_dict(),
        }
        for t, (b, w) in drawn.items()
    )
    epochs = pd.DataFrame([{"trial_id": t, "epoch": 1, "val_acc": 98.0} for t in ("a", "b")])
    views = {v.trial_id: v.config for v in views_from_tables(space, trials, epochs)}
    assert views["a"] == {"arch": "lean-late", "max_lr": 0.03, "lean-late:width4": 33}
    assert views["b"] == {"arch": "lean", "max_lr": 0.03, "lean:width4": 10}


@pytest.mark.parametrize(
    "arch, message",
    [
        ("lean-late:\n    width4: {int: [20, 40]}", "needs a constant that differs"),
        ("lean-late:\n    separable_late: false", "needs a constant that differs"),
        ("nosuch-late: {}", "unknown architecture"),
        ("lean-a:b: {}", "lowercase letters"),  # ':' would split its Optuna names
        ("lean-: {}", "lowercase letters"),
        ("lean-late-2: {}", "lowercase letters"),
    ],
)
def test_a_variant_that_cannot_be_told_apart_or_has_no_model_is_refused(tmp_path, arch, message):
    text = f"arch:\n  lean: {{}}\n  {arch}\n"
    with pytest.raises(SpaceError, match=message):
        load_space(write(tmp_path, text))


def test_the_default_space_shaped_to_4000_keeps_the_variant_and_its_constant():
    from tune_mnist.search.budget import shaped_file

    path, _ = shaped_file(Path("search_spaces/default.yaml"), 4000)
    space = load_space(path)
    assert space.constants("lean-late") == {"separable_late": True}
    assert (
        space.branches["lean-late"]["width5"].values[1] > space.branches["lean"]["width5"].values[1]
    )
