"""The search driver behind `scripts/search.py`: Optuna proposes, ASHA stops, Ray runs.

The driver reads MNIST once and shares it with every trial through Ray's object store
(`tune.with_parameters`); it sizes the trials to the GPUs or CPUs it may use, writes the
parquet tables as trials finish and prints a summary at the end.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

import torch

from tune_mnist.paths import CHECKOUT, below, results_root, shown, spaces_dir
from tune_mnist.search import journal, ray_door, stops
from tune_mnist.search.budget import DRAWS, over_budget_share, shaped_file
from tune_mnist.search.flags import (
    CHAIN_FLAGS,
    DEVICE_FLAGS,
    check_name,
    given,
    parse_args,
    switches,
)
from tune_mnist.search.lock import check_free, hold
from tune_mnist.search.plan import UsageError, plan_resources
from tune_mnist.search.ray_door import parse_storage
from tune_mnist.search.space import SpaceError
from tune_mnist.search.space_file import load_space
from tune_mnist.search.warm import warm_study
from tune_mnist.train.config import ConfigError
from tune_mnist.train.data import DataError, load_mnist

ROOT = CHECKOUT or Path.cwd()  # what recorded paths are relative to
RAY_DIR = ".ray"  # Ray's own experiment files, under the storage root


def prepare(args):
    """Everything that can fail on bad input, before Ray starts or anything is written."""

    default = "smoke.yaml" if args.smoke else "default.yaml"
    if args.resume:
        name = check_name(args.name)
        folder = results_root() / name
    else:
        path = Path(args.space or spaces_dir() / default)
        args.space_source = below(path, ROOT)  # as a record keeps it
        if args.max_params is not None:
            path, args.width_factor = shaped_file(path, args.max_params)
        space = load_space(path)
        if args.samples:
            space.settings["samples"] = args.samples
        if args.cpu_step:
            space.settings["cpu_step"] = args.cpu_step
        if args.promotion:
            space.settings["promotion"] = args.promotion
        stamped = f"{space.path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        name = check_name(stamped if args.name is None else args.name)  # '' is refused
        folder = results_root() / name
    storage, experiment = where(args, name)
    check_storage(storage, experiment)
    check_free(results_root(), name)  # a live search of that name: refused before anything else
    check_folder(args, name, folder, storage, experiment)
    if args.resume:
        space = resumed_space(args, folder)
        check_ray_state(folder, experiment)
    if args.gpus is not None and not args.address and not os.environ.get("RAY_ADDRESS"):
        plan_resources(
            args.gpus,
            args.trials_per_gpu,
            args.cpus_per_trial,
            os.cpu_count() or 1,
            torch.cuda.device_count(),
        )
    if getattr(args, "warm_start", None):  # before Ray: a folder it cannot use fails here
        args.warm = warm_study(Path(args.warm_start), space, _named(Path(args.warm_start)))
    data = load_mnist(args.data_dir)
    space.check_schedule(len(data.train_y))  # a recipe no trial could train: refused now
    args.over_budget_share = over_budget_share(space)
    if args.over_budget_share >= 1 and not space.points:
        raise UsageError(
            f"budget {space.settings['max_params']:,} parameters: none of {DRAWS} random draws "
            "of the space fits it, so no trial would train; raise --max-params or narrow the "
            "space's widths"
        )
    return space, name, folder, storage, experiment, data


SPACE_COPY = "space.yaml"  # the space a search started with, kept in its results folder


def _named(path: Path) -> str:
    """A results folder as a record names it: relative to the folder holding the results
    root (`results/<name>`) when it lies below it, else as `shown` gives it."""
    return below(path, results_root().parent, str(shown(path)))


def resumed_space(args, folder: Path):
    """A resume trains with the space its search started with (kept in the folder), whatever
    --space says: another space would change trials midway. A differing --space or
    --samples is refused."""

    meta_path = folder / "search.json"
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"--resume: {meta_path} is unreadable ({type(exc).__name__}); it is the search's "
            "record of its settings: restore it from a copy (nothing else rebuilds it)"
        ) from None
    saved = folder / SPACE_COPY
    if not saved.is_file():  # a start killed before it kept the space
        saved = Path(args.space or meta.get("space") or "")
        if not saved.is_file():
            raise UsageError(f"--resume: {folder} keeps no space; pass the search's --space")
    space = load_space(saved)
    if args.space and Path(args.space).read_bytes() != saved.read_bytes():
        raise UsageError(
            f"--space {args.space}: differs from the space {folder.name!r} started with "
            f"({saved}); drop --space to resume"
        )
    budget = space.settings["max_params"]
    if args.max_params is not None and args.max_params != budget:
        raise UsageError(
            f"--max-params {args.max_params}: {folder.name!r} was started with {budget}"
        )
    started = meta.get("settings", {})
    for flag, key, before in (  # before: what a search from before the setting ran
        ("--samples", "samples", space.settings["samples"]),
        ("--cpu-step", "cpu_step", space.settings["cpu_step"]),
        ("--promotion", "promotion", "greedy"),
    ):
        kept, given = started.get(key, before), getattr(args, key)
        if given and given != kept:
            raise UsageError(f"{flag} {given}: {folder.name!r} was started with {kept}")
        space.settings[key] = kept
    return space


def where(args, name: str) -> tuple[str, str]:
    """(the Ray storage root, the experiment's folder under it) of search `name`."""
    storage = args.storage or str((results_root() / RAY_DIR).resolve())
    return storage, f"{storage.rstrip('/')}/{name}"


def check_folder(args, name: str, folder: Path, storage: str, experiment: str) -> None:
    """A new search needs a free name, a resume an existing experiment. A folder whose start
    died before any trial ran (no Ray state, no tables) is free again: nothing is lost."""
    ray_state = _experiment_exists(experiment)
    started = has_started(folder, experiment, ray_state)
    if args.resume and not (folder.is_dir() and started):
        hint = "; run it again without --resume" if folder.is_dir() else ""
        raise UsageError(
            f"--resume: no experiment {name!r} under {results_root()} / {storage} "
            f"(no trial ran){hint}"
        )
    if not args.resume and started:
        raise UsageError(f"{folder} exists: pass --resume to continue it, or another --name")
    if args.resume and not ray_state:  # its tables came without it
        raise UsageError(
            f"--resume: {name} has tables but no Ray state at {experiment} (a results folder "
            f"copied without {RAY_DIR}/{name}, or another --storage); nothing to continue: "
            "pass the --storage it ran with, or start a new --name"
        )


def has_started(folder: Path, experiment: str, ray_state: bool | None = None) -> bool:
    """Whether a search ran there: Ray keeps its state, or its tables exist. A start that
    died before both left nothing to continue."""
    if ray_state is None:
        ray_state = _experiment_exists(experiment)
    return ray_state or (folder / "trials.parquet").exists()


def check_ray_state(folder: Path, experiment: str) -> None:
    """A resume whose journal is damaged (journal.damaged), or whose newest Ray state Ray
    could not restore (ray_door.damaged_state), is refused now: the tables are rebuilt from
    the one, and Ray would go on with no trial and save that as its newest state."""
    broken = journal.damaged(folder)
    if broken:
        raise UsageError(
            f"--resume: {broken}; restore that file from a copy, or move it aside to go on "
            "without the epochs it recorded"
        )
    journaled = len(list((folder / "journal").glob("*.jsonl")))
    damaged = ray_door.damaged_state(experiment, journaled)
    if damaged:
        raise UsageError(
            f"--resume: Ray cannot read its saved state {damaged}; move that file aside "
            "and resume again (Ray then takes its previous save)"
        )


def check_storage(storage: str, experiment: str) -> None:
    """A storage URI Ray cannot parse (`s3:/x`, an unknown scheme) fails here, in one line,
    instead of as pyarrow's traceback from inside Ray (which parses the same URI next)."""

    try:
        for path in (storage, experiment):  # `gs://` parses; `gs:/<name>` made of it does not
            parse_storage(path)
    except (ValueError, ImportError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise UsageError(
            f"--storage {storage}: not a storage root Ray can use ({str(exc).splitlines()[0]}); "
            "give a local folder or a URI such as s3://bucket/path"
        ) from None


def _experiment_exists(experiment: str) -> bool:
    from ray import tune  # lazy: Ray takes seconds to load, and after start_ray's settings

    return tune.Tuner.can_restore(experiment)


def resume_command(args, name: str) -> str:
    """The command that continues this search: the same name, storage, cluster and devices,
    and the same chain after it (the race's runs, the confirmation's seeds)."""
    flags = given(args, DEVICE_FLAGS) + given(args, CHAIN_FLAGS) + switches(args)
    return " ".join(["python scripts/search.py --resume --name", *map(shlex.quote, [name, *flags])])


def main(argv: list[str] | None = None) -> int:
    """The search alone (scripts/search.py runs it inside tune_mnist.chain)."""
    return run(argv)[0]


def run(argv: list[str] | None = None) -> tuple[int, object, Path | None]:
    """(exit status, the parsed arguments, the search's folder); None before they exist."""

    args = None
    try:
        args = parse_args(argv)
        args.argv = [sys.argv[0], *argv] if argv is not None else list(sys.argv)  # recorded
        ray_door.keep_ray_local(args.address)
        prepared = prepare(args)
    except (UsageError, SpaceError, DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2, args, None
    except KeyboardInterrupt:
        print("interrupted before the search started; nothing was written", file=sys.stderr)
        return 130, args, None
    return _search(args, prepared), args, prepared[2]


def _search(args, prepared) -> int:
    # lazy: Ray, only once the input is checked
    from tune_mnist.search.tuner import SearchInterrupted, run_search

    space, name, folder, storage, experiment, data = prepared
    try:
        lock = hold(results_root(), name)  # noqa: F841 - held until this process ends
        check_folder(args, name, folder, storage, experiment)  # again, now that it is ours
        if not args.resume:  # a start that died before Ray's state: its journal is void
            shutil.rmtree(folder / "journal", ignore_errors=True)
        return run_search(args, *prepared)
    except (KeyboardInterrupt, SearchInterrupted) as exc:
        code = stops.stop_code() or 128 + signal.SIGINT  # 130 for Ctrl-C, 143 for SIGTERM
        left = f": {exc}" if isinstance(exc, SearchInterrupted) else ""
        print(
            f"interrupted{left}; nothing ended is lost. "
            f"Continue with: {resume_command(args, name)}",
            file=sys.stderr,
            flush=True,
        )
        return code
    except UsageError as exc:  # e.g. more GPUs asked than the cluster has
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # our stdout's reader ended (`search.py ... | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        print(
            "error: the search's output was closed (the program reading it ended); what "
            f"ended is kept. Continue with: {resume_command(args, name)}",
            file=sys.stderr,
        )
        return 1
    except ConnectionError as exc:  # (an OSError, but nothing failed to write)
        where = args.address or os.environ.get("RAY_ADDRESS")
        print(
            f"error: cannot join the Ray cluster at {where}: {exc}; check --address / "
            "RAY_ADDRESS and that the cluster runs (`ray status`)",
            file=sys.stderr,
        )
        return 2
    except OSError as exc:  # a read-only or full disk, a results path through a file
        where = exc.filename or results_root()
        print(
            f"error: cannot write {where}: {exc.strerror or exc}; free space or point "
            "TUNE_MNIST_RESULTS at a writable folder (what was written before is intact)",
            file=sys.stderr,
        )
        return 1
