"""docs/fidelity.md and its figures, from the fidelity study's runs and the campaign tables.

Nothing here trains: every figure comes from results/fidelity-study/runs.parquet (the
study's runs), results/campaign3-*/ (the searches' own 15-epoch runs and their prefixes) and
the published 5-seed confirmations. `python scripts/fidelity_study.py analyse` writes it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from tune_mnist.paths import results_root
from tune_mnist.study import designs
from tune_mnist.study.designs import kept, spearman
from tune_mnist.study.fidelity_runs import CAMPAIGNS, configurations
from tune_mnist.study.fidelity_text import render
from tune_mnist.tables import read_parquet

PREFIXES = (3, 5)  # epochs of the 15-epoch run itself: what ASHA's rungs read before


def load(folder: Path, root: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per configuration with a column per fidelity's validation accuracy, one row
    per configuration with a column per fidelity's training seconds)."""
    root = results_root() if root is None else root
    configs = configurations(root).set_index(["search", "trial_id"])
    acc = pd.DataFrame(index=configs.index)
    secs = pd.DataFrame(index=configs.index)
    acc["box"], acc["params"] = configs["box"], configs["params"]
    searched = configs[configs["status"] == "completed"]
    acc.loc[searched.index, "full"] = searched["final_val_acc"]
    secs.loc[searched.index, "search_full"] = searched["train_s"]
    for name in CAMPAIGNS:
        epochs = read_parquet(root / name / "epochs.parquet")
        for e in PREFIXES:
            at = epochs[epochs["epoch"] == e].set_index("trial_id")["val_acc"]
            for tid, value in at.items():
                if (name, tid) in acc.index:
                    acc.loc[(name, tid), f"prefix{e}"] = value
    runs = read_parquet(folder / "runs.parquet")
    for _, run in runs.iterrows():
        column = run["fidelity"] + ("" if int(run["seed"]) == 0 else f":seed{int(run['seed'])}")
        acc.loc[(run["search"], run["trial_id"]), column] = run["final_val_acc"]
        secs.loc[(run["search"], run["trial_id"]), column] = run["train_s"]
    acc["test5"] = published_means(root).reindex(acc.index)
    return acc, secs


def published_means(root: Path) -> pd.Series:
    """The 5-seed test means of the configurations confirmed on fresh seeds."""
    out = {}
    for name in CAMPAIGNS:
        path = root / name / "confirmations.parquet"
        if path.is_file():
            table = read_parquet(path)
            for tid, mean in table.groupby("trial_id")["final_test_acc"].mean().items():
                out[(name, tid)] = float(mean)
    return pd.Series(out, dtype=float)


def cost_share(secs: pd.DataFrame, column: str) -> float:
    """Median over configurations of a fidelity's core-seconds over its full run's, both
    measured by the study on this machine (the search's own runs shared their cores)."""
    full = secs.get("full", pd.Series(dtype=float)).fillna(secs.get("full:seed1"))
    if column not in secs or full is None:
        return math.nan
    ratio = (secs[column] / full).dropna()
    return float(ratio.median()) if len(ratio) else math.nan


def fidelity_table(acc: pd.DataFrame, secs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    names = [c for c in acc.columns if c not in ("box", "params", "full", "test5")]
    for name in sorted(names, key=lambda n: (n.startswith("full"), designs.nominal(n), n)):
        row = {"fidelity": name, "nominal cost": designs.nominal(name)}
        row["measured cost"] = cost_share(secs, name)
        for label, part in (("all", acc), ("4k box", acc[acc.box == "4k"])):
            row[f"n ({label})"] = int(part[name].notna().sum())
            row[f"spearman vs full ({label})"] = spearman(part[name], part["full"])
            got, of = kept(part[name], part["full"])
            row[f"top third kept ({label})"] = f"{got}/{of}"
        both = int(acc[[name, "test5"]].notna().all(axis=1).sum())
        row["spearman vs 5-seed test (n)"] = f"{spearman(acc[name], acc['test5']):.2f} ({both})"
        rows.append(row)
    return pd.DataFrame(rows)


# the cold 4k search under Ray's rule, under promotion, with the campaign spaces' rungs, and
# with the default space's
COLD = {
    "ray": "cold-4k",
    "promotion": "cold-4k-asha",
    "chosen": "cold-4k-c3c5",
    "default": "cold-4k-c3full",
}


def searches_share(results: Path) -> dict[str, float]:
    """The full-fidelity share each cold search recorded in its summary.json."""

    out = {}
    for rule, name in COLD.items():
        path = results / name / "summary.json"
        if path.is_file():
            out[rule] = json.loads(path.read_text()).get("full_fidelity_share")
    return out


def write_page(folder: Path, page: Path) -> Path:
    acc, secs = load(folder)
    table = fidelity_table(acc, secs)
    figures = designs.figures(acc, table, page.parent)
    shares = searches_share(folder.parent)
    page.write_text(render(acc, secs, table, figures, shares))
    acc.reset_index().to_csv(folder / "by_configuration.csv", index=False)
    return page
