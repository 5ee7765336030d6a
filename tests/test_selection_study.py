"""scripts/selection_study.py on the committed results: every section, figures in range."""

import re

import pytest
from searchutil import ROOT, run_script

pytestmark = pytest.mark.slow


def test_the_study_reports_rungs_metrics_search_figures_and_noise(tmp_path):
    out = tmp_path / "figures.md"
    done = run_script("selection_study.py", "--smoke", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    for title in ("## 1. Rungs", "## 2. Metrics", "## 3. Search-time", "## 4. Noise floors"):
        assert title in text, title
    # the 15-epoch rung table: 14 epochs, every correlation a number in [-1, 1]
    rung = text.split("15-epoch runs")[1].split("\n\n")[1].splitlines()[2:]
    assert len(rung) == 14
    for line in rung:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all(-1 <= float(c) <= 1 for c in cells[2:]), line
    assert "| binomial, 5,000 images at 99.4% | 0.109 |" in text  # sqrt(.994 * .006 / 5000)
    orders = [float(x) for x in re.findall(r"\| (0\.\d+) \| -?\d\.\d+ \|\n", text)]
    assert orders and all(0 <= p <= 1 for p in orders)


def test_the_cpu_step_accuracy_smoke_test_trains_and_tabulates_without_touching_results():
    before = sorted((ROOT / "results" / "cpu-step").rglob("*"))
    done = run_script("cpu_step_accuracy.py", "--smoke")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| super_light | channels_last | 1 |" in done.stdout
    assert "| lean3k | channels_last | 1 |" in done.stdout
    assert sorted((ROOT / "results" / "cpu-step").rglob("*")) == before
