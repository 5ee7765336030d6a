"""The chain's warm stages: when the race's pick is unlikely to pass, search on before any
test figure.

A cold search's race at 4,000 parameters often ends with its pick's pass chance at 0.06-0.3
(docs/history.md, "The main command, cold, then warm-started"): confirming it spends five
test seeds on a likely failure. With `--confirm`, the chain then runs another search of
`--warm-samples` trials whose Optuna study is first told every trial of the search before
it (tune_mnist.search.warm), races it, and goes on, up to `--warm-stages` times, until a
pick's pass chance reaches `--warm-below` (0.5: more likely to pass than not). The
confirmation takes the likeliest pick of all the races. Every step still reads validation
only.

Stage k is the search results/<name>-w<k>, started from the space the first search kept
(its space.yaml, already shaped to the budget) with sampler seed (the first's + k); a resume
of the chain finds each stage by its name and continues it (nothing trained is trained again).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tune_mnist.paths import results_root, shown
from tune_mnist.search import command
from tune_mnist.search.flags import DEVICE_FLAGS, given, switches
from tune_mnist.search.plan import UsageError
from tune_mnist.search.summary import totals
from tune_mnist.tables import TableError, read_parquet, read_search_record


@dataclass
class Stage:
    folder: Path
    pick: str | None  # the race's pick; None when no trial completed to race
    chance: float  # its pass chance (race.parquet); 0 without one


class Stopped(Exception):
    """A stage ended the chain: `what` (e.g. 'warm search 1') with exit status `code`."""

    def __init__(self, what: str, code: int):
        super().__init__(what)
        self.what, self.code = what, code


def stage_name(first: str, k: int) -> str:
    return f"{first}-w{k}"


def raced(folder: Path, pick: str | None) -> Stage:
    """The stage as its race left it: the pick and its pass chance from race.parquet."""
    if pick is None:
        return Stage(folder, None, 0.0)
    table = read_parquet(folder / "race.parquet")
    row = table[table["trial_id"] == pick]
    return Stage(folder, pick, float(row["pass_chance"].iloc[0]) if len(row) else 0.0)


def likeliest(stages: list[Stage]) -> Stage:
    """The stage whose pick is likeliest to pass; the earlier on a tie."""
    return max(stages, key=lambda s: (s.pick is not None, s.chance))


def go_on(args, first: Stage, race: Callable[[Path], tuple[int, str | None]]) -> list[Stage]:
    """The first stage, then each warm stage run while the best pick's chance is under
    `--warm-below` and stages are left. Raises Stopped when a stage stops the chain."""
    stages = [first]
    for k in range(1, args.warm_stages + 1):
        best = likeliest(stages)
        if best.chance >= args.warm_below:
            break
        source = stages[-1].folder
        name = stage_name(first.folder.name, k)
        samples = warm_samples(args, first.folder)
        print(
            f"\n== warm stage {k}: the best pick's pass chance is {best.chance:.2f}, under "
            f"{args.warm_below:.2f}; {samples} more trials, warm-started from "
            f"{shown(source)} ({eta(source, samples)}) ==",
            flush=True,
        )
        argv = stage_argv(args, first.folder, source, name, k, samples)
        code, _, folder = command.run(argv)
        if code not in (0, 1) or folder is None:  # bad input, Ctrl-C, SIGTERM, ...
            raise Stopped(f"warm search {k}", code or 1)
        if code != 0:  # nothing trained to its end: the picks so far stand
            print(f"warm stage {k}: its search trained no trial to its end; going on without")
            continue
        code, pick = race(folder)
        if code != 0:
            raise Stopped(f"race of warm stage {k}", code)
        stages.append(raced(folder, pick))
    return stages


def show(stages: list[Stage], best: Stage) -> str:
    """The chain's races side by side, and the pick it confirms."""
    lines = ["\n== the chain's races: the likeliest pick is confirmed =="]
    lines.append(f"  {'search':<24}{'pick':<11}{'pass chance':>11}")
    for s in stages:
        mark = "  <- confirmed" if s is best else ""
        lines.append(f"  {s.folder.name:<24}{s.pick or '-':<11}{s.chance:11.3f}{mark}")
    return "\n".join(lines)


def warm_samples(args, first: Path) -> int:
    """--warm-samples, else half the first search's trials."""
    if args.warm_samples:
        return args.warm_samples
    return max(1, int(read_search_record(first)["settings"]["samples"]) // 2)


def stage_argv(args, first: Path, source: Path, name: str, k: int, samples: int) -> list[str]:
    """The search of stage k: a resume when it started before, else a new search of the
    first's kept space warm-started from `source`; the devices the chain was given."""
    if command.has_started(results_root() / name, command.where(args, name)[1]):
        _check_source(results_root() / name, source)
        head = ["--resume", "--name", name]
    else:
        seed = sampler_seed(first) + k
        head = ["--space", str(shown(first / command.SPACE_COPY))]
        head += ["--warm-start", str(shown(source))]
        head += ["--samples", str(samples), "--sampler-seed", str(seed)]
        head += ["--name", name]
    return head + ["--race-runs", "0", *device_flags(args)]


def device_flags(args) -> list[str]:
    """The flags that say where and how trials run, as the chain was given them."""
    return given(args, DEVICE_FLAGS) + switches(args)


def sampler_seed(folder: Path) -> int:
    """The sampler seed a search ran with: its record's, else read from its command line
    (a record from before the field), else the default 0."""
    meta = read_search_record(folder)
    if "sampler_seed" in meta:
        return int(meta["sampler_seed"])
    argv = [str(a) for a in meta.get("argv") or []]
    for i, arg in enumerate(argv):
        for flag in ("--sampler-seed", "--seed"):
            if arg == flag and i + 1 < len(argv):
                return int(argv[i + 1])
            if arg.startswith(flag + "="):
                return int(arg.split("=", 1)[1])
    return 0


def _check_source(folder: Path, source: Path) -> None:
    """A stage folder must be this chain's: warm-started from the stage before it."""
    meta = read_search_record(folder)
    told = (meta.get("warm_start") or {}).get("from") or ""
    if Path(told).name != source.name:
        raise UsageError(
            f"{folder} is not a warm stage of {source.name} (warm-started from "
            f"{told or 'nothing'}); move it aside or give the chain another --name"
        )


def eta(source: Path, samples: int) -> str:
    """`search about 23 min` at the pace of the search before it (its wall minutes a trial)."""
    try:
        wall_s = totals(json.loads((source / "summary.json").read_text()))[0]
        settings = read_search_record(source)["settings"]
    except (OSError, ValueError, TableError, KeyError):
        return "its pace unknown"
    if not wall_s:
        return "its pace unknown"
    minutes = wall_s / max(1, int(settings["samples"])) * samples / 60
    return f"search about {math.ceil(minutes)} min at the last search's pace"
