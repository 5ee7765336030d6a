"""The generated blocks of the README and docs/history.md: the text between two markers,
replaced whole and atomically (a crash leaves the old file)."""

from __future__ import annotations

from pathlib import Path

from tune_mnist.files import atomic_write_text
from tune_mnist.publish.confirm import InputError

START, END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"
HISTORY_START, HISTORY_END = (
    "<!-- leaderboard-history:start -->",
    "<!-- leaderboard-history:end -->",
)


def read_readme(readme: Path, markers=(START, END), flag: str = "--readme") -> str:
    """The file's text, checked for the markers before anything is written."""
    try:
        text = readme.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise InputError(f"{flag} {readme}: cannot read it ({why}); pass the file") from None
    if markers[0] not in text or markers[1] not in text:
        raise InputError(
            f"{readme}: add the markers {markers[0]} and {markers[1]} where the table goes"
        )
    return text


def update_readme(readme: Path, block: str, markers=(START, END)) -> bool:
    """Replace the text between the markers (atomically: a crash leaves the old file
    whole); False when it was already current."""
    text = read_readme(readme, markers)
    head, rest = text.split(markers[0], 1)
    new = head + block + rest.split(markers[1], 1)[1]
    if new == text:
        return False
    atomic_write_text(readme, new)
    return True
