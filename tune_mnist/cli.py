"""`tune-mnist <command> ...`: one door to every command, installed with the package.

tune-mnist search --gpus 4 --confirm 5    (= python scripts/search.py ...)
tune-mnist race | retrain | reproduce | report | leaderboard | predict | train --help
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {  # name -> (module whose main() runs it, what it does)
    "search": ("tune_mnist.chain", "search, race and (--confirm N) confirm and publish"),
    "race": ("tune_mnist.publish.race_command", "race a search's best on more validation runs"),
    "retrain": ("tune_mnist.publish.retrain", "confirm trials on fresh seeds, on test"),
    "reproduce": ("tune_mnist.publish.reproduce", "retrain a confirmed seed, compare bit for bit"),
    "report": ("tune_mnist.search.report", "a search's report.html and figures"),
    "leaderboard": ("tune_mnist.publish.leaderboard", "every confirmed model, one table"),
    "predict": ("tune_mnist.publish.predict", "label digit images with a trained model"),
    "train": ("tune_mnist.train.command", "train one model"),
}


def usage() -> str:
    lines = ["usage: tune-mnist <command> [--help] ...", "", "commands:"]
    lines += [f"  {name:<12} {what}" for name, (_, what) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: no command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[name][0]).main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
