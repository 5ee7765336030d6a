"""A confirmed model's name in the tables: the label of the config its row holds
(tune_mnist.train.labels)."""

from __future__ import annotations

import pandas as pd

from tune_mnist.results import config_of
from tune_mnist.train.labels import label


def describe(row: pd.Series) -> str:
    """`lean 8-15s-(12)-15-17-18 silu lr0.0309 ls0.05 clean3`: architecture, then recipe."""
    return label(config_of(row))  # a field older rows lack keeps its default, as that run did
