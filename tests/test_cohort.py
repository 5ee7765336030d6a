"""Cohort training: K seeds as one fused network train as K single runs would."""

import pytest
import torch
from test_pinned import ARCHS

from tune_mnist.train.config import ConfigError, TrainConfig
from tune_mnist.train.fuse import unfuse
from tune_mnist.train.loop import member_loss_sums, train
from tune_mnist.train.state import init_member, make_state, member_seeds

QUICK = {"epochs": 1, "train_subset": 2000, "test_subset": 1000, "device": "cpu", "threads": 1}


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_members_start_from_their_own_seeds_weights(name):
    config = TrainConfig.from_dict({**ARCHS[name], "seed": 4, "cohort": 3})
    assert member_seeds(config) == [4, 5, 6]
    state = make_state(config, torch.device("cpu"), 1000)
    for seed, member in zip(member_seeds(config), unfuse(state.model), strict=True):
        single, _ = init_member(config.replace(seed=seed, cohort=1), torch.device("cpu"))
        for key, value in single.state_dict().items():
            assert torch.equal(member.state_dict()[key], value), (seed, key)


def test_batched_eval_loss_equals_member_by_member():
    """The GPU's one-call evaluation loss gives each member what its own call gives."""
    generator = torch.Generator().manual_seed(0)
    output = torch.randn(300, 5, 10, generator=generator) * 3
    labels = torch.randint(0, 10, (300,), generator=generator)
    one_by_one = member_loss_sums(output, labels, batched=False)
    batched = member_loss_sums(output, labels, batched=True)
    assert batched.shape == (5,) and torch.allclose(batched, one_by_one, rtol=1e-6, atol=1e-4)
    second = torch.nn.functional.cross_entropy(output[:, 1], labels, reduction="sum")
    assert one_by_one[1] == second and not torch.allclose(batched[0], batched[1])


FIGURES = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr")


@pytest.mark.parametrize("name", ["lean-all-knobs", "tiny", "loop", "slim"])
def test_on_a_cpu_each_seed_trains_bit_for_bit_as_its_single_run(name, mnist):
    """A CPU runs the members one by one on views of the fused tensors, each drawing dropout
    from its own single run's stream: weights and every figure equal the single runs'."""
    small = {"train_subset": 800, "test_subset": 300, "val_size": 200}  # 2 epochs of 10 steps
    values = {**ARCHS[name], **QUICK, **small, "epochs": 2, "dropout": 0.1}
    config = TrainConfig.from_dict({**values, "seed": 1, "cohort": 2})
    results = train(config, mnist)
    assert [r.status for r in results] == ["completed"] * 2
    for seed, result in zip(member_seeds(config), results, strict=True):
        single = train(config.replace(seed=seed, cohort=1), mnist)[0]
        for mine, theirs in zip(result.history, single.history, strict=True):
            assert {n: mine[n] for n in FIGURES} == {n: theirs[n] for n in FIGURES}
        for key, value in single.model.state_dict().items():
            assert torch.equal(result.model.state_dict()[key], value), key
        assert result.params == single.params


def test_seeds_differ_and_the_metrics_summarise_them(mnist):
    config = TrainConfig(**QUICK, seed=0, cohort=2, val_size=500)
    seen = []
    results = train(config, mnist, on_epoch=lambda m, s: seen.append(m))
    metrics = seen[0]
    accs = metrics["val_acc_seeds"]
    assert len(accs) == 2 and metrics["val_acc"] == pytest.approx(sum(accs) / 2)
    assert metrics["val_acc_min"] == min(accs) and metrics["seeds"] == [0, 1]
    assert results[0].history[0]["val_acc"] == accs[0]
    assert results[0].history[0]["train_loss"] != results[1].history[0]["train_loss"]


def test_a_resumed_cohort_continues_where_it_stopped(mnist):
    config = TrainConfig(**{**QUICK, "epochs": 2, "train_subset": 1000}, seed=2, cohort=2)
    straight = train(config, mnist)
    saved = {}

    def stop_after_one(metrics, state):
        saved.update(state.state_dict())
        return True

    train(config, mnist, on_epoch=stop_after_one)
    resumed = train(config, mnist, resume=saved)
    for a, b in zip(straight, resumed, strict=True):
        assert [m["epoch"] for m in b.history] == [1, 2]
        for key, value in a.model.state_dict().items():
            assert torch.equal(b.model.state_dict()[key], value), key


def test_cohort_range():
    with pytest.raises(ConfigError, match="cohort"):
        TrainConfig(cohort=0)


def test_cli_trains_a_cohort_and_saves_one_model_per_seed(tmp_path, mnist, capsys):
    from tune_mnist import load_model
    from tune_mnist.train.command import main
    from tune_mnist.train.loop import evaluate
    from tune_mnist.train.modelfile import read_model_file

    args = ["--arch", "super_light", "--epochs", "1", "--train-subset", "1000"]
    args += ["--test-subset", "500", "--device", "cpu", "--threads", "1"]
    assert main([*args, "--seed", "3", "--seeds", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "min" in out and "seed 3: completed" in out and "seed 4: completed" in out
    for seed in (3, 4):
        path = tmp_path / f"seed{seed}.pt"
        model = load_model(path)
        assert model.config.seed == seed and model.config.cohort == 1
        _, acc = evaluate(model, mnist.test_x[:500], mnist.test_y[:500])
        assert acc == pytest.approx(read_model_file(path)["extra"]["final_test_acc"])
    for bad in (["--seeds", "1,3"], ["--seeds", "0"], ["--seeds", "2", "--cohort", "2"]):
        assert main([*args, *bad]) == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_bench_fused_prints_rates_as_ratios(monkeypatch, capsys, mnist):
    from searchutil import ROOT

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from bench_fused import main as bench_main

    assert bench_main(["--smoke", "--threads", "1", "--sizes", "1,2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "2,560 images" in lines[0] and len(lines) == 3
    assert (
        "K=1" in lines[1]
        and "eager" in lines[1]
        and "x1.00 the eager K=1 rate" in lines[1]
        and "K=2" in lines[2]
    )
    assert bench_main(["--sizes", "0"]) == 2 and bench_main(["--sizes", "x"]) == 2
