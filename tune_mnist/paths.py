"""Where the project's files are, the same from a checkout, an editable install or an
installed wheel: the results folder and the shipped search spaces.

- results: $TUNE_MNIST_RESULTS, else `results/` in the checkout, else (an installed wheel)
  `results/` in the current folder;
- search spaces: `search_spaces/` in the checkout, else the copy the wheel ships in the
  package (`tune_mnist/search_spaces`, pyproject's package-dir).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
_ROOT = PACKAGE.parent
CHECKOUT = _ROOT if (_ROOT / "pyproject.toml").is_file() else None


def results_root() -> Path:
    if os.environ.get("TUNE_MNIST_RESULTS"):
        return Path(os.environ["TUNE_MNIST_RESULTS"])
    return (CHECKOUT or Path.cwd()) / "results"


RESULTS_DIR_HELP = "folder of experiments (default: $TUNE_MNIST_RESULTS, else results/)"


def add_results_dir(parser) -> None:
    """`--results-dir`: the folder of experiments, the same flag on every command."""
    parser.add_argument("--results-dir", help=RESULTS_DIR_HELP)


def use_results_dir(value: str | None) -> None:
    """Make `--results-dir` the results root of this process and of every one it starts
    (Ray's workers, the chain's stages) by setting $TUNE_MNIST_RESULTS."""
    if value:
        os.environ["TUNE_MNIST_RESULTS"] = str(value)


def spaces_dir() -> Path:
    if CHECKOUT is not None and (CHECKOUT / "search_spaces").is_dir():
        return CHECKOUT / "search_spaces"
    return PACKAGE / "search_spaces"


def below(path, root: Path, otherwise: str | None = None) -> str:
    """`path` relative to `root` when it lies below it (a record names no machine's
    folders), else `otherwise`, else as given (a URI, a shared file system)."""
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path) if otherwise is None else otherwise


def shown(path: Path) -> Path:
    """`path` as a command or a record should name it: relative to the current folder when
    it lies below it (a record names no machine's folders), else as it is."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path
