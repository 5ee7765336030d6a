"""The model file: weights, config and metrics, saved and loaded safely.

A model file holds only tensors and plain values (state dict, config dict, metrics), so it
loads with `torch.load(weights_only=True)`: nothing in it is ever unpickled as an object.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tune_mnist.files import atomic_write_bytes
from tune_mnist.train.config import TrainConfig
from tune_mnist.train.models import build_from_config

MODEL_FILE = "model.pt"


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
        raise FileNotFoundError(f"no model file at {path}: {_where_instead(path)}")
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


def _where_instead(path: Path) -> str:
    """What to pass instead: a search's `best` exists only once a confirmed model passed."""
    best = path.parent if path.name == MODEL_FILE else path
    confirmed = sorted(p for p in (best.parent / "confirmed").glob("*") if p.is_dir())
    if best.name == "best" and confirmed:
        return (
            f"no model of {best.parent} passed yet (best/ is its first that passes); its "
            f"confirmed models: {', '.join(map(str, confirmed))}"
        )
    return "pass a .pt file or its folder"


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
