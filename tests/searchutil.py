"""Helpers to run scripts/search.py as a user would, in a subprocess, into a temp results dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SMOKE_SETTINGS = """
settings: {epochs: EPOCHS, grace_period: GRACE, reduction_factor: 2, samples: SAMPLES,
           train_subset: 5000, test_subset: 500, target_acc: 50.0, max_params: MAXP,
           asha_metric: val_acc_avg3, val_size: 1000}
fixed: {batch_size: 64}
params:
  max_lr: {loguniform: [0.01, 0.05]}
  rotate_deg: {choice: [0.0, 10.0]}
arch:
  super_light: {}
  tiny:  # three stages, 700-1,700 params: 60-90% after 3 epochs on 5,000 images
    width1: {int: [4, 8]}
    width2: {int: [6, 10]}
    width3: 10
    depth1: 2
    depth2: 1
    depth3: 1
"""


def space_file(
    folder: Path, epochs=3, grace=1, samples=7, max_params=4000, points="", images=5000, rungs=()
) -> Path:
    """The smoke space with these settings; `images`: the training subset; `rungs`: the
    fidelities each trial trains before its full run (settings.rungs)."""
    staged = f", rungs: [{', '.join([*rungs, 'full'])}]" if rungs else ""
    text = (
        SMOKE_SETTINGS.replace("EPOCHS", str(epochs))
        .replace("val_size: 1000}", f"val_size: 1000{staged}}}")
        .replace("train_subset: 5000", f"train_subset: {images}")
        .replace("GRACE", str(grace))
        .replace("SAMPLES", str(samples))
        .replace("MAXP", str(max_params))
    )
    path = folder / "space.yaml"
    path.write_text(text + points)
    return path


INJECT = ROOT / "tests" / "inject"  # its sitecustomize injects failures (TUNE_MNIST_FAIL_AT_EPOCH)


def env(results: Path, **extra: str) -> dict[str, str]:
    out = {**os.environ, "TUNE_MNIST_RESULTS": str(results), "PYTHONUNBUFFERED": "1", **extra}
    if "TUNE_MNIST_FAIL_AT_EPOCH" in extra:  # every process of the search, Ray's workers too
        out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(INJECT), out.get("PYTHONPATH")]))
    return out


def search_command(*args: str) -> list[str]:
    """The search alone (no race after it: the chain's own tests ask for one)."""
    return [
        sys.executable,
        str(ROOT / "scripts" / "search.py"),
        "--gpus",
        "0",
        "--race-runs",
        "0",
        *args,
    ]


def run_search(results: Path, *args: str, timeout=600, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        search_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(results, **extra),
        cwd=ROOT,
    )


def run_script(name: str, *args: str, timeout=900) -> subprocess.CompletedProcess:
    """`python scripts/<name> args...` from the checkout, as a user runs it."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def journal(folder: Path) -> dict[str, list[dict]]:
    """A search's journal (results/<name>/journal), read while it runs: trial id -> its
    entries, oldest first (the driver appends one as it gets each epoch). A last line still
    being written is left for the next read."""
    found = {}
    for path in (folder / "journal").glob("*.jsonl"):
        text = path.read_text()
        lines = text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]
        found[path.stem] = [json.loads(line) for line in lines if line.strip()]
    return found
