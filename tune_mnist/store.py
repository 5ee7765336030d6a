"""Saving and loading trained models safely, and the provenance every result carries.

A model file holds only tensors and plain values (state dict, config dict, metrics), so it
loads with `torch.load(weights_only=True)`: nothing in it is ever unpickled as an object.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import platform
import subprocess
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tune_mnist.train.config import TrainConfig
from tune_mnist.train.models import build_from_config

MODEL_FILE = "model.pt"


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a results file is for sharing
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_model(path: str | Path, model: nn.Module, config: TrainConfig, **extra: Any) -> Path:
    """Save weights + config (+ JSON-able extras) to `path` (a file, or a folder -> model.pt)."""
    path = Path(path)
    if path.suffix != ".pt":
        path = path / MODEL_FILE
    # contiguous: a channels-last run's weights are saved in the one layout every reader
    # expects (a no-op, byte for byte, for the contiguous weights of every other run)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {"state_dict": state, "config": config.to_dict(), "extra": extra}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def read_model_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}: pass a .pt file or its folder")
    if not zipfile.is_zipfile(path):  # torch.save's format; anything else is not ours
        raise ValueError(
            f"{path}: not a tune_mnist model file (not a torch.save archive); pass a .pt "
            "written by tune_mnist.train.command or scripts/retrain_best.py, or its folder"
        )
    # weights_only=True refuses any pickled object that is not a tensor or plain container.
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"{path}: refused: it holds objects other than tensors and plain values (nothing "
            "was unpickled); pass a model file written by tune_mnist"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise ValueError(
            f"{path}: not a tune_mnist model file ({reason}); pass a .pt written by "
            "tune_mnist.train.command or scripts/retrain_best.py, or its folder"
        ) from None
    if not isinstance(payload, dict) or not {"state_dict", "config"} <= set(payload):
        raise ValueError(f"{path}: a torch file, but not a tune_mnist model (no state_dict/config)")
    return payload


def load_model(path: str | Path, device: str = "cpu") -> nn.Module:
    """The trained model saved at `path`, in eval mode, with `.config` set to its TrainConfig."""
    payload = read_model_file(path)
    config = TrainConfig.from_dict(payload["config"])  # ConfigError is a ValueError
    model = build_from_config(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:160]
        raise ValueError(f"{path}: weights do not fit its config ({first})") from None
    model.config = config
    return model.to(device).eval()


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The project's commit (with '+dirty' for uncommitted changes); an installed wheel,
    with no checkout around it, names its version instead; else 'unknown'."""
    from tune_mnist.paths import CHECKOUT

    if CHECKOUT is None:  # git here would answer for whatever repository holds the venv
        from importlib.metadata import PackageNotFoundError, version

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


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")
