"""Rewrite the absolute paths that older records hold as paths relative to where they live,
once: a record names no machine's folders (search.json's `experiment` relative to the
results folder, as searches now write it; every other `.../results/...` path relative to
the checkout, as the commands now print them). Figures are not touched: only the path text
changes. `--check` lists what would change and exits 1 if anything would.

    python scripts/relative_records.py [--check] [--results-dir results]
"""

from __future__ import annotations

import re
from pathlib import Path

from tune_mnist.parser import Parser

# an absolute folder that holds a `results` folder, up to and including `/results/`
ABSOLUTE = re.compile(r"(?<![\w.~])/(?:[\w.+-]+/)*?results/")
TEXT = ("*.json", "*.md", "*.log", "*.txt", "*.csv")


def rewrite(path: Path) -> str | None:
    """The file's new text, or None when it holds no absolute path. In search.json, Ray's
    experiment folder becomes relative to the results folder (`.ray/<name>`)."""
    text = path.read_text()
    if not ABSOLUTE.search(text):
        return None
    if path.name == "search.json":
        text = re.sub(r'("experiment":\s*")' + ABSOLUTE.pattern, r"\1", text)
    return ABSOLUTE.sub("results/", text)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", default="results", help="folder of experiments")
    parser.add_argument("--check", action="store_true", help="list, change nothing (exit 1 if any)")
    parser.add_argument("--smoke", action="store_true", help="list, change nothing (exit 0)")
    args = parser.parse_args(argv)
    changed = []
    for pattern in TEXT:
        for path in sorted(Path(args.results_dir).rglob(pattern)):
            if ".ray" in path.parts or "journal" in path.parts:
                continue  # Ray's own files and the trials' journals stay as Ray wrote them
            new = rewrite(path)
            if new is not None:
                changed.append(path)
                if not (args.check or args.smoke):
                    path.write_text(new)
    for path in changed:
        print(("would rewrite " if args.check or args.smoke else "rewrote ") + str(path))
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
