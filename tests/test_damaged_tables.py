"""Every command refuses a damaged table it reads in one line, before it trains or writes:
each table cut short, emptied, replaced by another format or missing a column it needs,
for each command that reads it. The line names the file, what is wrong and what rebuilds
it; the exit status is 2; nothing is trained and no table changes."""

from __future__ import annotations

import io
import shutil

import pandas as pd
import pytest
from searchutil import ROOT

from tune_mnist.tables import REQUIRED

SOURCE = ROOT / "results" / "cold-4k"  # a search with a race and a confirmation
TRIAL = "20d5d10a"  # its confirmed trial

READERS = {  # the tables each command reads (and would append to)
    "report": ["trials", "epochs", "passing", "confirmations"],
    "leaderboard": ["confirmations"],
    "retrain": ["trials", "passing", "confirmations", "confirmation_epochs"],
    "reproduce": ["confirmations", "confirmation_epochs"],
    "race": ["trials", "race_runs"],
}
CASES = [(command, table) for command, tables in READERS.items() for table in tables]


def damage(path, how: str) -> None:
    data = path.read_bytes()
    if how == "cut":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "csv":
        path.write_text("trial_id,status\nx,completed\n")
    else:  # a parquet table without the first column its readers need
        frame = pd.read_parquet(io.BytesIO(data))
        frame.drop(columns=[REQUIRED[path.name][0]]).to_parquet(path, index=False)


def run(command: str, folder, monkeypatch) -> int:
    from tune_mnist.publish import leaderboard, race_command, reproduce, retrain, seeds
    from tune_mnist.search import report

    def never(*args, **kwargs):
        raise AssertionError("trained before refusing a damaged table")

    monkeypatch.setattr(retrain, "train_groups", never)
    monkeypatch.setattr(seeds, "train_groups", never)
    monkeypatch.setattr(race_command, "train_round", never)
    monkeypatch.setattr(reproduce, "train", never, raising=False)
    argv = {
        "report": [str(folder)],
        "leaderboard": ["--results-dir", str(folder.parent), "--smoke"],
        "retrain": ["--results", str(folder), "--trials", TRIAL, "--smoke"],
        "reproduce": [str(folder / "confirmed" / TRIAL), "--epochs", "1"],
        "race": ["--results", str(folder)],
    }[command]
    main = {
        "report": report.main,
        "leaderboard": leaderboard.main,
        "retrain": retrain.main,
        "reproduce": reproduce.main,
        "race": race_command.main,
    }[command]
    return main(argv)


@pytest.mark.parametrize("how", ["cut", "empty", "csv", "column"])
@pytest.mark.parametrize("command,table", CASES)
def test_a_damaged_table_is_refused_in_one_line_before_anything_runs(
    tmp_path, monkeypatch, capsys, command, table, how
):
    folder = tmp_path / "results" / "cold-4k"
    shutil.copytree(SOURCE, folder, ignore=shutil.ignore_patterns("journal", "*.png", "*.html"))
    monkeypatch.setenv("TUNE_MNIST_RESULTS", str(tmp_path / "results"))
    path = folder / f"{table}.parquet"
    damage(path, how)
    before = {p.name: p.read_bytes() for p in folder.glob("*.parquet")}
    code = run(command, folder, monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: ") and str(path) in err[0], err
    assert "move it aside" in err[0]
    assert {p.name: p.read_bytes() for p in folder.glob("*.parquet")} == before


def test_reproduce_full_refuses_damaged_weights_before_its_full_run(tmp_path, monkeypatch, capsys):
    import tune_mnist.train.loop as loop
    from tune_mnist.publish import reproduce

    folder = tmp_path / "results" / "cold-4k"
    shutil.copytree(SOURCE, folder, ignore=shutil.ignore_patterns("journal", "*.png", "*.html"))
    weights = folder / "confirmed" / TRIAL / "seed1.pt"
    weights.write_bytes(weights.read_bytes()[:2000])
    monkeypatch.setattr(loop, "train", lambda *a, **k: pytest.fail("trained before refusing"))
    assert reproduce.main([str(weights.parent), "--seed", "1", "--full"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert str(weights) in line and "retrain the seed" in line


def test_a_report_that_cannot_be_written_is_one_line_exit_1(tmp_path, capsys):
    from tune_mnist.search import report

    folder = tmp_path / "results" / "cold-4k"
    shutil.copytree(SOURCE, folder, ignore=shutil.ignore_patterns("journal", "*.png", "*.html"))
    blocked = tmp_path / "out"
    blocked.write_text("a file where the report's folder should be")
    assert report.main([str(folder), "--out", str(blocked / "inside")]) in (1, 2)
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and str(blocked) in line


@pytest.mark.parametrize("how", ["cut", "not json", "no settings", "missing"])
@pytest.mark.parametrize("command", ["report", "retrain", "race"])
def test_a_damaged_search_record_is_refused_in_one_line_before_anything_runs(
    tmp_path, monkeypatch, capsys, command, how
):
    folder = tmp_path / "results" / "cold-4k"
    shutil.copytree(SOURCE, folder, ignore=shutil.ignore_patterns("journal", "*.png", "*.html"))
    monkeypatch.setenv("TUNE_MNIST_RESULTS", str(tmp_path / "results"))
    record = folder / "search.json"
    text = record.read_text()
    if how == "missing":
        record.unlink()
    else:
        record.write_text(
            {"cut": text[: len(text) // 2], "not json": "\x00", "no settings": "[]"}[how]
        )
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    code = run(command, folder, monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: ") and str(record) in err[0], err
    fix = "not a search's folder" if how == "missing" else "restore it from a copy"
    assert fix in err[0], err
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
