"""Early-stopping designs scored on the fidelity study's measurements, the study's figures
and the text of docs/fidelity.md.

A design is a list of rungs ending in the full run and a reduction factor: successive
halving over one budget's configurations keeps the best 1/factor at each rung. Its cost is
the share of the core-seconds that a full run of every configuration takes; a design of
warmup-stable-decay branches continues its trunk, so a kept trial pays only the epochs
after its branch point (plus each branch's cool-down epoch).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from tune_mnist import rule
from tune_mnist.fidelity import nominal_cost, parse
from tune_mnist.train.config import TrainConfig

FULL_EPOCHS = rule.EPOCHS
CANDIDATES = [
    (["compressed2", "compressed3", "full"], 4),
    (["compressed3", "full"], 3),
    (["compressed2", "full"], 3),
    (["subset25", "full"], 3),
    (["wsd3", "full"], 3),
    (["compressed2", "compressed5", "full"], 3),
    (["compressed3", "compressed5", "full"], 3),
    (["wsd3", "wsd5", "full"], 3),
    (["compressed3", "full"], 4),
    (["compressed3", "compressed5", "full"], 4),
    (["compressed2", "compressed5", "full"], 4),
]


def nominal(name: str) -> float:
    """Training steps as a share of the full run's, for a fidelity column's name (a prefix
    of the full run costs its epochs; `full:seed1` is a full run)."""
    if name.startswith("prefix"):
        return int(name[len("prefix") :]) / FULL_EPOCHS
    return nominal_cost(TrainConfig(epochs=FULL_EPOCHS), name.partition(":")[0])


def spearman(a: pd.Series, b: pd.Series) -> float:
    pair = pd.concat([a, b], axis=1).dropna()
    if len(pair) < 3 or pair.iloc[:, 0].nunique() < 2 or pair.iloc[:, 1].nunique() < 2:
        return math.nan
    return float(pair.iloc[:, 0].rank().corr(pair.iloc[:, 1].rank()))


def kept(low: pd.Series, final: pd.Series) -> tuple[int, int]:
    """(how many of the final top third a rung keeping the best third by `low` keeps, of
    how many): ties broken by the trial key, so the count is reproducible."""
    pair = pd.concat([low, final], axis=1, keys=["low", "final"]).dropna().sort_index()
    third = max(1, round(len(pair) / 3))
    top_final = set(pair["final"].sort_values(ascending=False, kind="stable").index[:third])
    top_low = set(pair["low"].sort_values(ascending=False, kind="stable").index[:third])
    return len(top_final & top_low), third


def design_cost(rungs: list[str], counts: list[int]) -> float:
    """Core-seconds of successive halving as a share of a full run of all `counts[0]`."""
    spent, trained = 0.0, 0  # trained: epochs the kept trials' WSD trunk already has
    for name, n in zip(rungs, counts, strict=True):
        kind, amount = parse(name)
        if kind == "wsd":
            spent += n * (amount - trained + 1) / FULL_EPOCHS  # continue, then cool down
            trained = amount
        elif name == "full" and trained:
            spent += n * (FULL_EPOCHS - trained) / FULL_EPOCHS
        else:
            spent += n * nominal(name)
    return spent / counts[0]


def simulate(acc: pd.DataFrame, rungs: list[str], factor: int) -> dict:
    """Successive halving over `acc`'s configurations that have every rung's figure."""
    if any(name not in acc for name in rungs):
        return {}
    data = acc.dropna(subset=[*rungs[:-1], "full"])
    if len(data) < 6:
        return {}
    alive, counts = data.index, [len(data)]
    third = set(data["full"].sort_values(ascending=False).index[: round(len(data) / 3)])
    kept_first = None
    for name in rungs[:-1]:
        n = max(1, math.ceil(len(alive) / factor))
        alive = data.loc[alive, name].sort_values(ascending=False, kind="stable").index[:n]
        counts.append(len(alive))
        kept_first = len(third & set(alive)) if kept_first is None else kept_first
    pick = data.loc[alive, "full"].idxmax()
    return {
        "design": " -> ".join(rungs),
        "factor": factor,
        "configs": len(data),
        "cost": design_cost(rungs, counts),
        "top third kept at rung 1": f"{kept_first}/{len(third)}",
        "best reaches full": data["full"].idxmax() in set(alive),
        "regret (points)": float(data["full"].max() - data.loc[pick, "full"]),
    }


def asha(acc: pd.DataFrame, rungs: list[str], factor: int, orders: int = 200) -> dict:
    """Ray's asynchronous rule over `acc`'s configurations arriving in random orders: a trial
    goes on from a rung unless its figure is below the (1 - 1/factor) quantile of the figures
    recorded there before it, so the first arrivals are promoted. (mean cost, mean regret)."""
    data = acc.dropna(subset=[*rungs[:-1], "full"])
    rng = np.random.default_rng(0)
    costs, regrets = [], []
    for _ in range(orders):
        recorded: list[list[float]] = [[] for _ in rungs[:-1]]
        spent, reached = 0.0, []
        for i in rng.permutation(len(data)):
            row = data.iloc[i]
            for r, name in enumerate(rungs):
                spent += _rung_cost(rungs, r)
                if name == "full":
                    reached.append(row["full"])
                    break
                before = recorded[r]
                cut = np.nanpercentile(before, (1 - 1 / factor) * 100) if before else None
                before.append(row[name])
                if cut is not None and row[name] < cut:
                    break
        costs.append(spent / len(data))
        regrets.append(data["full"].max() - max(reached))
    return {"cost (ASHA)": float(np.mean(costs)), "regret (ASHA)": float(np.mean(regrets))}


def _rung_cost(rungs: list[str], index: int) -> float:
    """What one trial pays for rung `index` after the ones before it (a WSD rung continues
    its trunk), as a share of a full run."""

    def through(k: int) -> float:
        return design_cost(rungs[:k], [1] * k) if k else 0.0

    return through(index + 1) - through(index)


def design_table(acc: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for box in ("4k", "8k"):
        part = acc[acc["box"] == box]
        for rungs, factor in CANDIDATES:
            row = simulate(part, rungs, factor)
            if row:
                rows.append({"box": box, **row, **asha(part, rungs, factor)})
    return pd.DataFrame(rows)


def figures(acc: pd.DataFrame, table: pd.DataFrame, folder: Path) -> list[str]:
    import matplotlib  # lazy: matplotlib loads only to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib loads only to draw

    names = []
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    rank = table[~table["fidelity"].str.startswith("full")]
    cost = rank["measured cost"].fillna(rank["nominal cost"])
    ax.scatter(cost, rank["spearman vs full (4k box)"], color="tab:blue", label="2,500-4,000")
    ax.scatter(cost, rank["spearman vs full (all)"], color="tab:orange", marker="s", label="all")
    for x, y, label in zip(cost, rank["spearman vs full (4k box)"], rank["fidelity"], strict=True):
        ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ceiling = table[table["fidelity"] == "full:seed1"]
    if len(ceiling):
        ax.axhline(ceiling["spearman vs full (all)"].iloc[0], color="gray", ls="--", lw=1)
        ax.text(0.02, ceiling["spearman vs full (all)"].iloc[0], " a second seed", fontsize=7)
    ax.set_xlabel("cost: core-seconds as a share of the full 15-epoch run")
    ax.set_ylabel("Spearman vs the 15-epoch validation accuracy")
    ax.set_title("How well each cheap evaluation ranks, against what it costs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(folder / "fidelity-rank.png", dpi=110)
    plt.close(fig)
    names.append("fidelity-rank.png")
    shown = [n for n in ("prefix3", "compressed3", "subset25", "wsd3", "compressed5", "wsd5")]
    shown = [n for n in shown if n in acc]
    fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 2.8), sharey=True)
    for ax, name in zip(axes, shown, strict=True):
        for box, color in (("4k", "tab:blue"), ("8k", "tab:red"), ("", "tab:gray")):
            part = acc[acc["box"] == box]
            ax.scatter(part[name], part["full"], s=12, color=color)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("val acc at this fidelity (%)", fontsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("15-epoch val acc (%)")
    fig.tight_layout()
    fig.savefig(folder / "fidelity-scatter.png", dpi=110)
    plt.close(fig)
    names.append("fidelity-scatter.png")
    return names


def markdown(frame: pd.DataFrame) -> str:
    def cell(value):
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.to_numpy()]
    return "\n".join(lines)
