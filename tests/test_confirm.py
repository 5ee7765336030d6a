"""retrain_best, the report and predict, on the smoke search's results (CPU, subset data)."""

import json
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch
from PIL import Image
from searchutil import ROOT

from tune_mnist import load_model
from tune_mnist.publish.predict import main as predict_main
from tune_mnist.search.report import build
from tune_mnist.train.config import TrainConfig
from tune_mnist.train.loop import evaluate, train
from tune_mnist.train.modelfile import read_model_file, save_model

pytestmark = pytest.mark.slow


RUN = {"capture_output": True, "text": True, "timeout": 600, "cwd": ROOT}


# the smoke search's own sizes, asked for explicitly: by default a confirmation trains on all
# 60,000 images and scores on all 10,000, whatever subset the search ran on (minutes here)
SUBSET = ("--train-subset", "4000", "--test-subset", "1000")


def retrain(*args):
    extra = () if "--smoke" in args else SUBSET
    command = [sys.executable, str(ROOT / "scripts" / "retrain_best.py"), *args, *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.fixture
def refused(capsys):
    """retrain_best.py's main() in this process, for input it must refuse before training (a
    subprocess costs seconds of imports): (exit status, stderr)."""
    from tune_mnist.publish.retrain import main

    def call(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main([*args, *SUBSET])
        return code, capsys.readouterr().err

    return call


@pytest.fixture(scope="module")
def confirmed(smoke_search, tmp_path_factory):
    """The smoke search confirmed on 2 seeds, in a copy (the search itself is shared)."""
    folder = tmp_path_factory.mktemp("confirmed") / "s1"
    shutil.copytree(smoke_search[0], folder)
    done = retrain("--results", str(folder), "--seeds", "2")
    return folder, done


def test_retrain_writes_model_cards_and_confirmations(confirmed):
    folder, done = confirmed
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    best = folder / "best"
    for name in ("model.pt", "seed1.pt", "seed2.pt", "model_card.json", "model_card.md"):
        assert (best / name).is_file(), name
    card = json.loads((best / "model_card.json").read_text())
    assert card["seeds"] == [1, 2] and len(card["final_test_acc"]) == 2  # not the search's 0
    assert card["all_seeds_passed"] and card["min_test_acc"] >= 50.0
    assert card["mean_test_acc"] == pytest.approx(sum(card["final_test_acc"]) / 2)
    assert "scripts/retrain_best.py" in card["reproduce"] and card["commit"]
    rows = pd.read_parquet(folder / "confirmations.parquet")
    assert len(rows) == 2 and set(rows["seed"]) == {1, 2}
    assert {"trial_id", "final_test_acc", "params", "arch", "max_lr", "commit"} <= set(rows.columns)
    assert "seed 2" in done.stdout and "epoch" in done.stdout
    # the curve behind each final number, keyed like its confirmation row
    curves = pd.read_parquet(folder / "confirmation_epochs.parquet")
    assert len(curves) == 2 * int(rows["epochs"].iloc[0])
    last = curves.sort_values("epoch").groupby("seed").last()
    finals = rows.set_index("seed")["final_test_acc"]
    assert last["test_acc"].to_dict() == finals.to_dict()
    assert set(curves["confirmed_at"]) == set(rows["confirmed_at"])


def test_confirmations_were_chosen_on_validation_and_trained_without_the_holdout(confirmed):
    folder, _ = confirmed
    card = json.loads((folder / "best" / "model_card.json").read_text())
    trials = pd.read_parquet(folder / "trials.parquet")
    best = trials[trials["passed"]].sort_values("final_val_acc").iloc[-1]
    assert card["trial_id"] == best["trial_id"]  # the validation ranking's winner
    assert card["selected_on"] == "val_acc" and card["search_val_acc"] == best["final_val_acc"]
    assert best["val_size"] == 1000 and card["config"]["val_size"] == 0  # held-out ones too
    assert card["config"]["train_subset"] == 4000 and "--train-subset 4000" in card["reproduce"]
    assert card["config"]["threads"] >= 1  # written down, not "torch's default"
    assert f"--threads {card['config']['threads']}" in card["reproduce"]
    assert f"--threads {card['config']['threads']}" in card["train_one_seed"]
    text = (folder / "best" / "model_card.md").read_text()
    assert "chosen on the validation accuracy" in text
    rows = pd.read_parquet(folder / "confirmations.parquet")
    assert (rows["selected_on"] == "val_acc").all() and (rows["val_size"] == 0).all()


def test_reproduce_matches_a_confirmation_bit_for_bit_and_catches_a_change(confirmed, tmp_path):
    folder, _ = confirmed
    trial = json.loads((folder / "best" / "model_card.json").read_text())["trial_id"]
    command = [sys.executable, str(ROOT / "scripts" / "reproduce.py")]
    target = str(folder / "confirmed" / trial)
    same = subprocess.run([*command, target, "--seed", "2", "--epochs", "1"], **RUN)
    assert same.returncode == 0 and "bit for bit identical" in same.stdout, same.stdout
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    curves = pd.read_parquet(copy / "confirmation_epochs.parquet")
    curves.loc[curves["seed"] == 2, "train_loss"] += 1e-7  # one ulp-sized change
    curves.to_parquet(copy / "confirmation_epochs.parquet")
    changed = subprocess.run(
        [*command, str(copy / "confirmed" / trial), "--seed", "2", "--epochs", "1"], **RUN
    )
    assert changed.returncode == 1 and "DIFFERS epoch 1 train_loss" in changed.stdout
    bad = subprocess.run([*command, target, "--seed", "99"], **RUN)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "[1, 2]" in bad.stderr


def test_a_seed_retrained_again_supersedes_its_old_row_and_an_unreachable_target_exits_1(
    confirmed, tmp_path
):
    folder, _ = confirmed
    copy = tmp_path / "again"
    shutil.copytree(folder, copy)
    before = pd.read_parquet(copy / "confirmations.parquet")
    trial = str(before["trial_id"].iloc[0])
    done = retrain("--results", str(copy), "--trials", trial, "--seeds", "1", "--target", "99.99")
    assert done.returncode == 1 and "not passed" in done.stdout, done.stderr[-2000:]
    rows = pd.read_parquet(copy / "confirmations.parquet")  # a plain read: current rows only
    assert not rows.duplicated(["trial_id", "seed"]).any() and len(rows) == len(before)
    newest = rows[(rows["trial_id"] == trial) & (rows["seed"] == 1)]["confirmed_at"].iloc[0]
    assert newest > before["confirmed_at"].max()
    history = pd.read_parquet(copy / "confirmations_history.parquet")
    assert list(history[["trial_id", "seed"]].itertuples(index=False)) == [(trial, 1)]
    curves = pd.read_parquet(copy / "confirmation_epochs.parquet")
    assert set(curves["confirmed_at"]) == set(rows["confirmed_at"])
    old_curves = pd.read_parquet(copy / "confirmation_epochs_history.parquet")
    assert set(old_curves["confirmed_at"]) == set(history["confirmed_at"])


def test_reproduce_full_checks_a_confirmation_without_curves_by_its_final_figure_and_weights(
    confirmed, tmp_path
):
    folder, _ = confirmed
    trial = json.loads((folder / "best" / "model_card.json").read_text())["trial_id"]
    copy = tmp_path / "old"
    shutil.copytree(folder, copy)
    (copy / "confirmation_epochs.parquet").unlink()  # as before curves were kept
    command = [
        sys.executable,
        str(ROOT / "scripts" / "reproduce.py"),
        str(copy / "confirmed" / trial),
    ]
    same = subprocess.run([*command, "--seed", "1", "--full"], **RUN)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "bit for bit identical to the final test accuracy and the weights file" in same.stdout
    weights = copy / "confirmed" / trial / "seed1.pt"
    payload = torch.load(weights, weights_only=True)
    first = next(iter(payload["state_dict"]))
    payload["state_dict"][first] = payload["state_dict"][first] + 1e-6
    torch.save(payload, weights)
    changed = subprocess.run([*command, "--seed", "1", "--full"], **RUN)
    assert changed.returncode == 1 and f"DIFFERS weights {first}" in changed.stdout


def test_smoke_test_of_retrain_best_runs(smoke_search, tmp_path):
    folder, _ = smoke_search
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    done = retrain("--results", str(copy), "--smoke")
    assert done.returncode in (0, 1), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and (copy / "confirmations.parquet").is_file()


def test_a_search_from_before_the_split_is_not_ranked_on_test(confirmed, tmp_path, refused):
    folder, _ = confirmed
    old = tmp_path / "old"
    shutil.copytree(folder, old, ignore=shutil.ignore_patterns("best", "confirmed"))
    passing = pd.read_parquet(old / "passing.parquet")
    passing.drop(columns=["final_val_acc"]).to_parquet(old / "passing.parquet")
    code, stderr = refused("--results", str(old))
    assert code == 2 and "--trials" in stderr and "test" in stderr


def test_saved_weights_reproduce_the_recorded_accuracy(confirmed, mnist):
    folder, _ = confirmed
    card = json.loads((folder / "best" / "model_card.json").read_text())
    model = load_model(folder / "best")
    n = model.config.test_subset or 10000
    _, acc = evaluate(model, mnist.test_x[:n], mnist.test_y[:n])
    assert acc == pytest.approx(card["final_test_acc"][0])


def test_bad_input_exits_2(tmp_path, confirmed, refused):
    folder, _ = confirmed
    done = retrain("--results", str(tmp_path / "missing"))  # the script itself, once
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    empty = tmp_path / "empty"
    shutil.copytree(folder, empty, ignore=shutil.ignore_patterns("best", "confirmed"))
    passing = pd.read_parquet(empty / "passing.parquet")
    passing.iloc[0:0].to_parquet(empty / "passing.parquet")
    before = (empty / "confirmations.parquet").read_bytes()  # from the confirmed fixture
    code, stderr = refused("--results", str(empty))
    assert code == 2 and "no passing trial" in stderr
    assert (empty / "confirmations.parquet").read_bytes() == before  # nothing changed
    assert not (empty / "best").exists()
    for target in ("101", "-5", "nan"):  # a pass mark no accuracy can mean
        code, stderr = refused("--results", str(empty), "--target", target)
        assert code == 2 and f"--target {float(target)}" in stderr
    (empty / "passing.parquet").write_bytes(b"not parquet")
    code, stderr = refused("--results", str(empty))
    assert code == 2 and f"{empty / 'passing.parquet'}: not a parquet file" in stderr


def test_named_trials_are_confirmed_side_by_side(tmp_path, confirmed, refused):
    folder, _ = confirmed
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("best", "confirmed"))
    (copy / "confirmations.parquet").unlink()
    trials = pd.read_parquet(copy / "trials.parquet")
    done_ids = trials.loc[trials["status"] == "completed", "trial_id"].tolist()
    stopped = trials.loc[trials["status"] == "asha_stopped", "trial_id"].tolist()
    best = trials.loc[trials["status"] == "completed"].sort_values("final_test_acc")
    names = [stopped[0], best["trial_id"].iloc[-1]]  # a trial ASHA stopped counts too
    done = retrain(
        "--results",
        str(copy),
        "--trials",
        ",".join(names),
        "--seeds",
        "2",
        "--cpus",
        "2",
        "--target",
        "0",
        "--epochs",
        "1",
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = pd.read_parquet(copy / "confirmations.parquet")
    assert rows["trial_id"].tolist() == [names[0]] * 2 + [names[1]] * 2
    assert rows["seed"].tolist() == [1, 2, 1, 2] and (rows["threads"] == 1).all()
    for name in names:
        assert (copy / "confirmed" / name / "model_card.md").is_file()
    card = (copy / "confirmed" / stopped[0] / "model_card.md").read_text()
    assert re.search(r"the search's own run \(seed 0, [12] epochs\)", card)
    code, stderr = refused("--results", str(copy), "--trials", "nope")
    assert code == 2 and stderr.count("\n") == 1
    assert "nope" in stderr and done_ids[0] in stderr
    twice = f"{names[1]},{names[1]}"
    for given, says in (("", "empty"), (" , ", "empty"), (twice, "twice")):
        code, stderr = refused("--results", str(copy), "--trials", given)  # never "the best"
        assert code == 2 and stderr.count("\n") == 1 and says in stderr


def test_report_builds_every_picture(confirmed):
    folder, _ = confirmed
    page = build(folder)
    for name in ("pareto", "curves", "asha", "importance"):
        path = folder / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000, name
        with Image.open(path) as image:
            assert image.size[0] >= 600 and image.size[1] >= 150
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 4 and "Passing configurations" in text
    # it opens in words, and its headings are titles, not code words
    assert re.search(r"<p>7 trials: \d+ [a-z]", text) and "{" not in text.split("<p>")[1][:200]
    assert "<h2>Where ASHA stopped trials</h2>" in text and "<h2>asha</h2>" not in text


@pytest.fixture(scope="module")
def digit_model(tmp_path_factory, mnist):
    config = TrainConfig(epochs=2, train_subset=10000, test_subset=1000, device="cpu")
    result = train(config, mnist)[0]
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(path, result.model, config)
    return path


def test_predict_labels_real_test_digits(tmp_path, mnist, digit_model, capsys):
    paths = []
    for i in range(8):
        pixels = mnist.test_x[i].numpy()
        image = Image.fromarray(pixels)
        if i % 3 == 1:
            image = Image.fromarray(255 - pixels)  # dark on light, as a scan would be
        if i % 3 == 2:
            image = image.resize((56, 56))  # larger than 28x28
        paths.append(str(tmp_path / f"digit{i}.png"))
        image.save(paths[-1])
    assert predict_main(["--model", str(digit_model), *paths]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    predicted = [int(line.split(": ")[1].split()[0]) for line in lines]
    truth = mnist.test_y[:8].tolist()
    assert sum(p == t for p, t in zip(predicted, truth, strict=True)) >= 7, (predicted, truth)


def test_predict_bad_image_exits_2(tmp_path, digit_model):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert predict_main(["--model", str(digit_model), str(bad)]) == 2


def test_model_files_never_unpickle_objects(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "model.pt"
    torch.save({"state_dict": {}, "config": {}, "extra": Payload()}, evil)
    with pytest.raises(ValueError, match="refused") as info:
        read_model_file(evil)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, b"\x89PNG\r\n\x1a\n" + bytes(64)])
def test_a_bad_model_file_is_one_line_exit_2(tmp_path, content, capsys):
    bad = tmp_path / "model.pt"
    bad.write_bytes(content)
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(image)
    assert predict_main(["--model", str(bad), str(image)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a tune_mnist model file" in err


def test_a_search_with_no_passing_model_says_which_models_it_has(tmp_path, capsys):
    """best/ is made for a search's first passing model: without one, predict names the
    confirmed models to pass instead."""
    (tmp_path / "s" / "confirmed" / "abc12345").mkdir(parents=True)
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(image)
    assert predict_main(["--model", str(tmp_path / "s" / "best"), str(image)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "passed yet" in err
    assert str(tmp_path / "s" / "confirmed" / "abc12345") in err


def test_a_decompression_bomb_is_one_line_exit_2(tmp_path, digit_model, capsys):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 Mpx: PIL refuses to decode it
    assert predict_main(["--model", str(digit_model), str(bomb)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def _append_many(folder, worker, n):
    from tune_mnist.publish.records import append_confirmations

    for i in range(n):
        append_confirmations(
            folder,
            [
                {
                    "trial_id": f"w{worker}",
                    "seed": i,
                    "final_test_acc": 99.0,
                    "selected_on": "val_acc",
                    "precision": "fp32",
                    "channels_last": False,
                }
            ],
        )


def test_side_by_side_confirmations_keep_every_row(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(tmp_path, w, 40)) for w in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    rows = pd.read_parquet(tmp_path / "confirmations.parquet")
    assert len(rows) == 120 and rows.groupby("trial_id").size().tolist() == [40, 40, 40]


def test_bench_models_times_trials_side_by_side(smoke_search, capsys, monkeypatch):
    folder, _ = smoke_search
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from bench_models import main as bench_main

    trials = pd.read_parquet(folder / "trials.parquet")["trial_id"].tolist()[:2]
    names = [f"{folder}:{trial}" for trial in trials]
    assert bench_main(["--smoke", *names]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "2,560 images" in lines[0] and len(lines) == 1 + len(names)
    assert "x1.00 speed" in lines[1]
    assert all(name in line for name, line in zip(names, lines[1:], strict=True))
    assert bench_main(["--smoke", f"{folder}:nope"]) == 2
    assert "no trial 'nope'" in capsys.readouterr().err


def test_a_cohort_confirmation_is_one_run_and_reproduces(smoke_search, tmp_path):
    folder, _ = smoke_search
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("best", "confirmed"))
    for name in ("confirmations.parquet", "confirmation_epochs.parquet"):
        (copy / name).unlink(missing_ok=True)
    done = retrain("--results", str(copy), "--seeds", "2", "--cohort", "--target", "0")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "seed 1+1]" in done.stdout  # both seeds in one run
    rows = pd.read_parquet(copy / "confirmations.parquet")
    assert rows["seed"].tolist() == [1, 2] and (rows["cohort"] == 2).all()
    assert (rows["cohort_first"] == 1).all()
    trial = rows["trial_id"].iloc[0]
    for seed in (1, 2):  # each seed's own weights and card, as for seeds trained alone
        assert (copy / "confirmed" / trial / f"seed{seed}.pt").is_file()
    command = [sys.executable, str(ROOT / "scripts" / "reproduce.py")]
    again = subprocess.run(
        [*command, str(copy / "confirmed" / trial), "--seed", "2", "--epochs", "1"], **RUN
    )
    assert again.returncode == 0 and "bit for bit identical" in again.stdout, again.stdout


@pytest.mark.parametrize(
    "failure, code, words",
    [(KeyboardInterrupt, 130, "interrupted:"), ("ray", 1, "error: Ray lost a seed's run")],
    ids=["ctrl-c", "raylet-died"],
)
def test_a_retrain_stopped_under_its_seeds_is_one_line_and_keeps_what_was_written(
    smoke_search, tmp_path, monkeypatch, capsys, failure, code, words
):
    from ray.exceptions import LocalRayletDiedError

    import tune_mnist.publish.retrain as retrain_module

    folder, _ = smoke_search
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("best", "confirmed"))
    before = (copy / "trials.parquet").read_bytes()
    error = LocalRayletDiedError() if failure == "ray" else failure()

    def dies(*args, **kwargs):
        raise error
        yield  # a generator, as train_groups is

    monkeypatch.setattr(retrain_module, "train_groups", dies)
    assert retrain_module.main(["--results", str(copy), "--seeds", "1", *SUBSET]) == code
    err = capsys.readouterr().err
    assert err.startswith(words) and err.count("\n") == 1, err
    assert (copy / "trials.parquet").read_bytes() == before


def test_without_results_retrain_takes_the_search_run_here_never_a_committed_one(tmp_path):
    from tune_mnist.publish.confirm import InputError, newest_experiment

    for name in ("old-a", "old-b"):  # folders that came with a checkout: no lock files
        (tmp_path / name).mkdir()
        (tmp_path / name / "trials.parquet").write_bytes(b"")
    with pytest.raises(InputError, match="no search was run here.*old-a, old-b"):
        newest_experiment(tmp_path)
    (tmp_path / ".locks").mkdir()
    (tmp_path / ".locks" / "old-b.lock").write_text("pid 1\n")  # a search that ran here
    assert newest_experiment(tmp_path) == tmp_path / "old-b"
