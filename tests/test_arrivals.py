"""The replay of a rung's promotions (tune_mnist.study.arrivals): greedy promotion sends the
first arrivals on when later ones are better; at the end, the best quarter; the recorded
order of cold run 8 replays to what that search did."""

from __future__ import annotations

import shutil
from pathlib import Path

from tune_mnist.study.arrivals import FILE, greedy, main

ROOT = Path(__file__).resolve().parent.parent


def test_greedy_promotion_takes_the_early_arrivals_of_an_improving_sampler():
    assert greedy([90.0 + i for i in range(8)], 4) == [3, 7]  # best of 4, then of 8
    assert greedy([99.0, 98.0, 97.0, 96.0, 95.0, 94.0, 93.0, 92.0], 4) == [0, 1]


def test_run_8_replays_to_its_recorded_promotions(tmp_path, capsys):
    folder = tmp_path / "cold-4k-r8"
    folder.mkdir()
    shutil.copy(ROOT / "results" / "cold-4k-r8" / FILE, folder / FILE)
    assert main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert "59 first-rung figures, a quota of 14" in out
    greedy_line, end_line, recorded_line = out.splitlines()[1:4]
    assert greedy_line.split("greedy")[1].strip() == recorded_line.split("recorded")[1].strip()
    assert " 8 of them among the best 14" in recorded_line
    assert "14 of them among the best 14" in end_line


def test_a_folder_without_a_journal_or_its_table_is_one_line_exit_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "neither" in err


def test_the_replay_keeps_the_searchs_own_reduction_factor(tmp_path, capsys):
    """Campaign 6 kept the best third (factor 3): its 10 figures give a quota of 3, as it ran."""
    folder = tmp_path / "campaign6-8k-recipe"
    folder.mkdir()
    for name in (FILE, "search.json"):
        shutil.copy(ROOT / "results" / "campaign6-8k-recipe" / name, folder / name)
    assert main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert "10 first-rung figures, a quota of 3" in out
    assert "recorded    3 sent on" in out
