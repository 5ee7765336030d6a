import subprocess
import sys

import pytest
import torch

from tune_mnist import load_model
from tune_mnist.train.config import TrainConfig
from tune_mnist.train.loop import evaluate, train

QUICK = dict(arch="super_light", train_subset=2000, test_subset=1000, device="cpu")


def quick(**changes):
    return TrainConfig(**{**QUICK, "epochs": 2, **changes})


def test_training_lowers_the_loss(mnist):
    result = train(quick(epochs=3), mnist)[0]
    losses = [m["train_loss"] for m in result.history]
    assert result.status == "completed" and len(losses) == 3
    assert losses[-1] < 0.6 * losses[0]
    assert result.final["test_acc"] > 50  # chance is 10%


def test_deterministic_by_seed(mnist):
    a = train(quick(seed=5), mnist)[0].history
    b = train(quick(seed=5), mnist)[0].history
    c = train(quick(seed=6), mnist)[0].history
    strip = [{k: v for k, v in m.items() if k != "epoch_s"} for m in a]
    assert strip == [{k: v for k, v in m.items() if k != "epoch_s"} for m in b]
    assert a[-1]["train_loss"] != c[-1]["train_loss"]


def test_callback_sees_every_epoch_and_can_stop(mnist):
    seen = []

    def on_epoch(metrics, state):
        seen.append(metrics["epoch"])
        return metrics["epoch"] == 2

    result = train(quick(epochs=4), mnist, on_epoch=on_epoch)[0]
    assert seen == [1, 2] and result.status == "stopped"
    keys = {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_s", "params"}
    assert keys <= set(result.final)


@pytest.mark.parametrize("ema_decay", [0.0, 0.99])
def test_resume_from_state_matches_an_uninterrupted_run(mnist, ema_decay):
    config = quick(epochs=3, rotate_deg=15.0, ema_decay=ema_decay)
    saved = {}

    def stop_after_one(metrics, state):
        saved.update(state.state_dict())
        return True

    train(config, mnist, on_epoch=stop_after_one)[0]
    resumed = train(config, mnist, resume=saved)[0].history
    straight = train(config, mnist)[0].history
    assert [m["epoch"] for m in resumed] == [1, 2, 3]
    assert resumed[-1]["test_acc"] == straight[-1]["test_acc"]
    # the 3-epoch mean ASHA may use spans the resume (history travels in the checkpoint)
    assert resumed[-1]["test_acc_avg3"] == pytest.approx(sum(m["test_acc"] for m in straight) / 3)
    assert straight[0]["test_acc_avg3"] == straight[0]["test_acc"]
    assert resumed[-1]["train_loss"] == pytest.approx(straight[-1]["train_loss"], rel=1e-6)


def test_ema_weights_are_the_ones_evaluated_and_returned(mnist):
    plain = train(quick(seed=3), mnist)[0]
    averaged = train(quick(seed=3, ema_decay=0.99), mnist)[0]
    # same raw training (the average only watches), different weights evaluated
    assert averaged.history[-1]["train_loss"] == plain.history[-1]["train_loss"]
    assert averaged.final["test_acc"] != plain.final["test_acc"]
    data = mnist.subset(0, 1000)
    assert evaluate(averaged.model, data.test_x, data.test_y)[1] == averaged.final["test_acc"]
    raw, avg = plain.model.state_dict(), averaged.model.state_dict()
    assert raw.keys() == avg.keys()  # loads into a plain model: saved files stay the same kind
    assert not torch.equal(raw["block2.2.0.weight"], avg["block2.2.0.weight"])


def test_clean_epochs_train_the_last_epochs_on_unwarped_images(mnist, monkeypatch):
    import tune_mnist.train.loop as core

    seen = []
    real = core.train_epoch
    monkeypatch.setattr(
        core,
        "train_epoch",
        lambda c, s, d, spec, steps: seen.append(spec.on) or real(c, s, d, spec, steps),
    )
    train(quick(epochs=3, clean_epochs=1, rotate_deg=15.0), mnist)[0]
    assert seen == [True, True, False]
    seen.clear()
    train(quick(epochs=2, clean_epochs=5, rotate_deg=15.0), mnist)[0]  # more than epochs: all
    assert seen == [False, False]


def test_absurd_learning_rate_ends_as_diverged(mnist):
    config = quick(max_lr=1e4, weight_decay=0.0, pct_start=0.01, epochs=3, train_subset=500)
    result = train(config, mnist)[0]
    assert result.status == "diverged" and len(result.history) == 1
    assert result.final["diverged"] is True


def test_nan_loss_ends_as_diverged(mnist, monkeypatch):
    real = torch.nn.functional.cross_entropy

    def poisoned(*args, **kwargs):
        return real(*args, **kwargs) * float("nan")

    monkeypatch.setattr("tune_mnist.train.loop.F.cross_entropy", poisoned)
    result = train(quick(train_subset=300, test_subset=100), mnist)[0]
    assert result.status == "diverged" and len(result.history) == 1


def test_cli_trains_saves_and_reloads(tmp_path, mnist):
    out = tmp_path / "m.pt"
    command = [
        sys.executable,
        "-m",
        "tune_mnist.train.command",
        "--epochs",
        "1",
        "--train-subset",
        "1000",
        "--test-subset",
        "500",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "epoch  1/1" in done.stdout and "saved" in done.stdout
    payload = torch.load(out, weights_only=True)
    model = load_model(out)
    assert not model.training
    _, acc = evaluate(model, mnist.test_x[:500], mnist.test_y[:500])
    assert acc == pytest.approx(payload["extra"]["final_test_acc"])


def test_cli_bad_value_is_one_line_exit_2():
    command = [sys.executable, "-m", "tune_mnist.train.command", "--dropout", "-1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "dropout" in done.stderr


@pytest.mark.parametrize("case", ["under_a_file", "a_folder", "cohort_on_a_file"])
def test_an_unwritable_out_fails_before_training(tmp_path, case, capsys):
    from tune_mnist.train.command import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    out, more = {
        "under_a_file": (blocker / "m.pt", []),
        "a_folder": (tmp_path, []),
        "cohort_on_a_file": (blocker, ["--seeds", "2"]),
    }[case]
    assert main(["--epochs", "1", "--train-subset", "1000", "--out", str(out), *more]) == 2
    seen = capsys.readouterr()
    assert seen.err.startswith("error: --out") and seen.err.count("\n") == 1
    assert seen.out == ""  # refused before the data was read or a model built
    assert blocker.read_text() == "x"


def test_ctrl_c_is_one_line_and_saves_nothing(tmp_path, monkeypatch, capsys):
    import tune_mnist.train.command as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "train", interrupted)
    out = tmp_path / "m.pt"
    assert cli.main(["--epochs", "1", "--train-subset", "1000", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted") and err.count("\n") == 1 and not out.exists()


def test_a_one_step_warm_up_is_one_line_exit_2(capsys):
    from tune_mnist.train.command import main

    # 512 images, batch 128, 1 epoch: 4 steps, a quarter of them warm-up = exactly 1 step
    args = ["--epochs", "1", "--train-subset", "512", "--test-subset", "100", "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 4 steps") and err.count("\n") == 1


def test_each_epoch_line_says_how_long_the_run_has_left(capsys):
    from tune_mnist.train.loop import print_epoch

    metrics = {"epoch": 3, "lr": 0.01, "train_loss": 0.1, "train_acc": 97.0}
    metrics |= {"test_loss": 0.05, "test_acc": 98.0, "epoch_s": 20.0}
    print_epoch(metrics, 15)  # 12 epochs of 20 s to go
    print_epoch({**metrics, "epoch": 14}, 15)
    print_epoch({**metrics, "epoch": 15}, 15)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("~4.0 min left") and lines[1].endswith("~20s left")
    assert "left" not in lines[2]


def test_evaluation_reads_the_same_whatever_its_batch(mnist):
    model = train(quick(), mnist)[0].model
    images, labels = mnist.test_x[:1000], mnist.test_y[:1000]
    (loss, acc), *others = [evaluate(model, images, labels, batch) for batch in (5000, 500, 7)]
    assert 50 < acc < 100
    for other_loss, other_acc in others:
        assert other_acc == acc and other_loss == pytest.approx(loss, rel=1e-5)


def test_a_run_evaluates_in_its_configs_batches(mnist, monkeypatch):
    import tune_mnist.train.loop as loop

    seen, evaluate_members = [], loop.evaluate_members
    monkeypatch.setattr(
        loop, "evaluate_members", lambda *a: seen.append(a[-1]) or evaluate_members(*a)
    )
    old = train(quick(epochs=1, val_size=500), mnist)[0]
    new = train(quick(epochs=1, val_size=500, eval_batch=300), mnist)[0]
    assert seen == [5000, 5000, 300, 300]  # test, then validation; the default of every old row
    assert new.final["val_acc"] == old.final["val_acc"]
    assert new.final["test_acc"] == old.final["test_acc"]


def test_bench_eval_prints_each_batch_against_the_first(monkeypatch, capsys, mnist):
    from searchutil import ROOT

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from bench_eval import main as bench_main

    assert bench_main(["--smoke", "--repeats", "1", "--batches", "1000,100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "1,000 test images" in lines[0] and len(lines) == 3
    assert "batch  1,000" in lines[1] and "1.00x faster than 1,000" in lines[1]
    assert "batch    100" in lines[2] and "0 predictions changed" in lines[2]
    for bad in ("0", "x", "500,"):
        with pytest.raises(SystemExit) as exit_:
            bench_main(["--batches", bad])
        assert exit_.value.code == 2
