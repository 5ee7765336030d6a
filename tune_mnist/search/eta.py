"""How many epochs a search has left: what its `progress:` line turns into minutes, at the
pace of the epochs trained so far (tune_mnist.search.writer)."""

from __future__ import annotations

from tune_mnist.search import rungs
from tune_mnist.train.config import TrainConfig


def epochs_left(records: dict, running: dict[str, int], total: int, settings: dict) -> float:
    """Epochs the search has left. Every trial not started trains at the share of started
    trials that fit the budget (one over it trains none). With rungs: each live trial the
    rest of the rung it is in, every trial not started its first rung, and each later rung
    the promotions its quota has left (tune_mnist.search.promotion: floor(n / factor) of the
    n trials the rung below sends, at least one), whenever they happen (greedily or at the
    search's end). Without, a trial's expected epochs are the mean of the trials ASHA judged
    so far."""
    plan = rungs.plan(TrainConfig(epochs=settings["epochs"]), settings, 60_000)
    over = sum(bool(r.last_result.get("over_budget")) for r in records.values() if r.results)
    fit = 1 - over / len(records) if records else 1.0
    not_started = max(total - len(records), 0) * fit
    if len(plan) > 1:
        return _left_on_rungs(records, running, not_started, plan, settings["reduction_factor"])
    judged = [
        len(r.results)
        for r in records.values()
        if r.ended and not r.last_result.get("over_budget") and r.results
    ]
    each = sum(judged) / len(judged) if judged else float(settings["epochs"])
    return sum(max(each - epoch, 0.0) for epoch in running.values()) + not_started * each


def _left_on_rungs(records, running, not_started: float, plan, factor: int) -> float:
    sizes = [rung.epochs for rung in plan]
    starts = [rung.offset for rung in plan]
    trained = {  # each trial's newest epoch, the trials over budget left out
        t: max([int(x.get("epoch") or 0) for x in r.results] + [running.get(t, 0)])
        for t, r in records.items()
        if not r.last_result.get("over_budget")
    }
    left = not_started * sizes[0]
    for trial_id, epoch in trained.items():
        if not records[trial_id].ended:  # the rest of the rung it is in (0 at a rung's end)
            index = max(i for i, start in enumerate(starts) if start <= epoch)
            left += 0 if epoch == starts[index] and epoch else starts[index] + sizes[index] - epoch
    arrivals = len(trained) + not_started  # the figures the first rung will hold
    for index, quota in enumerate(rungs.quotas(arrivals, factor, len(plan) - 1), start=1):
        entered = sum(epoch > starts[index] for epoch in trained.values())
        left += max(quota - entered, 0) * sizes[index]
    return left
