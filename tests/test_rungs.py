"""Low fidelities (tune_mnist.fidelity), a search's rungs (tune_mnist.search.rungs), and the
warmup-stable-decay schedule whose branches continue its trunk exactly."""

import copy
import math

import pytest
import torch

from tune_mnist.fidelity import config_at, nominal_cost, parse
from tune_mnist.search import rungs
from tune_mnist.search.space import SpaceError
from tune_mnist.search.space_file import load_space
from tune_mnist.search.summary import full_fidelity
from tune_mnist.train.config import ConfigError, TrainConfig
from tune_mnist.train.loop import train
from tune_mnist.train.state import make_state

FULL15 = TrainConfig(arch="tiny", epochs=15, clean_epochs=3)


def test_a_compressed_fidelity_is_the_whole_schedule_in_fewer_epochs():
    three = config_at(FULL15, "compressed3", 55_000)
    assert (three.epochs, three.clean_epochs, three.schedule) == (3, 1, "onecycle")
    assert config_at(FULL15, "compressed2", 55_000).clean_epochs == 0  # 3 * 2 / 15 rounds to 0
    assert nominal_cost(FULL15, "compressed3") == pytest.approx(0.2)
    assert config_at(FULL15, "full", 55_000) == FULL15


def test_a_subset_fidelity_keeps_the_schedule_on_fewer_images():
    quarter = config_at(FULL15, "subset25", 55_000)
    assert (quarter.train_subset, quarter.epochs, quarter.clean_epochs) == (13_750, 15, 3)
    assert nominal_cost(FULL15, "subset25") == 0.25


@pytest.mark.parametrize("name", ["compressed", "half", "subset0", "subset101", "wsd0", ""])
def test_an_unknown_fidelity_is_refused_by_name(name):
    with pytest.raises(ConfigError, match="fidelity"):
        parse(name)


SETTINGS = {"epochs": 15, "reduction_factor": 3}


def test_a_trials_rungs_follow_each_other_and_count_every_epoch():
    plan = rungs.plan(FULL15, {**SETTINGS, "rungs": ["compressed3", "compressed5", "full"]}, 55_000)
    assert [(r.fidelity, r.epochs, r.offset) for r in plan] == [
        ("compressed3", 3, 0),
        ("compressed5", 5, 3),
        ("full", 15, 8),
    ]
    assert rungs.trial_epochs({**SETTINGS, "rungs": ["compressed3", "compressed5", "full"]}) == 23
    assert rungs.trial_epochs(SETTINGS) == 15  # no rungs: the full run alone
    assert not rungs.staged(SETTINGS)


def test_asha_reads_a_level_that_only_reaches_a_milestone_at_a_rungs_end():
    settings = {**SETTINGS, "rungs": ["compressed3", "compressed5", "full"]}
    during = [rungs.level(settings, r, done=False) for r in range(3)]
    ends = [rungs.level(settings, r, done=True) for r in range(3)]
    assert during == [0, 1, 3] and ends == [1, 3, 9]  # milestones 1, 3, 9: grace 1, factor 3
    assert rungs.max_level(settings) == 9


@pytest.mark.parametrize(
    "listed, why",
    [
        (["compressed3"], "ending in full"),
        (["full", "compressed3"], "ending in full"),
        (["compressed15", "full"], "fewer epochs"),
        (["compressed5", "compressed3", "full"], "cost more"),
        (["wsd3", "full"], "compressed<E>, subset<P>, full"),
        (["quarter", "full"], "not known"),
        ("compressed3", "ending in full"),
    ],
)
def test_a_space_with_rungs_it_cannot_run_is_refused_in_one_line(tmp_path, listed, why):
    path = tmp_path / "space.yaml"
    path.write_text(f"settings: {{rungs: {listed!r}}}\narch: {{super_light: {{}}}}\n")
    with pytest.raises(SpaceError, match=why):
        load_space(path)


def test_the_shipped_spaces_with_rungs_load():
    space = load_space("search_spaces/default.yaml")
    rungs.check(space.settings)
    assert space.settings["rungs"] is None or space.settings["rungs"][-1] == "full"


def test_the_full_fidelity_share_is_the_trained_over_the_full_core_seconds():
    import pandas as pd

    trials = pd.DataFrame(
        {
            "status": ["completed", "asha_stopped", "asha_stopped", "over_budget", "diverged"],
            "train_s": [150.0, 30.0, 30.0, 0.0, 9.0],
            "full_fidelity_s": [100.0, 100.0, 100.0, 0.0, 100.0],
            "threads": [1, 1, 1, 1, 1],
        }
    )
    share, spent, full, judged = full_fidelity(trials)
    assert (spent, full, judged) == (210.0, 300.0, 3)  # diverged and over budget: not judged
    assert share == pytest.approx(0.7)
    assert math.isnan(full_fidelity(trials[trials.status == "over_budget"])[0])


WSD = dict(arch="tiny", width1=4, width2=6, width3=8, schedule="wsd", device="cpu", seed=3)


def test_wsd_warms_up_holds_the_peak_then_decays_to_zero_over_its_last_fifth():
    config = TrainConfig(**WSD, epochs=10, batch_size=500, max_lr=0.01)
    state = make_state(config, torch.device("cpu"), 2000)  # 4 steps an epoch
    rates = []
    for _ in range(40):
        rates.append(state.scheduler.get_last_lr()[0])
        state.optimizer.step()
        state.scheduler.step()
    assert rates[0] == pytest.approx(0.01 / 25) and rates[3] < 0.01  # one warm-up epoch
    assert rates[4:32] == [pytest.approx(0.01)] * 28  # held through epoch 8
    assert rates[32] == pytest.approx(0.01) and rates[33] < rates[32]  # epochs 9-10 decay
    decay = rates[32:]
    assert decay[-1] < 0.01 * 0.6 and decay == sorted(decay, reverse=True)


def test_a_wsd_branch_off_a_longer_trunk_is_the_shorter_run_bit_for_bit(small):
    """What a rung of cool-down branches rests on: epochs before the cool-down do not depend
    on the run's length, so the study's branch at 2 is the 3-epoch run itself."""
    trunk_config = TrainConfig(**WSD, epochs=4, clean_epochs=1, rotate_deg=10.0)
    saved = {}

    def keep(metrics, state):
        if state.epoch == 2:  # a copy: the trunk trains on in the same tensors
            saved.update(copy.deepcopy(state.state_dict()))

    train(trunk_config, small, on_epoch=keep)
    short = trunk_config.replace(epochs=3)
    trained = []
    branch = train(short, small, on_epoch=lambda m, s: trained.append(m["epoch"]), resume=saved)[0]
    assert trained == [3]  # the branch trained its cool-down epoch alone
    straight = train(short, small)[0]
    assert [m["test_acc"] for m in branch.history] == [m["test_acc"] for m in straight.history]
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(branch.model.state_dict()[name], tensor), name


@pytest.mark.parametrize("budget", [8000, 4000, 3000])
def test_the_default_space_shaped_to_a_budget_wastes_at_most_a_fifth_of_its_draws(budget):
    from pathlib import Path

    from tune_mnist.search.budget import MAX_OVER, over_budget_share, shaped_file

    path, factor = shaped_file(Path("search_spaces/default.yaml"), budget)
    space = load_space(path)
    assert space.settings["max_params"] == budget
    assert factor == pytest.approx((budget / 8000) ** 0.5)
    assert over_budget_share(space, draws=200) <= MAX_OVER
    if budget < 4262:  # the reference three are fixed at 4,262-4,836 parameters
        assert set(space.branches) == {"tiny", "lean", "lean-late"} and not space.points


def test_a_budget_no_architecture_fits_is_refused(tmp_path):
    from tune_mnist.search.budget import shaped_doc

    doc = {"settings": {"max_params": 8000}, "arch": {"super_light": {}}}
    with pytest.raises(SpaceError, match="no architecture"):
        shaped_doc(doc, 1000)


def test_the_eta_counts_the_epochs_left_not_the_trials():
    from tune_mnist.search.eta import epochs_left
    from tune_mnist.search.journal import TrialRecord

    settings = {**SETTINGS, "rungs": ["compressed3", "compressed5", "full"]}
    # before any trial started: 4 first rungs, then each rung's quota, floor(n / 3) of the
    # n the rung below sends, at least one: 4 -> 1 -> 1
    assert epochs_left({}, {}, 4, settings) == pytest.approx(4 * 3 + 5 + 15)
    over = TrialRecord("o", results=[{"over_budget": True}], ended="TERMINATED")
    stopped = TrialRecord("s", results=[{"epoch": e} for e in (1, 2, 3)], ended="TERMINATED")
    full = TrialRecord("f", results=[{"epoch": e} for e in range(1, 24)], ended="TERMINATED")
    running = TrialRecord("r", results=[{"epoch": 1}])
    paused = TrialRecord("p", results=[{"epoch": e} for e in (1, 2, 3)])
    finishing = TrialRecord("z", results=[{"epoch": e} for e in range(1, 11)])
    records = {r.trial_id: r for r in (over, stopped, full, running, paused, finishing)}
    now = {"r": 1, "p": 3, "z": 10}
    # r: 2 more epochs of its first rung; p waits at the first rung's end (no epoch of its
    # own); z is in its full run (13 more); 2 not started, of which one in six (1 of the 6
    # started) would be over budget: 5/3 first rungs. The first rung will hold 5 + 5/3
    # figures: a quota of 2 for the second rung and 1 for the full run, both already taken
    # (f and z)
    left = 2 + 0 + 13 + 2 * (5 / 6) * 3
    assert epochs_left(records, now, 8, settings) == pytest.approx(left)


def test_the_eta_counts_the_promotions_still_owed_however_late_they_come():
    """Promotion at the search's end: 16 trials wait at the first rung and none has trained
    in full yet; the quota (64 / 4) still owes 16 full runs, whoever they go to."""
    from tune_mnist.search.eta import epochs_left
    from tune_mnist.search.journal import TrialRecord

    settings = {"epochs": 15, "reduction_factor": 4, "rungs": ["compressed3", "full"]}
    first_rung = [{"epoch": e} for e in (1, 2, 3)]
    records = {
        **{
            f"s{i}": TrialRecord(f"s{i}", results=first_rung, ended="TERMINATED") for i in range(40)
        },
        **{f"w{i}": TrialRecord(f"w{i}", results=first_rung) for i in range(16)},
    }
    waiting = {t: 3 for t in records if t.startswith("w")}
    assert epochs_left(records, waiting, 64, settings) == pytest.approx(8 * 3 + 16 * 15)
    for i in range(5):  # five of them in full, one still training: 11 full runs owed
        records[f"w{i}"].results = [{"epoch": e} for e in range(1, 19 if i else 8)]
        records[f"w{i}"].ended = "TERMINATED" if i else ""
    waiting["w0"] = 7
    assert epochs_left(records, waiting, 64, settings) == pytest.approx(8 * 3 + 11 + 11 * 15)


def test_the_eta_without_rungs_reads_the_trials_asha_judged():
    from tune_mnist.search.eta import epochs_left
    from tune_mnist.search.journal import TrialRecord

    stopped = TrialRecord("s", results=[{"epoch": e} for e in range(1, 6)], ended="TERMINATED")
    full = TrialRecord("f", results=[{"epoch": e} for e in range(1, 16)], ended="TERMINATED")
    running = TrialRecord("r", results=[{"epoch": 1}])
    records = {r.trial_id: r for r in (stopped, full, running)}
    # judged trials trained 5 and 15 epochs: 10 expected; the running one has 9 left
    assert epochs_left(records, {"r": 1}, 5, SETTINGS) == pytest.approx(9 + 2 * 10)
