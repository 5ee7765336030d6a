"""MNIST as tensors on the training device.

The four IDX files are read from a data directory (``--data-dir``, else ``$TUNE_MNIST_DATA``,
else a user cache folder), gzip or raw, flat or in torchvision's ``MNIST/raw/`` layout. If they
are not there, torchvision downloads them (it verifies checksums). Every file is checked:
magic number, counts, shape and the md5 of the decompressed bytes. Nothing synthetic, ever.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

ENV_VAR = "TUNE_MNIST_DATA"
# every command's --data-dir, in one wording
DATA_DIR_HELP = (
    f"folder with the MNIST IDX files (default: ${ENV_VAR}, else ~/.cache/tune_mnist/mnist, "
    "downloaded on first use)"
)
MEAN = 0.1307  # training-set pixel mean after /255
STD = 0.3081  # training-set pixel std after /255

# name -> (magic number, shape, md5 of the decompressed IDX bytes)
FILES = {
    "train-images-idx3-ubyte": (2051, (60000, 28, 28), "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (2049, (60000,), "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (2051, (10000, 28, 28), "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (2049, (10000,), "27ae3e4e09519cfbb04c329615203637"),
}


class DataError(RuntimeError):
    """MNIST could not be found, downloaded or read; the message says what to do."""


@dataclass
class MNIST:
    """The data set as tensors: uint8 images (N, 28, 28) and int64 labels, on one device.
    `val_x` / `val_y` hold the validation images once `holdout` has split them off (else
    empty): they come from the training files, never from the test set."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.val_x is None:  # no split yet: an empty validation set
            self.val_x = self.train_x[:0]
            self.val_y = self.train_y[:0]

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def to(self, device: str | torch.device) -> MNIST:
        return MNIST(*(t.to(device) for t in self.tensors()))

    def holdout(self, val_size: int, split: int = 0) -> MNIST:
        """Move `val_size` training images to the validation set (0 = no split): with split
        0 the LAST ones, a fixed rule, the same for every seed and run; with split N >= 1 a
        random val_size of them drawn with seed N, the rest kept in their order. Either way a
        model selected on them has never trained on them, and the test set stays out."""
        if not val_size:
            return self
        if len(self.val_y) or val_size >= len(self.train_y):
            raise ValueError(f"cannot hold out {val_size} of {len(self.train_y)} images")
        n = len(self.train_y)
        if split:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(split))
            held, kept = (
                i.sort().values.to(self.device) for i in (order[:val_size], order[val_size:])
            )
            train_x, train_y = self.train_x[kept], self.train_y[kept]
            val_x, val_y = self.train_x[held], self.train_y[held]
        else:
            cut = n - val_size
            train_x, train_y = self.train_x[:cut], self.train_y[:cut]
            val_x, val_y = self.train_x[cut:], self.train_y[cut:]
        return MNIST(train_x, train_y, self.test_x, self.test_y, val_x, val_y)

    def subset(self, train: int = 0, test: int = 0) -> MNIST:
        """The first `train` / `test` samples (0 keeps all); views, no copy."""
        tr = train or len(self.train_y)
        te = test or len(self.test_y)
        return MNIST(
            self.train_x[:tr],
            self.train_y[:tr],
            self.test_x[:te],
            self.test_y[:te],
            self.val_x,
            self.val_y,
        )

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.train_x, self.train_y, self.test_x, self.test_y, self.val_x, self.val_y)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tune_mnist" / "mnist"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """--data-dir wins, then $TUNE_MNIST_DATA, then the user cache folder."""
    chosen = data_dir or os.environ.get(ENV_VAR) or default_cache_dir()
    return Path(chosen).expanduser()


def find_file(folder: Path, name: str) -> Path | None:
    for sub in (folder, folder / "MNIST" / "raw"):
        for candidate in (sub / name, sub / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_idx(path: Path, name: str) -> torch.Tensor:
    """Parse one IDX file (gzip or raw) and check it against what MNIST must be."""
    magic, shape, md5 = FILES[name]
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read or decompress ({exc}); replace the file") from exc
    header = 4 + 4 * len(shape)
    if len(raw) < header:
        raise DataError(f"{path}: truncated ({len(raw)} bytes); replace the file")
    found_magic = int.from_bytes(raw[:4], "big")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(len(shape)))
    if found_magic != magic or dims != shape:
        raise DataError(
            f"{path}: not the MNIST file {name} (magic {found_magic}, shape {dims}; "
            f"expected {magic}, {shape}); replace the file"
        )
    expected = header + int(torch.Size(shape).numel())
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes, expected {expected}; truncated, replace it")
    if hashlib.md5(raw).hexdigest() != md5:
        raise DataError(f"{path}: md5 mismatch, the content is corrupted; replace the file")
    data = torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(shape)
    return data if len(shape) == 3 else data.long()


def download(folder: Path) -> None:
    """Fetch MNIST with torchvision into `folder/MNIST/raw` (torchvision checks the md5s).
    A failed download removes the folders it made: no empty cache is left behind."""
    made = next((p for p in [*reversed(folder.parents), folder] if not p.exists()), None)
    made = made or folder / "MNIST"
    existed = made.exists()
    try:
        # lazy: torchvision loads only to download
        from torchvision.datasets import MNIST as TorchvisionMNIST

        TorchvisionMNIST(root=str(folder), train=True, download=True)
        TorchvisionMNIST(root=str(folder), train=False, download=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means "offline or blocked"
        if not existed:
            shutil.rmtree(made, ignore_errors=True)
        reason = (str(exc).splitlines() or [""])[0].rstrip(": ") or type(exc).__name__
        raise DataError(
            f"MNIST not found in {folder} (nor {folder / 'MNIST' / 'raw'}) and the download "
            f"failed ({reason}: offline, or the mirrors are blocked); put the four IDX files "
            f"there, or point --data-dir or ${ENV_VAR} at a folder that holds them"
        ) from exc


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    download_ok: bool = True,
) -> MNIST:
    """Read (or download, then read) the full data set and move it to `device`."""
    folder = resolve_data_dir(data_dir)
    if (data_dir or os.environ.get(ENV_VAR)) and not folder.is_dir():
        raise DataError(
            f"data folder {folder} does not exist: point --data-dir or ${ENV_VAR} at the "
            "folder with the four MNIST IDX files (create it first to download into it)"
        )
    paths = {name: find_file(folder, name) for name in FILES}
    if any(p is None for p in paths.values()):
        missing = ", ".join(name for name, p in paths.items() if p is None)
        if not download_ok:
            raise DataError(
                f"MNIST files missing in {folder}: {missing}; point --data-dir or ${ENV_VAR} "
                "at a folder that holds the four IDX files"
            )
        download(folder)
        paths = {name: find_file(folder, name) for name in FILES}
    tensors = [read_idx(paths[name], name) for name in FILES]
    return MNIST(*tensors).to(device)


_ON_DEVICE: dict[tuple, MNIST] = {}  # this process's copy on an accelerator (one at a time)


def on_device(data: MNIST, device: torch.device) -> MNIST:
    """`data` on `device`. A Ray worker reused for trial after trial (the search reuses its
    actors) keeps one copy on its GPU instead of copying the images again for each trial;
    the copy is keyed by the tensors' bytes, so other data (a subset, a split) never hits it."""
    if data.device == device:
        return data
    if device.type == "cpu":
        return data.to(device)
    key = (str(device), *(_fingerprint(t) for t in data.tensors()))
    if key not in _ON_DEVICE:
        _ON_DEVICE.clear()  # the previous trial's data: free its GPU memory
        _ON_DEVICE[key] = data.to(device)
    return _ON_DEVICE[key]


def _fingerprint(tensor: torch.Tensor) -> tuple:
    raw = tensor.detach().cpu().contiguous().numpy()
    return (tuple(tensor.shape), str(tensor.dtype), zlib.crc32(raw.view("uint8").ravel()))


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float images (N, 28, 28) -> normalised float (N, 1, 28, 28)."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return (x - MEAN) / STD


def batches(n: int, batch_size: int, generator: torch.Generator | None, device: torch.device):
    """Index tensors of one epoch: shuffled by `generator` (None keeps order)."""
    if generator is None:
        order = torch.arange(n, device=device)
    else:
        order = torch.randperm(n, generator=generator, device=device)
    return order.split(batch_size)
