"""Optuna learns each trial's figure at its first rung, as soon as the trial reaches it
(settings.promotion `end`).

Ray's OptunaSearch tells the study a trial's value when the trial ends. Under successive
halving at the search's end (tune_mnist.search.promotion, `deferred`), the best trials wait at
their first rung until sampling is over: told only then, the sampler would learn from the
weakest alone, those stopped as hopeless. Here the study is told every trial's first-rung
figure when it arrives, and nothing later: every value the sampler ranks is the same fidelity
(the figure ASHA ranks too), and the one it learns from the full runs' mix of fidelities
goes. The full run's figure still reaches the tables, the race and the Optuna journal file.
"""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch


class ScreenSearch(OptunaSearch):
    """OptunaSearch telling its study each trial's value at `time_attr` >= `first`."""

    def __init__(self, *args, time_attr: str, first: float, **kwargs):
        super().__init__(*args, **kwargs)
        self._screen_attr, self._screen_at = time_attr, first
        self._screened: set[str] = set()  # kept in the searcher's saved state: a resume's too

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._screened:
            return
        super().on_trial_result(trial_id, result)
        if result.get(self._screen_attr, 0) >= self._screen_at:
            super().on_trial_complete(trial_id, result)
            self._screened.add(trial_id)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        if trial_id not in self._screened:  # ended before its first rung: as Ray tells it
            super().on_trial_complete(trial_id, result, error)
