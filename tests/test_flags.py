"""One meaning per flag name across every `tune-mnist` command, read from each --help."""

from __future__ import annotations

import re

import pytest

from tune_mnist.cli import COMMANDS, main

# flag -> what its help must say wherever a command takes it
MEANINGS = {
    "--results": "results/<name>",  # one search's folder
    "--results-dir": "folder of experiments",  # the folder holding every search
    "--seeds": "how many",  # a count, never a list
    "--threads": "threads",
    "--data-dir": "MNIST IDX files",
    "--smoke": None,
}
EVERY_SCRIPT = ("search", "race", "retrain", "reproduce", "leaderboard", "train")


def help_of(name: str, capsys) -> dict[str, str]:
    """flag -> its help text (argparse's wrapped lines joined)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    flags, current = {}, None
    for line in text.splitlines():
        found = re.match(r"^  (--[a-z-]+)(?: ([A-Z_]+))?\s*(.*)$", line)
        if found:
            current = found.group(1)
            flags[current] = f"{found.group(2) or ''} {found.group(3)}"
        elif current and line.startswith("   "):
            flags[current] += " " + line.strip()
        else:
            current = None
    return flags


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_flag_means_one_thing_on_every_command(name, capsys):
    flags = help_of(name, capsys)
    for flag, phrase in MEANINGS.items():
        if flag in flags and phrase:
            assert phrase in flags[flag], (name, flag, flags[flag])
    if "--seeds" in flags:  # a count, never a list
        assert "how many" in flags["--seeds"] and "," not in flags["--seeds"].split("(")[0]
    if name in EVERY_SCRIPT:
        assert "--smoke" in flags, name
    for flag, text in flags.items():  # a flag that takes a value says what it is without one
        if text.split(" ", 1)[0]:
            assert "default" in text or "required" in text, (name, flag, text)


def test_seeds_is_a_count_everywhere(capsys):
    from tune_mnist.train.command import main as train_main

    args = ["--arch", "tiny", "--smoke", "--threads", "1", "--device", "cpu"]
    assert train_main([*args, "--seeds", "1,2,3"]) == 2
    assert "a count of consecutive seeds" in capsys.readouterr().err


def test_results_dir_is_the_folder_a_command_reads(tmp_path, capsys):
    """--results-dir points a command at that folder, as $TUNE_MNIST_RESULTS would."""
    from tune_mnist.publish.leaderboard import main as board

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    assert board(["--results-dir", str(empty), "--smoke"]) == 2
    assert f"no confirmations under {empty}" in capsys.readouterr().err


def test_the_printed_resume_keeps_the_chain_after_the_search():
    """An interrupted `search.py --confirm 5` is continued by the line it prints, race and
    confirmation included (the same flags a user gave, defaults left out)."""
    from tune_mnist.search.command import resume_command
    from tune_mnist.search.flags import parse_args

    args = parse_args(["--name", "x", "--gpus", "0", "--confirm", "5"])
    assert (
        resume_command(args, "x")
        == "python scripts/search.py --resume --name x --gpus 0 --confirm 5"
    )
    args = parse_args(["--name", "x", "--race-runs", "0"])
    assert resume_command(args, "x") == "python scripts/search.py --resume --name x --race-runs 0"
    args = parse_args(["--name", "x", "--race-top", "4", "--warm-stages", "1"])
    assert resume_command(args, "x") == (
        "python scripts/search.py --resume --name x --race-top 4 --warm-stages 1"
    )
    args = parse_args(["--name", "x", "--confirm", "1", "--warm-stages", "2", "--smoke"])
    assert resume_command(args, "x") == (
        "python scripts/search.py --resume --name x --confirm 1 --warm-stages 2 --smoke"
    )  # a smoke chain resumes as one: its confirmation stays a few images


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_command_reads_a_shortened_flag_as_another(name, capsys):
    """`--cpus 4` on the search would otherwise be taken for `--cpus-per-trial 4` (threads
    per trial, where race and retrain read `--cpus` as runs at once): a flag is spelt whole."""
    flags = help_of(name, capsys)
    flag = max(flags, key=len)  # its longest flag, cut short
    required = {"race": ["--results", "x"], "predict": ["--model", "m", "digit.png"]}
    with pytest.raises(SystemExit) as done:
        main([name, *required.get(name, []), flag[: len(flag) - 2]])
    assert done.value.code == 2
    err = capsys.readouterr().err  # one line, as every bad input: no usage block
    assert "unrecognized arguments" in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "--help` lists the flags" in err
