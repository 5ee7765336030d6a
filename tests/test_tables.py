"""A damaged or unwritable confirmation table never costs a trained seed: retrain_best.py
refuses a damaged table before it trains, in one line naming the file, and rows a table
cannot take go to a side file that the next append merges in once."""

import os
import shutil
import subprocess
import sys

import pytest

from tune_mnist.publish.records import append_confirmations, table_problem
from tune_mnist.publish.retrain import main as retrain_main
from tune_mnist.tables import read_parquet


def _damage(path, how):
    good = path.read_bytes()
    if how == "cut":
        path.write_bytes(good[:300])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "csv":
        path.write_text("trial_id,seed\na,1\n")
    elif how == "no_column":
        read_parquet(path).drop(columns=["trial_id"]).to_parquet(path)


CASES = [
    (table, how)
    for table in ("confirmations.parquet", "confirmation_epochs.parquet", "trials.parquet")
    for how in ("cut", "empty", "csv", "no_column")
    if not (how == "no_column" and table == "confirmation_epochs.parquet")  # none required
]


@pytest.mark.parametrize("table, how", CASES)
def test_a_damaged_table_is_refused_before_anything_trains(tmp_path, table, how, capsys):
    folder = tmp_path / "s"
    shutil.copytree("results/campaign3-4k-narrow", folder)
    _damage(folder / table, how)
    before = sorted(p.name for p in (folder / "confirmed" / "a8059cfa").iterdir())
    args = ["--results", str(folder), "--trials", "a8059cfa", "--seeds", "1", "--smoke"]
    assert retrain_main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(folder / table) in err and "move it aside" in err
    assert sorted(p.name for p in (folder / "confirmed" / "a8059cfa").iterdir()) == before


# what every confirmation row holds beside its figures (tune_mnist.publish.records)
RECORDED = {"selected_on": "val_acc", "precision": "fp32", "channels_last": False}


def test_rows_a_table_cannot_take_wait_in_a_side_file_and_are_merged_once(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    rows = [{"trial_id": "a", "seed": 1, "final_test_acc": 99.4, **RECORDED}]
    assert append_confirmations(folder, rows) is None
    (folder / "confirmations.parquet").write_bytes(b"PAR1 damaged meanwhile")
    side = append_confirmations(
        folder, [{"trial_id": "a", "seed": 2, "final_test_acc": 99.5, **RECORDED}]
    )
    assert side is not None and side.is_file()
    assert table_problem(folder / "confirmations.parquet").startswith("cut short or damaged")
    (folder / "confirmations.parquet").unlink()  # the user moves the damaged table aside
    assert (
        append_confirmations(
            folder, [{"trial_id": "a", "seed": 3, "final_test_acc": 99.6, **RECORDED}]
        )
        is None
    )
    table = read_parquet(folder / "confirmations.parquet")
    assert list(table["seed"]) == [2, 3] and not side.exists()  # seed 2 once, from the side


def test_a_table_of_an_earlier_format_is_migrated_once_and_its_figures_kept(tmp_path, capsys):
    """A confirmation table without `selected_on` or the CPU step's columns is refused in one
    line naming scripts/migrate_confirmations.py; the script fills them (chosen on test,
    the plain step), changes nothing else, and has nothing to do a second time. The
    committed tables need nothing."""
    import subprocess
    import sys

    import pandas as pd
    from searchutil import ROOT

    from tune_mnist.tables import TableError

    table = tmp_path / "old" / "confirmations.parquet"
    table.parent.mkdir()
    old = pd.DataFrame({"trial_id": ["a", "a"], "seed": [0, 1], "final_test_acc": [99.4, 99.5]})
    old["precision"] = pd.Series(["fp32", None], dtype=object)
    old.to_parquet(table)
    with pytest.raises(TableError, match="missing column selected_on; run python scripts/migr"):
        read_parquet(table)
    script = [sys.executable, str(ROOT / "scripts" / "migrate_confirmations.py")]
    for flag, code, word in (("--check", 1, "would migrate"), ("", 0, "migrated")):
        done = subprocess.run(
            [*script, "--results-dir", str(tmp_path), *filter(None, [flag])],
            capture_output=True,
            text=True,
        )
        assert done.returncode == code and word in done.stdout, done.stderr
    new = read_parquet(table)
    pd.testing.assert_frame_equal(new[["trial_id", "seed", "final_test_acc"]], old.iloc[:, :3])
    assert new["selected_on"].tolist() == ["test_acc"] * 2
    assert new["precision"].tolist() == ["fp32"] * 2 and not new["channels_last"].any()
    assert subprocess.run([*script, "--results-dir", str(tmp_path), "--check"]).returncode == 0
    assert (
        subprocess.run([*script, "--results-dir", str(ROOT / "results"), "--check"]).returncode == 0
    )


_THREADS_AFTER_READ = """
import os, sys
import pandas as pd
from tune_mnist.tables import read_parquet
path = sys.argv[2]
def threads():
    return len(os.listdir("/proc/self/task"))
before = threads()
for _ in range(3):
    read_parquet(path) if sys.argv[1] == "ours" else pd.read_parquet(path)
print(threads() - before)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_reading_a_table_leaves_pyarrow_s_cpu_pool_unstarted():
    # a pool thread still decoding at interpreter exit can abort the process (exit 134,
    # apache/arrow#34314): the package's reads decode on the calling thread
    def started(reader):
        out = subprocess.run(
            [sys.executable, "-c", _THREADS_AFTER_READ, reader, "results/cold-4k/trials.parquet"],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.split()[-1])

    assert started("ours") < started("pandas")
