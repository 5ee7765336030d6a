"""ASHA by promotion (Li et al. 2020, "A System for Massively Parallel Hyperparameter
Tuning", Algorithm 2), on Ray Tune's public scheduler and searcher APIs.

Ray's ASHAScheduler decides at once when a trial reaches a milestone: it goes on when its
figure is in the top 1/reduction_factor of those recorded there so far, so the first trials
to arrive, judged against few or none, nearly all go on (the cold 4k search trained 10 of
34 judged trials in full where successive halving keeps 2). Here a rung promotes at most
floor(n / reduction_factor) of the n figures it has seen, the best ones not yet promoted.
A trial that is not among them waits, paused at its checkpoint, holding no resources; a
later figure can lift it into the quota and it resumes. A trial that as many figures beat as
its rung can ever promote (a quarter of the search's trials at the first rung, and so on)
stops at once instead: nothing can lift it, and Optuna learns its figure only when it ends.
When nothing runs and nothing is left to start, the waiting trials are stopped, except that
a rung that has promoted none promotes its best: every search trains at least one trial to
the full run.

The Optuna searcher's concurrency limit counts running trials only (`Limiter`): waiting
ones would otherwise fill it and starve the search of new trials.

With `deferred` (settings.promotion `end`), a rung promotes nothing while the search runs:
every trial waits at it, or stops once it is hopeless, until nothing is left to start, and
then its best quarter goes on at once (successive halving). A model-based sampler proposes
better trials as it learns, so the first arrivals are the weakest; promoted greedily they
take full runs from the later, better ones (docs/fidelity.md, "When a rung promotes").

On a resume, Ray builds a fresh scheduler; it reads back every recorded figure, promotion
and wait from the search's journal (`seed`), so a resumed search judges as the first did.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from tune_mnist.search import ray_door, rungs
from tune_mnist.search.writer import live_reports

_WAITING: set[str] = set()  # the driver's waiting trials, for its Limiter


def promotions(figures: dict, promoted: set, factor: float, final: bool = False) -> list:
    """The trials a rung promotes now: of its best floor(n / factor) figures (higher is
    better; ties by key), those not promoted yet; at the search's end at least one."""
    quota = int(len(figures) // factor)
    if final and not promoted:
        quota = max(quota, 1)
    ranked = sorted(figures, key=lambda t: (-figures[t], t))
    return [t for t in ranked[:quota] if t not in promoted][: quota - len(promoted)]


class PromotionASHA(FIFOScheduler):
    def __init__(
        self,
        time_attr: str,
        milestones: list[float],
        max_t: float,
        reduction_factor: float,
        metric: str | None = None,
        mode: str | None = None,
        samples: int | None = None,
        deferred: bool = False,
    ):
        super().__init__()
        self._time_attr, self._max_t, self._rf = time_attr, max_t, reduction_factor
        self._samples = samples  # trials of the whole search: what bounds each rung's quota
        self._deferred = deferred  # promote only at the search's end
        self._metric, self._mode = metric, mode
        self._milestones = sorted(milestones)
        self._figures: dict[float, dict[str, float]] = {m: {} for m in self._milestones}
        self._promoted: dict[float, set[str]] = {m: set() for m in self._milestones}
        self._waiting: dict[str, float] = {}  # trial -> the milestone it waits at
        self._resume: set[str] = set()  # waiting trials promoted since: to be started
        self._seeded = False

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def _ensure_seeded(self) -> None:
        if not self._seeded:  # a new search's journal is empty: nothing to read back
            self.seed(*live_reports())

    def seed(self, reports: dict[str, list[dict[str, Any]]], ended: set[str]) -> None:
        """Rebuild the rungs from each trial's recorded reports (the journal's, in order):
        its figure at each milestone it reached, promoted when it reported past one, else
        waiting (unless it ended there)."""
        self._seeded = True
        for trial_id, results in reports.items():
            for i, result in enumerate(results):
                milestone = self._arrival(trial_id, result)
                if milestone is None:
                    continue
                self._figures[milestone][trial_id] = self._score(result)
                if i + 1 < len(results):
                    self._promoted[milestone].add(trial_id)
                elif trial_id not in ended:
                    self._waiting[trial_id] = milestone
        for milestone in self._milestones:
            self._promote(milestone)
        self._publish_waiting()

    def _publish_waiting(self) -> None:
        """The waiting trials, where this driver's Limiter reads them."""
        _WAITING.clear()
        _WAITING.update(self._waiting)

    def _score(self, result: dict[str, Any]) -> float:
        value = result.get(self._metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return -math.inf
        return float(value) if self._mode == "max" else -float(value)

    def _arrival(self, trial_id: str, result: dict[str, Any]) -> float | None:
        """The milestone this report reaches first, if it does."""
        at = result.get(self._time_attr)
        if at is None or self._metric not in result:
            return None
        reached = [m for m in self._milestones if m <= at and trial_id not in self._figures[m]]
        return reached[-1] if reached and at < self._max_t else None

    def _promote(self, milestone: float, final: bool = False) -> set[str]:
        """Promote the best figures at `milestone` up to its quota; returns those promoted."""
        if self._deferred and not final:
            return set()
        promoted = self._promoted[milestone]
        chosen = promotions(self._figures[milestone], promoted, self._rf, final)
        promoted.update(chosen)
        for trial_id in chosen:
            if self._waiting.pop(trial_id, None) is not None:
                self._resume.add(trial_id)
        return set(chosen)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        self._ensure_seeded()
        if self._time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        if result[self._time_attr] >= self._max_t:
            return TrialScheduler.STOP
        milestone = self._arrival(trial.trial_id, result)
        if milestone is None:
            return TrialScheduler.CONTINUE
        self._figures[milestone][trial.trial_id] = self._score(result)
        self._waiting[trial.trial_id] = milestone
        self._promote(milestone)
        going_on = trial.trial_id in self._resume
        self._resume.discard(trial.trial_id)
        hopeless = self._hopeless(milestone)
        for other in tune_controller.get_trials():
            if other.trial_id in hopeless and other.status == Trial.PAUSED:
                ray_door.stop_paused(tune_controller, other)
        self._publish_waiting()
        if going_on:
            return TrialScheduler.CONTINUE
        return TrialScheduler.STOP if trial.trial_id in hopeless else TrialScheduler.PAUSE

    def _ceiling(self, milestone: float) -> float:
        """The most promotions `milestone` can ever make: a quarter of the most figures it
        can ever see (the search's trials, a quarter of them at the next rung, ...)."""
        if not self._samples or milestone not in self._milestones:
            return math.inf
        quotas = rungs.quotas(self._samples, self._rf, len(self._milestones))
        return quotas[self._milestones.index(milestone)]

    def _hopeless(self, milestone: float) -> set[str]:
        """The waiting trials at `milestone` that as many figures beat as it can ever
        promote: no later figure can lift them. They stop now (their figure reaches Optuna
        at once, where a waiting trial tells it nothing)."""
        figures, ceiling = self._figures[milestone], self._ceiling(milestone)
        out = set()
        for trial_id, at in list(self._waiting.items()):
            if at == milestone and sum(f > figures[trial_id] for f in figures.values()) >= ceiling:
                out.add(trial_id)
                self._waiting.pop(trial_id)
        return out

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self._forget(trial.trial_id)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self._forget(trial.trial_id)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self._forget(trial.trial_id)

    def _forget(self, trial_id: str) -> None:
        self._waiting.pop(trial_id, None)
        self._resume.discard(trial_id)
        _WAITING.discard(trial_id)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        """A promoted waiting trial first (the paper's rule), then a new one; when nothing
        runs and nothing is left to start, the search's end: the waiting ones stop."""
        self._ensure_seeded()
        trials = tune_controller.get_trials()
        for trial in trials:  # a resume made the waiting PENDING: they wait on, paused
            if trial.status == Trial.PENDING and trial.trial_id in self._waiting:
                ray_door.hold_restored(tune_controller, trial)
        for trial in trials:  # (PENDING: promoted before a resume, not started since)
            if trial.status in (Trial.PAUSED, Trial.PENDING) and trial.trial_id in self._resume:
                self._resume.discard(trial.trial_id)
                return trial
        for trial in trials:
            if trial.status == Trial.PENDING:
                return trial
        for trial in trials:  # paused by Ray, not waiting here (a restore's): it goes on
            if trial.status == Trial.PAUSED and trial.trial_id not in self._waiting:
                return trial
        if any(t.status in (Trial.RUNNING, Trial.PENDING) for t in trials):
            return None
        return self._end(tune_controller, trials)

    def _end(self, tune_controller, trials: list[Trial]) -> Trial | None:
        for milestone in self._milestones:  # lowest first: a promotion may climb further
            if self._promote(milestone, final=True):
                return self.choose_trial_to_run(tune_controller)
        for trial in trials:
            if trial.status == Trial.PAUSED and trial.trial_id in self._waiting:
                ray_door.stop_paused(tune_controller, trial)
        return None

    def debug_string(self) -> str:
        return "Promotion ASHA: " + " | ".join(
            f"{m:g}: {len(self._figures[m])} figures, {len(self._promoted[m])} promoted"
            for m in self._milestones
        )


class Limiter(ConcurrencyLimiter):
    """Ray's limit on trials at once, counting the running ones: a waiting trial holds no
    resources and must not keep the searcher from proposing the next."""

    def suggest(self, trial_id: str) -> dict | None:
        if len(self.live_trials - _WAITING) >= self.max_concurrent:
            return None
        suggestion = self.searcher.suggest(trial_id)
        if suggestion not in (None, Searcher.FINISHED):
            self.live_trials.add(trial_id)
            self.num_unfinished_live_trials += 1
        return suggestion
