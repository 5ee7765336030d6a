"""Every command's argument parser: a flag it cannot read is one line (what was wrong, where
the flags are listed) and exit 2, as every other bad input, not argparse's usage block."""

from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """argparse's parser, without abbreviations (a flag added later must not change what an
    abbreviation meant), erring in one line."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(**kwargs)

    def error(self, message: str):
        command = f"python {self.prog}" if not self.prog.startswith("python") else self.prog
        self.exit(2, f"error: {message} (`{command} --help` lists the flags)\n")
