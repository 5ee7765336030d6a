"""Saving and loading trained models safely, and the provenance every result carries.

A model file holds only tensors and plain values (state dict, config dict, metrics), so it
loads with `torch.load(weights_only=True)`: nothing in it is ever unpickled as an object.
"""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tune_mnist.config import TrainConfig
from tune_mnist.models import build_from_config

MODEL_FILE = "model.pt"


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_model(path: str | Path, model: nn.Module, config: TrainConfig, **extra: Any) -> Path:
    """Save weights + config (+ JSON-able extras) to `path` (a file, or a folder -> model.pt)."""
    path = Path(path)
    if path.suffix != ".pt":
        path = path / MODEL_FILE
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
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
    # weights_only=True refuses any pickled object that is not a tensor or plain container.
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model(path: str | Path, device: str = "cpu") -> nn.Module:
    """The trained model saved at `path`, in eval mode, with `.config` set to its TrainConfig."""
    payload = read_model_file(path)
    config = TrainConfig.from_dict(payload["config"])
    model = build_from_config(config)
    model.load_state_dict(payload["state_dict"])
    model.config = config
    return model.to(device).eval()


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The project's commit (with '+dirty' for uncommitted changes), or 'unknown'."""
    root = Path(__file__).resolve().parent.parent
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
        "host": platform.node(),
    }


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")
