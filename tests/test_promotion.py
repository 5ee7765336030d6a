"""ASHA by promotion (tune_mnist.search.promotion), driven with stand-in trials: what waits,
what goes on, the quota, the search's end, a resume's rebuilt rungs and the concurrency
limit. The search tests run it inside Ray Tune for real."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from tune_mnist.search import promotion
from tune_mnist.search.promotion import Limiter, PromotionASHA

CONTINUE, PAUSE, STOP = TrialScheduler.CONTINUE, TrialScheduler.PAUSE, TrialScheduler.STOP


class Controller:
    """What the scheduler asks of Ray's TuneController: its trials, and stopping one."""

    def __init__(self, scheduler):
        self.trials, self.scheduler = [], scheduler

    def add(self, trial_id: str, status: str = "RUNNING"):
        trial = SimpleNamespace(trial_id=trial_id, status=status)
        self.trials.append(trial)
        return trial

    def get_trials(self):
        return self.trials

    def _set_trial_status(self, trial, status):
        trial.status = status

    def stop_trial(self, trial):
        self.scheduler.on_trial_remove(self, trial)
        trial.status = "TERMINATED"


def scheduler(milestones=(1.0, 4.0), max_t=16.0, factor=4, samples=None, deferred=False):
    return PromotionASHA(
        "level",
        list(milestones),
        max_t,
        factor,
        metric="val_acc",
        mode="max",
        samples=samples,
        deferred=deferred,
    )


def arrive(asha, controller, trial, acc, level=1.0):
    decision = asha.on_trial_result(controller, trial, {"level": level, "val_acc": acc})
    trial.status = "PAUSED" if decision == PAUSE else trial.status
    return decision


def test_a_rung_promotes_at_most_a_quarter_of_what_it_has_seen_even_when_each_is_better():
    """Trials that improve one after another (a model-based sampler's way) are the case
    where Ray's ASHA promotes most of them; by promotion a rung keeps floor(n / 4)."""
    asha, ray_asha = scheduler(), ASHAScheduler(max_t=16, grace_period=1, reduction_factor=4)
    ray_asha.set_search_properties("val_acc", "max")
    controller = Controller(asha)
    controller.add("busy")  # a trial still training: the search has not reached its end
    ours = theirs = 0
    for i in range(16):
        trial = controller.add(f"t{i:02d}")
        ours += arrive(asha, controller, trial, 90.0 + i) == CONTINUE
        resumed = asha.choose_trial_to_run(controller)  # a waiting one promoted since
        if resumed is not None:
            resumed.status, ours = "RUNNING", ours + 1
        ray_asha.on_trial_add(controller, trial)
        result = {"training_iteration": 1, "val_acc": 90.0 + i}
        theirs += ray_asha.on_trial_result(controller, trial, result) == CONTINUE
    assert ours == 16 // 4
    assert theirs > 2 * ours  # measured side by side: Ray's promotes nearly every one


def test_the_first_arrivals_wait_until_the_quota_lets_the_best_go_on():
    asha = scheduler()
    controller = Controller(asha)
    trials = [controller.add(f"t{i}") for i in range(4)]
    for trial, acc in zip(trials[:3], (97, 99, 98), strict=True):
        assert arrive(asha, controller, trial, acc) == PAUSE
    assert asha.choose_trial_to_run(controller) is None  # t3 still runs: wait for it
    assert arrive(asha, controller, trials[3], 96.0) == PAUSE  # 4 figures: the best, t1
    assert asha.choose_trial_to_run(controller) is trials[1]
    trials[1].status = "RUNNING"
    assert asha.choose_trial_to_run(controller) is None  # the quota of one is spent
    # the promoted trial's next reports: mid-rung (nothing to judge), then its next rung
    assert arrive(asha, controller, trials[1], 98.5, level=1.0) == CONTINUE
    assert arrive(asha, controller, trials[1], 99.1, level=4.0) == PAUSE
    assert asha.on_trial_result(controller, trials[1], {"level": 16.0, "val_acc": 99}) == STOP


def test_the_end_stops_the_waiting_and_a_rung_without_a_promotion_promotes_its_best():
    asha = scheduler()
    controller = Controller(asha)
    a, b = controller.add("a"), controller.add("b")
    arrive(asha, controller, a, 98.0)
    arrive(asha, controller, b, 98.7)
    assert asha.choose_trial_to_run(controller) is b  # nothing runs: every search ends
    b.status = "RUNNING"  # with one full run, its rung's best
    arrive(asha, controller, b, 99.0, level=4.0)
    assert asha.choose_trial_to_run(controller) is b  # and again at the next rung
    b.status = "RUNNING"
    assert asha.on_trial_result(controller, b, {"level": 16.0, "val_acc": 99.2}) == STOP
    b.status = "TERMINATED"
    assert asha.choose_trial_to_run(controller) is None
    assert a.status == "TERMINATED"  # stopped at its rung: the search can end


def test_a_new_trial_is_never_started_past_a_promoted_one_and_pending_ones_start():
    asha = scheduler()
    controller = Controller(asha)
    pending = controller.add("p", status="PENDING")
    assert asha.choose_trial_to_run(controller) is pending
    foreign = controller.add("q", status="PAUSED")  # paused by Ray (a restore): goes on
    pending.status = "RUNNING"
    assert asha.choose_trial_to_run(controller) is foreign


def test_a_resumed_search_rebuilds_its_rungs_from_the_recorded_reports():
    """The same arrivals give the same decisions whether or not the scheduler was rebuilt
    from the journal half way (a --resume builds a fresh one)."""
    levels = {"a": [0.0, 1.0, 1.0, 4.0], "b": [1.0], "c": [1.0], "d": [1.0]}
    accs = {"a": [95, 99, 98, 99.2], "b": [97], "c": [96], "d": [98]}
    reports = {
        t: [{"level": lv, "val_acc": v} for lv, v in zip(levels[t], accs[t], strict=True)]
        for t in levels
    }
    rebuilt = scheduler()
    rebuilt.seed(reports, ended={"c"})
    assert rebuilt._figures[1.0] == {"a": 99, "b": 97, "c": 96, "d": 98}
    assert rebuilt._promoted[1.0] == {"a"} and rebuilt._figures[4.0] == {"a": 99.2}
    assert set(rebuilt._waiting) == {"a", "b", "d"}  # c ended at its rung
    assert promotion._WAITING == {"a", "b", "d"}


@pytest.mark.parametrize("waiting", [set(), {"x"}])
def test_the_concurrency_limit_counts_running_trials_not_waiting_ones(waiting, monkeypatch):
    class Proposer(Searcher):
        def suggest(self, trial_id):
            return {"lr": 0.1}

        def on_trial_complete(self, trial_id, result=None, error=False):
            pass

    limiter = Limiter(Proposer(metric="val_acc", mode="max"), max_concurrent=1)
    assert limiter.suggest("x") == {"lr": 0.1}
    monkeypatch.setattr(promotion, "_WAITING", waiting)
    assert (limiter.suggest("y") is not None) == bool(waiting)


def test_a_trial_that_can_never_be_promoted_stops_at_once_so_optuna_learns_its_figure():
    """8 trials, a quarter promoted at most: 2 at the first rung. A waiting trial that two
    figures beat is hopeless, and stops (itself, or paused, through Ray) instead of waiting."""
    asha = scheduler(samples=8)
    controller = Controller(asha)
    controller.add("busy")
    worst = controller.add("worst")
    assert arrive(asha, controller, worst, 90.0) == PAUSE  # one figure: it may yet go on
    good = controller.add("good")
    assert arrive(asha, controller, good, 99.0) == PAUSE
    assert worst.status == "PAUSED"
    better = controller.add("better")
    assert arrive(asha, controller, better, 99.5) == PAUSE
    assert worst.status == "TERMINATED"  # two beat it: stopped through Ray's controller
    low = controller.add("low")
    assert arrive(asha, controller, low, 80.0) == STOP  # hopeless on arrival
    assert set(asha._waiting) == {"good"}  # 4 figures: a quota of one, the best goes on
    assert asha.choose_trial_to_run(controller) is better


def test_deferred_promotion_waits_for_every_arrival_then_promotes_the_best_quarter():
    """Improving arrivals (a learning sampler's): greedily the first ones take the full runs;
    deferred, the rung promotes nothing until nothing is left to start, then its best four."""
    greedy, deferred = scheduler(samples=16), scheduler(samples=16, deferred=True)
    chosen = {}
    for asha in (greedy, deferred):
        controller = Controller(asha)
        busy = controller.add("busy")
        went_on = []
        for i in range(16):
            trial = controller.add(f"t{i:02d}")
            if arrive(asha, controller, trial, 90.0 + i) == CONTINUE:
                went_on.append(trial.trial_id)
            resumed = asha.choose_trial_to_run(controller)
            while resumed is not None:  # each promoted one trains to its end at once
                went_on.append(resumed.trial_id)
                resumed.status = "TERMINATED"
                resumed = asha.choose_trial_to_run(controller)
        busy.status = "TERMINATED"  # nothing runs, nothing is left: the search's end
        resumed = asha.choose_trial_to_run(controller)
        while resumed is not None:
            went_on.append(resumed.trial_id)
            resumed.status = "TERMINATED"
            resumed = asha.choose_trial_to_run(controller)
        chosen[asha is deferred] = went_on
    assert len(chosen[False]) == len(chosen[True]) == 4
    assert sorted(chosen[True]) == ["t12", "t13", "t14", "t15"]  # the best four
    assert chosen[False][0] == "t03"  # greedily, the fourth arrival already went on


def test_deferred_promotion_still_stops_the_hopeless_at_once():
    asha = scheduler(samples=8, deferred=True)  # a quota of two at the first rung
    controller = Controller(asha)
    controller.add("busy")
    for name, acc in (("a", 99.0), ("b", 99.5)):
        assert arrive(asha, controller, controller.add(name), acc) == PAUSE
    assert arrive(asha, controller, controller.add("low"), 80.0) == STOP
    assert asha.choose_trial_to_run(controller) is None  # busy runs: nothing promoted yet


@pytest.mark.parametrize("deferred", [False, True])
def test_a_restored_waiting_trial_is_held_not_started(deferred):
    """A resume makes every unfinished trial PENDING (Ray's resume_unfinished), those waiting
    at a rung too: they are put back to PAUSED, never started, so new trials can be proposed
    and the quota holds; a trial promoted before the kill starts, and its promotion is spent."""
    reports = {
        "a": [{"level": 1.0, "val_acc": 99.0}],
        "b": [{"level": 1.0, "val_acc": 98.0}],
        "c": [{"level": 1.0, "val_acc": 97.0}],
        "d": [{"level": 1.0, "val_acc": 96.0}],
    }
    asha = scheduler(milestones=(1.0, 4.0), deferred=deferred)
    asha.seed(reports, ended=set())
    controller = Controller(asha)
    restored = {t: controller.add(t, status="PENDING") for t in reports}
    new = controller.add("new", status="PENDING")
    chosen = asha.choose_trial_to_run(controller)
    if deferred:  # nothing promoted before the search's end: the new trial goes first
        assert chosen is new
        assert all(restored[t].status == "PAUSED" for t in reports)
        new.status = "TERMINATED"
        chosen = asha.choose_trial_to_run(controller)  # the end: the best quarter, a
    assert chosen is restored["a"]  # greedy: a was promoted before the kill
    assert {t: restored[t].status for t in "bcd"} == dict.fromkeys("bcd", "PAUSED")
    chosen.status = "RUNNING"
    assert "a" not in asha._resume  # at its next rung it waits for that rung's quota
    assert arrive(asha, controller, chosen, 99.1, level=4.0) == PAUSE


def test_each_rungs_ceiling_is_a_share_of_the_one_before_and_at_least_one():
    from tune_mnist.search import rungs

    assert rungs.quotas(64, 4, 2) == [16, 4] and rungs.quotas(64, 3, 3) == [21, 7, 2]
    assert rungs.quotas(3, 4, 2) == [1, 1]  # the search's end promotes one
    asha = scheduler(milestones=(1.0, 4.0), factor=4, samples=64)
    assert [asha._ceiling(m) for m in (1.0, 4.0)] == rungs.quotas(64, 4, 2)
