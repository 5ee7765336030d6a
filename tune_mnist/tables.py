"""Parquet tables, one place for all of them: read from one open of the file, written
atomically, and a table that cannot be read refused in one line (TableError) that names
the file and the command that makes it again. A search's record of its settings
(search.json) is read here too, refused the same way."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pyarrow

from tune_mnist.files import atomic_write_bytes


class TableError(ValueError):
    """A table that cannot be read: its message names the file, what is wrong with it
    (`problem`) and what rebuilds it, in one line."""

    def __init__(self, path: Path, problem: str, fix: str | None = None):
        self.path, self.problem = path, problem
        again = REBUILT_BY.get(path.name, "the command that wrote it").format(name=path.parent.name)
        super().__init__(f"{path}: {problem}; {fix or f'move it aside and run {again}'}")


# what makes each table again, by file name (a command's one-line refusal names it)
REBUILT_BY = {
    "trials.parquet": "python scripts/search.py --resume --name {name} (rewrites it from the "
    "search's journal)",
    "epochs.parquet": "python scripts/search.py --resume --name {name} (rewrites it from the "
    "search's journal)",
    "passing.parquet": "python scripts/search.py --resume --name {name} (rewrites it from the "
    "search's journal)",
    "confirmations.parquet": "scripts/retrain_best.py (its rows are lost with it; the seeds' "
    "weights and cards stay)",
    "confirmation_epochs.parquet": "scripts/retrain_best.py (its rows are lost with it)",
    "race_runs.parquet": "the race (scripts/race.py trains its runs again)",
    "race.parquet": "the race (scripts/race.py rewrites it from race_runs.parquet)",
}


# columns a table of an earlier format lacks, by file name: the script that fills them in
MIGRATE = {
    "confirmations.parquet": (
        "python scripts/migrate_confirmations.py",
        ("selected_on", "precision", "channels_last"),
    )
}
# the columns every reader of a table relies on, by file name
REQUIRED = {
    "trials.parquet": ("trial_id", "status", "params"),
    "epochs.parquet": ("trial_id", "epoch"),
    "passing.parquet": ("trial_id",),
    "confirmations.parquet": (
        "trial_id",
        "seed",
        "final_test_acc",
        *MIGRATE["confirmations.parquet"][1],
    ),
    "confirmation_epochs.parquet": ("trial_id", "seed", "epoch"),
    "race_runs.parquet": ("trial_id", "val_acc"),
}


# pyarrow.parquet.read_table's options that keep a read off its thread pools
SERIAL = {"use_threads": False, "pre_buffer": False}


def read_parquet(path: str | Path, **kwargs) -> pd.DataFrame:
    """A table read from one open of its file. The tables are replaced by rename while a
    search runs; pyarrow given a path opens it twice (footer, then pages), and a rename in
    between pairs one file's footer with another's pages ("Couldn't deserialize thrift").
    A file that is empty, cut short or not parquet raises TableError, naming it.

    Decoded on the calling thread: a pyarrow pool thread still finishing a read when the
    interpreter exits can abort the process ("terminate called without an active
    exception", exit 134; apache/arrow#34314), and a script's exit status must be its own.
    The tables are small, so threads buy nothing."""

    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise TableError(path, "empty")
    if data[:4] != b"PAR1":
        raise TableError(path, "not a parquet file")
    wanted = kwargs.get("columns") or REQUIRED.get(path.name, ())
    kwargs = {**SERIAL, **kwargs}
    try:
        frame = pd.read_parquet(io.BytesIO(data), **kwargs)
    except (pyarrow.ArrowException, OSError) as exc:
        if "FieldRef" in str(exc):  # a column asked for by name is not there
            frame = pd.read_parquet(io.BytesIO(data), **SERIAL)
        else:
            raise TableError(path, f"cut short or damaged ({type(exc).__name__})") from None
    missing = [c for c in wanted if c not in frame.columns]
    if missing and len(frame.columns):  # (an empty table written with no rows has none)
        script, columns = MIGRATE.get(path.name, ("", ()))
        old = missing[0] in columns  # else a damaged table: moved aside and made again
        fix = f"run {script} (a table of an earlier format)" if old else None
        raise TableError(path, f"missing column {missing[0]}", fix)
    return frame


SEARCH_RECORD = "search.json"


def read_search_record(folder: str | Path) -> dict:
    """A search's record: the settings it ran with, its space, commit and start. A folder
    without one (not a search's), or a record that cannot be read or holds no settings,
    raises TableError; nothing rebuilds a record, so the fix is a copy of it."""
    path = Path(folder) / SEARCH_RECORD
    if not path.is_file():
        raise TableError(path, "not there", "not a search's folder: pass results/<name>")
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problem = f"unreadable ({type(exc).__name__})"
    else:
        settings = record.get("settings") if isinstance(record, dict) else None
        if isinstance(settings, dict):
            return record
        problem = "holds no settings"
    raise TableError(
        path, problem, "it is the search's record of its settings: restore it from a copy"
    )


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())
