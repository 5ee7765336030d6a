"""Where a result came from: versions, the commit, the device and the kind of CPU. Every
result row carries `provenance(device)`, so a run can be rebuilt from the row alone."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from tune_mnist.paths import CHECKOUT


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The project's commit (with '+dirty' for uncommitted changes); an installed wheel,
    with no checkout around it, names its version instead; else 'unknown'."""
    if CHECKOUT is None:  # git here would answer for whatever repository holds the venv
        try:
            return f"tune_mnist {version('tune_mnist')}"
        except PackageNotFoundError:
            return "unknown"
    root = CHECKOUT
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("+dirty" if sha and dirty else "")


def versions() -> dict[str, str]:
    """Versions of what shaped a result; Ray and Optuna only if installed."""
    found = {"python": platform.python_version(), "torch": str(torch.__version__)}
    for name in ("ray", "optuna"):
        try:
            found[name] = str(__import__(name).__version__)
        except ImportError:
            found[name] = "absent"
    return found


def provenance(device: str) -> dict[str, str]:
    return {
        **{f"{k}_version": v for k, v in versions().items()},
        "commit": git_commit(),
        "device_name": device_name(device),
        "cpu": cpu_name(),  # float sums, so the last bits, depend on the kind of CPU
        "host": platform.node(),
    }


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{cpu_name()}, {os.cpu_count()} cores"


# Instruction-set levels that pick different BLAS / conv kernels, so other float sums: the
# same code, seed and threads give bit-identical numbers only on the same kind of CPU.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, str]:
    """The first CPU's fields of /proc/cpuinfo (empty where there is none: not Linux)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_flags() -> frozenset[str]:
    """Instruction-set flags of this CPU (x86 `flags`, Arm `Features`); empty if unknown."""
    info = cpu_info()
    return frozenset((info.get("flags", "") + " " + info.get("Features", "")).split())


@lru_cache(maxsize=1)
def cpu_name() -> str:
    """`AMD EPYC (family 25 model 17; avx2 avx512f ...)`: the CPU kind a number was made on."""
    info = cpu_info()
    if not info:
        return platform.processor() or platform.machine()
    flags = cpu_flags()
    isa = " ".join(f for f in ISA_FLAGS if f in flags)
    model = info.get("model name") or platform.machine()
    return f"{model} (family {info.get('cpu family', '?')} model {info.get('model', '?')}; {isa})"
