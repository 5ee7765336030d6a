import dataclasses

import numpy as np
import pandas as pd
import pytest

from tune_mnist.train.config import ConfigError, TrainConfig


def test_defaults_are_the_documented_recipe():
    config = TrainConfig()
    assert config.batch_size == 128 and config.epochs == 15 and config.arch == "super_light"


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().epochs = 3


def test_unknown_key_is_named_with_a_hint():
    with pytest.raises(ConfigError, match="'max_lrr'.*did you mean 'max_lr'"):
        TrainConfig.from_dict({"max_lrr": 0.1})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"dropout": -0.1}, "dropout"),
        ({"epochs": 0}, "epochs"),
        ({"max_lr": 0.0}, "max_lr"),
        ({"scale_min": 1.2, "scale_max": 1.1}, "scale_min"),
        ({"arch": "vgg"}, "valid names are .*super_light"),
        ({"activation": "gelu"}, "activation.*valid names are relu, silu"),
        ({"batch_size": 12.5}, "batch_size"),
        ({"squeeze": "yes"}, "squeeze"),
        ({"device": "tpu"}, "device"),
        ({"max_lr": float("nan")}, "max_lr"),
    ],
)
def test_bad_values_raise_clear_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(values)


def test_round_trip_through_a_row_of_numpy_scalars():
    config = TrainConfig(arch="tiny", width1=6, dropout=0.1, squeeze=False)
    row = {
        k: (np.asarray(v).item() if isinstance(v, bool) else np.asarray(v)[()])
        for k, v in config.to_dict().items()
    }
    assert TrainConfig.from_dict(row) == config


def test_replace_validates():
    with pytest.raises(ConfigError):
        TrainConfig().replace(rotate_deg=-5)


def test_rows_from_before_a_field_existed_rebuild_with_its_default():
    from tune_mnist.results import config_of

    row = TrainConfig(arch="slim", width1=6, max_lr=0.05).to_dict()
    del row["width4"]  # written before the lean family's fields existed
    row["squeeze_width"] = float("nan")  # another experiment's column, after a concat
    config = config_of(pd.Series(row), seed=3)
    assert config == TrainConfig(arch="slim", width1=6, max_lr=0.05, seed=3)


def test_every_config_field_has_its_meaning_as_a_flags_help():
    """`python -m tune_mnist.train --help` gives each flag the field's comment in config.py
    and its default: one place says what a field means."""
    import argparse

    from tune_mnist.train.command import add_config_arguments
    from tune_mnist.train.config import field_docs

    docs = field_docs()
    assert set(docs) == {f.name for f in dataclasses.fields(TrainConfig)}
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    helps = {a.dest: a.help for a in parser._actions if a.dest in docs}
    assert helps["max_lr"].startswith(docs["max_lr"]) and "(default 0.04)" in helps["max_lr"]
