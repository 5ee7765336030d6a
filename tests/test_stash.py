"""A confirmation interrupted after some seeds finished: the same command again trains only
the others (tune_mnist.publish.stash), and every seed is written once."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from tune_mnist.publish import seeds, stash
from tune_mnist.publish.seeds import SeedRun
from tune_mnist.train.config import TrainConfig

SMALL = ["--seeds", "2", "--epochs", "1", "--train-subset", "2000", "--test-subset", "500"]


def run(seed: int) -> SeedRun:
    return SeedRun(seed, "completed", 99.0, 10, 1.0, {}, "cpu", [{"epoch": 1, "test_acc": 99.0}])


def test_a_stashed_seed_is_reused_only_for_its_own_config(tmp_path):
    config = TrainConfig(seed=3)
    stash.save(tmp_path, config, run(3))
    assert stash.load(tmp_path, config) == run(3)
    assert stash.load(tmp_path, config.replace(epochs=14)) is None  # another config
    (tmp_path / stash.FOLDER / "seed3.pt").write_bytes(b"cut")
    assert stash.load(tmp_path, config) is None  # damaged: the seed trains again
    stash.clear(tmp_path)
    assert not (tmp_path / stash.FOLDER).exists()


@pytest.mark.slow
def test_an_interrupted_confirmation_trains_only_the_seeds_it_had_not_finished(
    smoke_search, tmp_path, monkeypatch
):
    from tune_mnist.publish.retrain import main

    folder = tmp_path / "s1"
    shutil.copytree(smoke_search[0], folder)
    real, trained = seeds.train_seed, []

    def interrupted_at_the_second(config, data, verbose=True):
        if len(trained) == 1:
            raise KeyboardInterrupt
        trained.append(config.seed)
        return real(config, data, verbose)

    monkeypatch.setattr(seeds, "train_seed", interrupted_at_the_second)
    args = ["--results", str(folder), *SMALL]
    assert main(args) == 130
    assert trained == [1] and not (folder / "confirmations.parquet").exists()

    def counted(config, data, verbose=True):
        trained.append(config.seed)
        return real(config, data, verbose)

    monkeypatch.setattr(seeds, "train_seed", counted)
    assert main(args) in (0, 1)
    assert trained == [1, 2]  # seed 1 loaded from the stash, not trained again
    rows = pd.read_parquet(folder / "confirmations.parquet")
    assert sorted(rows["seed"]) == [1, 2]
    [out] = {folder / "confirmed" / t for t in rows["trial_id"]}
    assert (out / "seed1.pt").is_file() and not (out / stash.FOLDER).exists()
