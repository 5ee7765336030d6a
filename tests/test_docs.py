"""The documents a newcomer reads: a short README with the Quickstart near the top, links
that resolve, and text that speaks of the project, not of how it was made."""

import re
import subprocess
import sys

from searchutil import ROOT

MAX_README_LINES = 250
QUICKSTART_BY_LINE = 40
# words of how the project was made (work periods and tracker numbers), spelled in parts
# so that this file does not match itself
PERIOD = "sess" + "ions?"
MADE = re.compile(
    rf"\b(this|that|last|next|earlier|previous|a later) {PERIOD}\b"
    rf"|\b{PERIOD} \(?\d|\bissues? #?\d+\b",
    re.IGNORECASE,
)
ANY_PERIOD = re.compile(rf"\b{PERIOD}\b", re.IGNORECASE)
PROSE_OK = ("SSH " + "session",)  # a user's login, not the project's history
LINK = re.compile(r"\]\(([^)\s]+)\)")


def tracked_text_files() -> list:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    out = []
    for name in listed:
        path = ROOT / name
        if not path.is_file() or path.suffix in (".pt", ".png", ".parquet", ".gz"):
            continue
        try:
            out.append((name, path.read_text()))
        except UnicodeDecodeError:
            continue  # binary
    return out


def test_the_readme_is_short_and_starts_with_the_quickstart():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README has {len(lines)} lines"
    heading = next(i for i, line in enumerate(lines, 1) if line.startswith("## Quickstart"))
    assert heading <= QUICKSTART_BY_LINE
    assert "<!-- leaderboard:start -->" in lines  # the generated honest table is there


def test_no_tracked_text_speaks_of_how_the_project_was_made():
    found = []
    for name, text in tracked_text_files():
        if name == "tests/test_docs.py":
            continue
        prose = name.endswith((".md", ".yaml", ".html"))
        for number, line in enumerate(text.splitlines(), 1):
            cleaned = line
            for allowed in PROSE_OK:
                cleaned = cleaned.replace(allowed, "")
            if MADE.search(cleaned) or (prose and ANY_PERIOD.search(cleaned)):
                found.append(f"{name}:{number}: {line.strip()[:100]}")
    assert not found, "\n".join(found[:20])


def test_the_check_catches_such_words():
    assert MADE.search("as measured in " + "sess" + "ion 6")
    assert MADE.search("retrained this " + "sess" + "ion")
    assert MADE.search("see iss" + "ue 17")
    assert not MADE.search("pytest's scope='" + "sess" + "ion'")


def test_every_relative_link_in_the_docs_resolves():
    pages = [ROOT / "README.md", ROOT / "search_spaces" / "README.md"]
    pages += sorted((ROOT / "docs").glob("*.md"))
    broken = []
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            path = target.split("#")[0]
            if path and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert len(pages) > 5 and not broken, broken


def test_each_scripts_help_states_its_exit_statuses_as_the_readme_does():
    readme = (ROOT / "README.md").read_text()
    assert "## Exit statuses" in readme
    for script in ("search.py", "retrain_best.py", "reproduce.py"):
        assert f"`{script}`" in readme.split("## Exit statuses")[1].split("##")[0]
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / script), "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        text = " ".join(done.stdout.split())
        assert done.returncode == 0 and "exit status: 0 " in text and "; 2 bad" in text, script


def test_no_tracked_record_or_doc_names_a_machines_folder():
    """Records hold paths relative to where they live (scripts/relative_records.py rewrote
    the older ones once): no absolute `.../results/...` path in a tracked text file."""
    import re

    absolute = re.compile(r"(?<![\w.~])/(?:[\w.+-]+/)*?results/")
    listed = subprocess.run(
        ["git", "ls-files", "results", "docs", "README.md", "search_spaces"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout.split()
    texts = [p for p in listed if p.endswith((".json", ".md", ".log", ".txt", ".csv", ".yaml"))]
    assert len(texts) > 50
    found = [p for p in texts if absolute.search((ROOT / p).read_text(errors="replace"))]
    assert found == []


def test_relative_records_rewrites_absolute_paths_and_smoke_changes_nothing(tmp_path):
    record = tmp_path / "cold" / "search.json"
    record.parent.mkdir()
    record.write_text('{"experiment": "/home/someone/tune_mnist/results/.ray/cold"}\n')
    script = [sys.executable, str(ROOT / "scripts" / "relative_records.py")]
    script += ["--results-dir", str(tmp_path)]
    for flag, code in (("--smoke", 0), ("--check", 1)):
        done = subprocess.run([*script, flag], capture_output=True, text=True)
        assert done.returncode == code and "would rewrite" in done.stdout, done.stderr
        assert "/home/someone" in record.read_text()
    assert subprocess.run(script, capture_output=True).returncode == 0
    assert record.read_text() == '{"experiment": ".ray/cold"}\n'


def test_every_column_the_writers_produce_is_in_the_tables_page():
    """docs/tables.md names every column of a search's, a confirmation's and a race's
    tables (the config columns are TrainConfig's fields, documented in config.py)."""
    import dataclasses
    import re

    import pandas as pd

    from tune_mnist.train.config import TrainConfig

    page = (ROOT / "docs" / "tables.md").read_text()
    documented = set(re.findall(r"`(\w+)`", page))
    documented |= {f.name for f in dataclasses.fields(TrainConfig)}
    folder = ROOT / "results" / "cold-4k"  # a search, a race and a confirmation
    names = ["trials", "epochs", "passing", "confirmations", "confirmation_epochs"]
    missing = {}
    for name in [*names, "race_runs", "race"]:
        columns = set(pd.read_parquet(folder / f"{name}.parquet").columns)
        if columns - documented:
            missing[name] = sorted(columns - documented)
    board = set(pd.read_parquet(ROOT / "results" / "leaderboard.parquet").columns)
    if board - documented:
        missing["leaderboard"] = sorted(board - documented)
    assert missing == {}


def test_every_quoted_section_reference_names_a_heading_that_exists():
    """`(README, The CPU step)`, `docs/history.md, "The main command, cold"`: the file and
    a heading it has, in every tracked text file."""
    import re

    reference = re.compile(r'(README|[\w/]+\.md), (?:"([^"]+)"|([A-Z][\w -]+?)(?=[);"]))')
    refs = []
    for name, text in tracked_text_files():
        for match in reference.finditer(text):
            target, section = match.group(1), match.group(2) or match.group(3)
            path = ROOT / ("README.md" if target == "README" else target)
            if not path.is_file():
                path = ROOT / "docs" / target
            refs.append((name, target, section, path))
    assert len(refs) >= 5
    broken = []
    for name, target, section, path in refs:
        headings = (
            [line.lstrip("#").strip() for line in path.read_text().splitlines() if line[:1] == "#"]
            if path.is_file()
            else []
        )
        if not any(h.startswith(section) for h in headings):
            broken.append(f"{name}: {target}, {section}")
    assert broken == []
