"""The search's own record of every trial: the truth on disk that a resume trusts.

Ray's experiment snapshot lags (it is written every few seconds), so after a hard kill it can
name a trial as running that had already ended, or an older checkpoint than the newest one.
The driver therefore appends, as each event reaches it, one JSON line to
`results/<name>/journal/<trial_id>.jsonl` and flushes it to disk (fsync) before anything
else happens:

- `start`: the trial's config and the provenance of the process that ran it;
- `epoch`: every report (the epoch's metrics) and where its checkpoint lies, relative to the
  Ray experiment folder (so a moved experiment still finds it);
- `end`: that the trial ended (`TERMINATED` or `ERROR`), once; a later `end` is ignored.

A line cut short by a kill is skipped when read; a resume refuses a file damaged anywhere
else (`damaged`). The tables are rebuilt from these files, so
they only move forward, and a resume never trains an ended trial again and continues a running
one from its newest checkpoint.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FOLDER = "journal"
KINDS = ("start", "epoch", "end")  # the lines a journal holds


@dataclass(frozen=True)
class Ledger:
    """What a resumed trainable needs from the journal (tune_mnist.search.trainable)."""

    ended: frozenset[str] = frozenset()  # never trained again
    newest: dict[str, str] = field(default_factory=dict)  # trial -> newest checkpoint
    epochs: dict[str, int] = field(default_factory=dict)  # trial -> newest journaled epoch


EMPTY = Ledger()


@dataclass
class TrialRecord:
    trial_id: str
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)  # every report, in order
    ended: str = ""  # "", "TERMINATED" or "ERROR"
    error: str = ""
    checkpoint: str = ""  # newest, relative to the experiment folder (or absolute / a URI)

    @property
    def last_result(self) -> dict[str, Any]:
        return self.results[-1] if self.results else {}


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value  # inf: json writes Infinity
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


class Journal:
    def __init__(self, results_folder: Path):
        self.folder = Path(results_folder) / FOLDER
        self._ended: set[str] = set()
        self._started: set[str] = set()
        self._mended: set[str] = set()  # files whose last line this process has checked
        for record in self.read().values():
            self._started.add(record.trial_id)
            if record.ended:
                self._ended.add(record.trial_id)

    def _append(self, trial_id: str, line: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{trial_id}.jsonl"
        if trial_id not in self._mended:
            self._mended.add(trial_id)
            _mend_tail(path)
        with open(path, "a") as handle:
            handle.write(json.dumps(_plain(line)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the tables (or a kill) can follow

    def ended(self, trial_id: str) -> bool:
        return trial_id in self._ended

    def start(self, trial_id: str, config: dict, provenance: dict) -> None:
        if trial_id not in self._started:
            self._started.add(trial_id)
            self._append(trial_id, {"kind": "start", "config": config, "prov": provenance})

    def epoch(self, trial_id: str, result: dict[str, Any], checkpoint: str = "") -> None:
        if trial_id in self._ended:  # a resumed, ended trial reports nothing new
            return
        keep = {k: v for k, v in result.items() if k != "config"}
        self._append(trial_id, {"kind": "epoch", "result": keep, "checkpoint": checkpoint})

    def end(self, trial_id: str, status: str, error: str = "") -> None:
        if trial_id not in self._ended:
            self._ended.add(trial_id)
            self._append(trial_id, {"kind": "end", "status": status, "error": error})

    def read(self) -> dict[str, TrialRecord]:
        records: dict[str, TrialRecord] = {}
        for path in sorted(self.folder.glob("*.jsonl")) if self.folder.is_dir() else []:
            records[path.stem] = read_record(path)
        return records


def _mend_tail(path: Path) -> None:
    """A kill can cut the last line short: before the first append after it, drop that
    part (or end it with its newline when it is whole), so a new line never runs into it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    try:
        whole = isinstance(json.loads(data[cut:]), dict)
    except ValueError:  # (UnicodeDecodeError too)
        whole = False
    with open(path, "r+b") as handle:
        if whole:
            handle.seek(0, os.SEEK_END)
            handle.write(b"\n")
        else:
            handle.truncate(cut)
        handle.flush()
        os.fsync(handle.fileno())


def _lines(path: Path) -> list[dict | None]:
    """Each line as its JSON object, None where it is not one (cut short or damaged)."""
    out: list[dict | None] = []
    for text in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            line = None
        out.append(line if isinstance(line, dict) and line.get("kind") in KINDS else None)
    return out


def read_record(path: Path) -> TrialRecord:
    record = TrialRecord(path.stem)
    for line in _lines(path):
        if line is None:
            continue  # a last line a kill cut short (elsewhere: damage, refused by `damaged`)
        kind = line["kind"]
        if kind == "start":
            record.config, record.provenance = line.get("config", {}), line.get("prov", {})
        elif kind == "epoch" and not record.ended and "result" in line:
            record.results.append(line["result"])
            record.checkpoint = line.get("checkpoint") or record.checkpoint
        elif kind == "end" and not record.ended:
            record.ended, record.error = line.get("status", "ERROR"), line.get("error", "")
    return record


def damaged(folder: Path) -> str | None:
    """The first journal file a resume cannot trust, and why: a line before the last that
    is not a journal line (a kill cuts only the last), or lines with no `start` before them.
    None when all are whole."""
    for path in sorted((folder / FOLDER).glob("*.jsonl")):
        try:
            lines = _lines(path)
        except OSError as exc:
            return f"{path}: unreadable ({exc.strerror or type(exc).__name__})"
        bad = [n for n, line in enumerate(lines[:-1], start=1) if line is None]
        if bad:
            return f"{path}: line {bad[0]} of {len(lines)} is damaged"
        kinds = [line["kind"] for line in lines if line]
        if kinds and "start" not in kinds:  # (a start cut short by a kill leaves none)
            return f"{path}: no start line (damaged)"
    return None


def resolve(path: str, root: str) -> str:
    if path.startswith("/") or "://" in path:
        return path
    return f"{root.rstrip('/')}/{path}"
