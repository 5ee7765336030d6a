"""The fidelity study's pieces that decide its figures: a WSD job's branches, the cost of a
design, successive halving over measured figures, and the top-third count."""

import pandas as pd
import pytest

from tune_mnist.study import designs
from tune_mnist.study.fidelity_runs import Job, run_job
from tune_mnist.train.config import TrainConfig


def test_a_design_costs_its_rungs_and_a_wsd_design_continues_its_trunk():
    # 9 configurations, a third kept: 9 x 3/15 + 3 x 1 = 4.8 of 9 full runs
    assert designs.design_cost(["compressed3", "full"], [9, 3]) == pytest.approx(4.8 / 9)
    # WSD: 9 trunks to 3 + a cool-down epoch, 3 go on to 15 from their epoch 3
    assert designs.design_cost(["wsd3", "full"], [9, 3]) == pytest.approx((9 * 4 + 3 * 12) / 135)


def test_successive_halving_keeps_the_best_at_each_rung_and_scores_the_pick():
    acc = pd.DataFrame(
        {
            "compressed3": [99.0, 98.9, 98.8, 98.7, 98.6, 98.5],
            "full": [99.40, 99.50, 99.30, 99.20, 99.45, 99.10],
        }
    )
    row = designs.simulate(acc, ["compressed3", "full"], 3)
    assert row["cost"] == pytest.approx((6 * 0.2 + 2) / 6)  # the 2 best by 3 epochs go on
    assert row["best reaches full"] and row["regret (points)"] == 0.0
    assert row["top third kept at rung 1"] == "1/2"  # 99.50 kept, 99.45 not
    assert designs.kept(acc["compressed3"], acc["full"]) == (1, 2)


def test_a_wsd_job_branches_its_trunk_at_each_rung(small):
    config = TrainConfig(arch="tiny", width1=4, width2=6, width3=8, val_size=500, device="cpu")
    rows = run_job(Job("s", "t", "wsd", config), small.subset(1000, 200), smoke=False)
    by = {r["fidelity"]: r for r in rows}
    assert set(by) == {"wsd5", "wsd3"}
    assert (by["wsd5"]["epochs"], by["wsd3"]["epochs"]) == (6, 4)
    assert by["wsd3"]["branch_s"] > 0 and by["wsd3"]["train_s"] < by["wsd5"]["train_s"]
    assert by["wsd3"]["nominal_cost"] == pytest.approx(4 / 15)
    assert all(r["schedule"] == "wsd" and r["job"] == "s/t/wsd/seed0" for r in rows)
