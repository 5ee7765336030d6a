"""The publishing rule, once (README, Results): a model passes when it was chosen on
validation, has fewer than MAX_PARAMS parameters, trained EPOCHS epochs, and each of at
least SEEDS fresh seeds reaches TARGET_ACC% final test accuracy. The search's defaults
(tune_mnist.search.space) and the leaderboard read these; a search's own --max-params N is a
budget the same way: fewer than N parameters (`within`)."""

from __future__ import annotations

TARGET_ACC = 99.4  # % final-epoch test accuracy, every seed
MAX_PARAMS = 8000  # the product's budget: fewer parameters than this
EPOCHS = 15  # the training run whose final epoch is published
SEEDS = 5  # fresh seeds a published figure averages


def within(params: int, budget: int) -> bool:
    """A budget of N parameters admits models of fewer than N, as "under 8,000" says."""
    return params < budget


def passes(seeds: int, min_acc: float, completed: bool, params: int, selected_on: str) -> bool:
    """The rule for one model's confirmation: `selected_on` "val" (chosen on validation)."""
    return (
        seeds >= SEEDS
        and min_acc >= TARGET_ACC
        and completed
        and within(params, MAX_PARAMS)
        and selected_on == "val"
    )
