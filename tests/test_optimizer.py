"""SGD beside AdamW (config.optimizer): plain or with momentum held fixed under the one-cycle
rate, trained alone or fused in a cohort, each member taking its own SGD step."""

import pytest
import torch

from tune_mnist.train.config import ConfigError, TrainConfig
from tune_mnist.train.loop import train
from tune_mnist.train.state import make_state, member_seeds

QUICK = {"epochs": 1, "train_subset": 2000, "test_subset": 1000, "device": "cpu", "threads": 1}


def test_optimizer_and_momentum_are_checked():
    with pytest.raises(ConfigError, match="optimizer='adam' is not known: valid names are adamw"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ConfigError, match="momentum=1.0 is out of range"):
        TrainConfig(optimizer="sgd", momentum=1.0)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_holds_its_momentum_while_the_rate_cycles(momentum):
    config = TrainConfig(optimizer="sgd", momentum=momentum, max_lr=0.1, epochs=2)
    state = make_state(config, torch.device("cpu"), 1280)  # 10 steps an epoch
    assert isinstance(state.optimizer, torch.optim.SGD)
    rates = []
    for _ in range(20):
        state.optimizer.step()
        state.scheduler.step()
        group = state.optimizer.param_groups[0]
        assert group["momentum"] == momentum  # never overwritten by the one-cycle schedule
        rates.append(group["lr"])
    assert max(rates) == pytest.approx(0.1, rel=0.05) and rates[-1] < 0.01 < rates[0]


def test_adamw_stays_the_default_and_keeps_its_cycled_beta():
    state = make_state(TrainConfig(epochs=1), torch.device("cpu"), 1280)
    assert isinstance(state.optimizer, torch.optim.AdamW)
    betas = []
    for _ in range(10):
        state.optimizer.step()
        state.scheduler.step()
        betas.append(state.optimizer.param_groups[0]["betas"][0])
    assert min(betas) < 0.9 < max(betas)  # torch's default beta1 cycle, as before


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_learns_with_and_without_momentum(mnist, momentum):
    """63 steps of batch 32 (the public 3,762-parameter net's recipe is plain SGD, batch 32)."""
    config = TrainConfig(arch="lean", optimizer="sgd", momentum=momentum, max_lr=0.1, **QUICK)
    result = train(config.replace(batch_size=32, seed=3), mnist)[0]
    assert result.status == "completed" and result.history[0]["test_acc"] > 30  # chance: 10


def test_each_cohort_member_takes_its_own_sgd_step(mnist):
    """A calm rate (0.01): see test_cohort's one_epoch for why fusion is tested calm."""
    config = TrainConfig(
        arch="lean", optimizer="sgd", momentum=0.9, max_lr=0.01, dropout=0.0, **QUICK, seed=3
    )
    fused = train(config.replace(cohort=2), mnist)
    for seed, member in zip(member_seeds(config.replace(cohort=2)), fused, strict=True):
        single = train(config.replace(seed=seed), mnist)[0]
        mine, theirs = member.history[0], single.history[0]
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-3)
        assert mine["test_acc"] == pytest.approx(theirs["test_acc"], abs=0.2)
