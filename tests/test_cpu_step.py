"""The CPU step variants (config.CPU_STEPS): channels-last and bf16 train, resume and are
recorded; a CPU without bfloat16 instructions falls back to fp32 with one line."""

import json
import shutil

import pandas as pd
import pytest
import torch
from searchutil import run_script, space_file

import tune_mnist.machine as machine
import tune_mnist.train.steps as steps_module
from tune_mnist.publish.race_command import race_run
from tune_mnist.results import config_of
from tune_mnist.search.space import SpaceError
from tune_mnist.search.space_file import load_space
from tune_mnist.train.config import (
    CPU_EVAL_BATCH,
    CPU_STEPS,
    DEFAULT_EVAL_BATCH,
    TrainConfig,
    cpu_step_fields,
    cpu_step_of,
)
from tune_mnist.train.fuse import member_state
from tune_mnist.train.loop import train
from tune_mnist.train.state import init_member, make_state

QUICK = {"train_subset": 1500, "test_subset": 300, "device": "cpu", "threads": 1, "epochs": 2}


def _weights(result) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in result.model.state_dict().items()}


@pytest.mark.parametrize("step", list(CPU_STEPS))
def test_each_variant_trains_and_resumes_from_a_checkpoint(mnist, step):
    config = TrainConfig(arch="lean", **QUICK, **CPU_STEPS[step])
    whole = train(config, mnist)[0]
    saved = {}

    def stop_after_one(metrics, state):
        saved.update(state.state_dict())
        return True

    first = train(config, mnist, on_epoch=stop_after_one)[0]
    assert first.status == "stopped" and saved["epoch"] == 1
    resumed = train(config, mnist, resume=saved)[0]
    assert resumed.status == whole.status == "completed"
    assert [m["train_loss"] for m in resumed.history] == [m["train_loss"] for m in whole.history]
    for name, value in _weights(whole).items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert whole.final["test_acc"] > 40  # it learns (chance is 10%)
    native = steps_module.bf16_supported(torch.device("cpu"))
    ran = "bf16" if config.precision == "bf16" and native else "fp32"
    assert {m["precision"] for m in whole.history} == {ran}


def test_channels_last_moves_the_layout_not_the_initial_weights():
    plain, _ = init_member(TrainConfig(arch="lean"), torch.device("cpu"))
    config = TrainConfig(arch="lean", channels_last=True)
    nhwc = make_state(config, torch.device("cpu"), 1000).model  # what the run trains
    pairs = zip(plain.state_dict().items(), member_state(nhwc, 0).values(), strict=True)
    for (name, a), b in pairs:
        assert torch.equal(a, b), name  # the pinned initial weights hold
    convs = [p for p in nhwc.parameters() if p.dim() == 4 and p.shape[1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not all(p.is_contiguous() for p in convs)


def test_bf16_on_a_cpu_without_it_falls_back_to_fp32_with_one_line(mnist, monkeypatch, capfd):
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    steps_module._say_once.cache_clear()
    config = TrainConfig(arch="lean", **{**QUICK, "epochs": 1})
    asked = train(config.replace(precision="bf16"), mnist)[0]
    lines = [line for line in capfd.readouterr().err.splitlines() if line]
    assert len(lines) == 1 and "no bfloat16 instructions" in lines[0] and "fp32" in lines[0]
    assert asked.history[0]["precision"] == "fp32"
    fp32 = train(config, mnist)[0]  # the fall-back is the fp32 run, bit for bit
    assert asked.history[0]["train_loss"] == fp32.history[0]["train_loss"]
    train(config.replace(precision="bf16"), mnist)[0]
    assert capfd.readouterr().err == ""  # said once per process, not every run
    steps_module._say_once.cache_clear()


def test_a_space_resolves_its_cpu_step_and_a_field_it_sets_wins(tmp_path):
    base = space_file(tmp_path).read_text()
    plain = load_space(space_file(tmp_path))
    config = plain.train_config({"arch": "super_light"}, device="cpu", threads=1)
    assert cpu_step_of(config) == "plain"  # no setting: the step every older search ran
    auto = tmp_path / "auto.yaml"
    auto.write_text(base.replace("val_size: 1000}", "val_size: 1000, cpu_step: auto}"))
    space = load_space(auto)
    assert space.train_config({"arch": "super_light"}, device="cpu").channels_last
    assert not space.train_config({"arch": "super_light"}, device="cuda").channels_last
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(
        auto.read_text().replace("fixed: {batch_size: 64}", "fixed: {channels_last: false}")
    )
    fixing = load_space(fixed)  # Ray hands a trial the space's constants with its samples
    assert not fixing.train_config({"arch": "super_light", **fixing.fixed}).channels_last
    bad = tmp_path / "bad.yaml"
    bad.write_text(base.replace("val_size: 1000}", "val_size: 1000, cpu_step: fast}"))
    with pytest.raises(SpaceError, match="settings.cpu_step: 'fast'; allowed: auto, plain"):
        load_space(bad)
    assert cpu_step_fields("auto", "cpu") == CPU_STEPS["channels_last"]


def test_new_cpu_runs_evaluate_in_cache_sized_batches_and_old_rows_as_they_ran(tmp_path):
    space = load_space(space_file(tmp_path))
    assert space.train_config({"arch": "tiny"}, device="cpu").eval_batch == CPU_EVAL_BATCH
    assert space.train_config({"arch": "tiny"}, device="cuda").eval_batch == DEFAULT_EVAL_BATCH
    fixing = {"arch": "tiny", "eval_batch": 64}  # a space that fixes it wins
    assert space.train_config(fixing, device="cpu").eval_batch == 64
    # a race runs on a CPU, whatever its trial ran on
    raced = race_run(TrainConfig(arch="tiny", device="cuda"), seed=3, split=3)
    assert raced.eval_batch == CPU_EVAL_BATCH and (raced.seed, raced.device) == (3, "cpu")
    # a row written before the field rebuilds as it ran: 5,000 a pass
    row = TrainConfig(arch="tiny").to_dict()
    del row["eval_batch"]
    assert config_of(row).eval_batch == DEFAULT_EVAL_BATCH == 5000


@pytest.mark.slow
def test_search_rows_record_the_variant_and_retrain_can_override_it(smoke_search, tmp_path):
    folder, stdout = smoke_search  # searched with --cpu-step auto (conftest)
    assert "CPU step: channels_last" in stdout
    trials = pd.read_parquet(folder / "trials.parquet")
    trained = trials[trials["epochs_run"] > 0]
    assert len(trained) and trained["channels_last"].all()
    assert (trained["precision"] == "fp32").all()
    epochs = pd.read_parquet(folder / "epochs.parquet")
    assert set(epochs["precision"]) == {"fp32"}
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    confirmed = copy / "confirmations.parquet"  # (none yet: the shared search is read-only)
    before = len(pd.read_parquet(confirmed)) if confirmed.is_file() else 0
    done = run_script("retrain_best.py", "--results", str(copy), "--smoke", "--cpu-step", "plain")
    assert done.returncode in (0, 1), done.stderr[-2000:]  # 1 epoch may not pass: no error
    rows = pd.read_parquet(confirmed)
    new = rows[rows["confirmed_at"] == rows["confirmed_at"].max()]
    assert len(new) == 1 and len(rows) <= before + 1  # a seed confirmed again supersedes
    assert not new["channels_last"].any() and (new["precision"] == "fp32").all()
    card = copy / "confirmed" / str(new["trial_id"].iloc[0]) / "model_card.json"
    assert "--cpu-step plain" in json.loads(card.read_text())["reproduce"]


@pytest.mark.slow
def test_the_benchmark_prints_a_ratio_for_every_variant_of_both_models():
    done = run_script("bench_cpu_step.py", "--smoke")
    assert done.returncode == 0, done.stderr[-2000:]
    tables = done.stdout.split("\n\n")[1:]
    assert len(tables) == 2 and "super_light" in tables[0] and "2,992" in tables[1]
    for table in tables:
        assert "| plain |" in table and "| 1.00x |" in table and "| channels_last |" in table
