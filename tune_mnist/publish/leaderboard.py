"""The published results: every confirmed model under results/, as `scripts/leaderboard.py`.

Reads each `results/<experiment>/confirmations.parquet` (one row per retrained seed, written
by `scripts/retrain_best.py`), groups the rows into models (experiment, trial, epochs), and
writes the tables and the picture. The README's block holds only the honest rule's models:
chosen on validation, 5+ fresh seeds, passing when every seed reaches 99.4%. The history's
block (docs/history.md) holds every model with 3+ seeds, campaign 1's "chosen on test" among
them. Only these confirmations count: a search's own run is one lucky seed.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from tune_mnist import rule  # noqa: E402
from tune_mnist.confirmed import MODEL, chosen_on, confirmed_rows  # noqa: E402
from tune_mnist.files import atomic_write_bytes, atomic_write_text  # noqa: E402
from tune_mnist.parser import Parser
from tune_mnist.paths import add_results_dir, results_root, shown, use_results_dir  # noqa: E402
from tune_mnist.publish.confirm import InputError, reproduce_command  # noqa: E402
from tune_mnist.publish.labels import describe  # noqa: E402
from tune_mnist.publish.readme_blocks import (  # noqa: E402
    END,
    HISTORY_END,
    HISTORY_START,
    START,
    read_readme,
    update_readme,
)
from tune_mnist.results import config_of  # noqa: E402
from tune_mnist.tables import TableError, read_search_record, write_parquet  # noqa: E402
from tune_mnist.train.config import cpu_step_of  # noqa: E402

BUDGETS = (2000, 3000, 4000, 5000, 6000, 8000)  # parameters, inclusive
TARGET = rule.TARGET_ACC
MIN_SEEDS = 3  # fewer seeds than this is not a published figure
# The rule the README publishes under: chosen on validation, 5 fresh seeds, all >= TARGET
STRICT_SEEDS = rule.SEEDS
STRICT_BUDGETS = (1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 8000)


def collect(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(seed rows, one row per model), models sorted by parameters."""
    seeds = confirmed_rows(root)
    if seeds.empty:
        raise InputError(
            f"no confirmations under {root} (smoke runs are not figures): run "
            "scripts/retrain_best.py first"
        )
    models = seeds.groupby(MODEL, sort=False).agg(
        arch=("arch", "first"),
        params=("params", "first"),
        seeds=("seed", "nunique"),
        mean=("final_test_acc", "mean"),
        std=("final_test_acc", "std"),
        min=("final_test_acc", "min"),
        max=("final_test_acc", "max"),
        train_s=("train_s", "mean"),
        completed=("status", lambda s: bool((s == "completed").all())),
    )
    models = models.reset_index()
    # groupby keeps first-seen order on both sides, so these rows line up with `models`
    first = seeds.groupby(MODEL, sort=False).head(1)
    models["selected_on"] = list(first["selected_on"])  # val_acc or test_acc, as in the tables
    models["chosen_on"] = [chosen_on(s) for s in first["selected_on"]]
    models["passed"] = list(first["passes"])  # the README's rule (tune_mnist.confirmed)
    models["model"] = [describe(row) for _, row in first.iterrows()]
    ran = {name: search_epochs(root / name) for name in first["experiment"].unique()}
    models["command"] = [
        reproduce(row, row["experiment"], root, int(n), ran[row["experiment"]])
        for (_, row), n in zip(first.iterrows(), models["seeds"], strict=True)
    ]
    return seeds, models.sort_values(["params", "mean"], ascending=[True, False])


def reproduce(
    row: pd.Series,
    experiment: str,
    root: Path,
    seeds: int = MIN_SEEDS,
    search_ran: int = rule.EPOCHS,
) -> str:
    """retrain_best.py for this model's trial and seeds with the thread count they were
    trained with (a row of 0 used torch's default, which --threads 0 asks for again), and
    --epochs where they differ from the search's (retrain_best.py's default)."""
    epochs = int(row["epochs"]) if int(row["epochs"]) != search_ran else None
    step = cpu_step_of(config_of(row)) if row["device"] == "cpu" else None
    return reproduce_command(
        str(root / experiment),
        str(row["trial_id"]),
        max(seeds, MIN_SEEDS),
        int(row["threads"]),
        epochs,
        cpu_step=step,
    )


def search_epochs(folder: Path) -> int:
    """The epochs a search ran its trials for (15 when its search.json is not there)."""
    try:
        return int(read_search_record(folder)["settings"]["epochs"])
    except (ValueError, KeyError, TypeError):  # TableError is a ValueError
        return 15


def best_by_budget(models: pd.DataFrame, budgets=BUDGETS, strict: bool = False) -> pd.DataFrame:
    """For each budget, the confirmed model (>= 3 seeds) with the best mean under it.
    `strict`: campaign 2's rule, only models chosen on validation with >= 5 seeds."""
    rows = []
    eligible = models[(models["seeds"] >= MIN_SEEDS) & models["completed"]]
    if strict:
        eligible = eligible[(eligible["seeds"] >= STRICT_SEEDS) & (eligible["chosen_on"] == "val")]
    for budget in budgets:
        fits = eligible[[rule.within(p, budget) for p in eligible["params"]]]
        if fits.empty:
            rows.append({"budget": budget})
            continue
        # means equal to the digits printed tie (float noise must not pick): then the passing
        # model, then the smaller
        order = fits.assign(shown=fits["mean"].round(2))
        order = order.sort_values(["shown", "passed", "params"], ascending=[False, False, True])
        best = fits.loc[order.index[0]]
        rows.append({"budget": budget, **best.to_dict()})
    # every column even when no budget has a model: a table of blanks, never a missing key
    return pd.DataFrame(rows, columns=["budget", *models.columns])


def honest(models: pd.DataFrame) -> pd.DataFrame:
    """The models the README publishes: chosen on validation, STRICT_SEEDS+ fresh seeds."""
    return models[(models["seeds"] >= STRICT_SEEDS) & (models["chosen_on"] == "val")]


def honest_markdown(models: pd.DataFrame) -> str:
    lines = [
        "| model | params | seeds | mean | std | min | passes | reproduce |",
        "| --- | ---: | ---: | ---: | ---: | ---: | :---: | --- |",
    ]
    for m in honest(models).itertuples():
        lines.append(
            f"| {m.model} | {m.params:,} | {m.seeds} | {m.mean:.2f}% | {m.std:.2f} | "
            f"{m.min:.2f}% | {'yes' if m.passed else 'no'} | `{m.command}` |"
        )
    return "\n".join(lines)


def results_markdown(models: pd.DataFrame) -> str:
    lines = [
        "| model | params | mean (3+ seeds: see reproduce) | min | std | passes (5+ seeds, "
        f"chosen on val, all >= {TARGET}) | epochs | chosen on | reproduce |",
        "| --- | ---: | ---: | ---: | ---: | :---: | ---: | :---: | --- |",
    ]
    for m in models[models["seeds"] >= MIN_SEEDS].itertuples():
        lines.append(
            f"| {m.model} | {m.params:,} | {m.mean:.2f}% | {m.min:.2f}% | {m.std:.2f} | "
            f"{'yes' if m.passed else 'no'} | {m.epochs} | {m.chosen_on} | `{m.command}` |"
        )
    return "\n".join(lines)


def pareto_markdown(table: pd.DataFrame, strict: bool = False) -> str:
    """The budget table; `strict` adds each row's seeds, spread and reproduce command.
    Neighbouring budgets whose best is the same model share one row (`3,000-6,000`)."""
    extra = " seeds | std | reproduce |" if strict else ""
    lines = [
        "| budget (params) | best model | params | mean | min | passes |" + extra,
        "| ---: | --- | ---: | ---: | ---: | :---: |" + " ---: | ---: | --- |" * strict,
    ]
    for first, last, row in _spans(table):
        budget = f"{first:,}" if first == last else f"{first:,}-{last:,}"
        if pd.isna(getattr(row, "params", float("nan"))):
            lines.append(f"| {budget} | none confirmed | | | | |" + " | | |" * strict)
            continue
        line = (
            f"| {budget} | {row.model} | {int(row.params):,} | {row.mean:.2f}% | "
            f"{row.min:.2f}% | {'yes' if row.passed else 'no'} |"
        )
        if strict:
            line += f" {int(row.seeds)} | {row.std:.2f} | `{row.command}` |"
        lines.append(line)
    return "\n".join(lines)


def _spans(table: pd.DataFrame) -> list[tuple[int, int, tuple]]:
    """(first budget, last budget, row) for each run of neighbouring budgets with one best
    (budgets with none confirmed keep a row each)."""
    spans: list[tuple[int, int, tuple]] = []
    last_key = None
    for row in table.itertuples():
        params = getattr(row, "params", float("nan"))
        key = None if pd.isna(params) else (row.model, params, row.mean, row.min)
        if key is not None and key == last_key:
            spans[-1] = (spans[-1][0], row.budget, spans[-1][2])
        else:
            spans.append((row.budget, row.budget, row))
        last_key = key
    return spans


def plot(models: pd.DataFrame, path: Path) -> None:
    """Mean over seeds with the min..max range: filled circles chosen on validation (5+
    seeds), open squares chosen on test; green passed. The budget winners are labelled,
    each label moved up until it clears the ones before it."""
    shown = models[models["seeds"] >= MIN_SEEDS]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for (chosen, passed), group in shown.groupby(["chosen_on", "passed"]):
        val = chosen == "val"
        ax.errorbar(
            group["params"],
            group["mean"],
            yerr=[group["mean"] - group["min"], group["max"] - group["mean"]],
            fmt="o" if val else "s",
            mfc=None if val else "none",
            ms=6 if val else 5,
            capsize=3,
            alpha=1.0 if val else 0.55,
            color="tab:green" if passed else ("tab:blue" if val else "tab:gray"),
            label=f"chosen on {'validation' if val else 'test'}, "
            + (f"every seed >= {TARGET}%" if passed else f"a seed below {TARGET}%")
            + f" ({len(group)})",
        )
    strict = best_by_budget(models, STRICT_BUDGETS, strict=True)
    winners = pd.concat([strict, best_by_budget(models)]).dropna(subset=["params"])
    winners = winners.drop_duplicates(["experiment", "trial_id", "epochs"]).sort_values("params")
    placed: list[tuple[float, float]] = []  # (x, y) of labels so far, in data units
    for m in winners.itertuples():
        x, y = float(m.params), float(m.max) + 0.03
        while any(abs(x - px) < 800 and abs(y - py) < 0.06 for px, py in placed):
            y += 0.07
        placed.append((x, y))
        tag = "val" if m.chosen_on == "val" else "test"
        ax.annotate(  # the full names are in the tables; a short label never collides
            f"{m.params:,} {m.arch} ({tag})",
            (float(m.params), float(m.max)),
            xytext=(x, y),
            fontsize=7,
            ha="center",
            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"},
        )
    ax.axhline(TARGET, color="tab:red", ls="--", lw=1, label=f"target {TARGET}%")
    for budget in BUDGETS:  # the Pareto tables' columns
        ax.axvline(budget, color="black", ls=":", lw=0.6, alpha=0.5)
    if not shown.empty:  # else matplotlib's own limits: an empty plot, the target line
        top = max([shown["max"].max(), *(y for _, y in placed)]) + 0.1
        ax.set_ylim(max(shown["min"].min() - 0.1, 97.0), top)
    ax.set_xlim(0, max(BUDGETS) * 1.05)
    ax.set_xlabel("parameters (dotted: budgets)")
    ax.set_ylabel(f"final test accuracy (%), mean and range over {MIN_SEEDS}+ seeds")
    ax.set_title("Confirmed models: accuracy vs size (15 epochs, fresh seeds)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    picture = io.BytesIO()
    fig.savefig(picture, dpi=120, format="png")
    plt.close(fig)
    atomic_write_bytes(path, picture.getvalue())


def render(models: pd.DataFrame) -> str:
    """The README block: the honest rule's models, then the best of them by budget."""
    strict = best_by_budget(models, STRICT_BUDGETS, strict=True)
    return (
        f"{START}\n{honest_markdown(models)}\n\n**By budget** (the best of these under "
        f"each budget; passes: all {STRICT_SEEDS} seeds >= {TARGET}%):\n\n"
        f"{pareto_markdown(strict, strict=True)}\n{END}"
    )


def render_history(models: pd.DataFrame) -> str:
    """The history's block: every model with 3+ seeds, by whatever each was chosen on."""
    return (
        f"{HISTORY_START}\n{results_markdown(models)}\n\n**Pareto table, any selection** "
        "(best confirmed mean under each budget, 3+ seeds; most rows chosen on test):"
        f"\n\n{pareto_markdown(best_by_budget(models))}\n{HISTORY_END}"
    )


def write_tables(models: pd.DataFrame, root: Path) -> None:
    """The parquet keeps each column's type: a trial id of digits only ("23684415") reads
    back as a string, where pandas guesses a number from the CSV. Both are written whole."""

    write_parquet(root / "leaderboard.parquet", models)
    atomic_write_text(root / "leaderboard.csv", models.to_csv(index=False))


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="scripts/leaderboard.py", description=__doc__)
    add_results_dir(parser)
    parser.add_argument(
        "--readme", help="rewrite the table between the markers in this file (default: print only)"
    )
    parser.add_argument(
        "--history",
        help="rewrite the every-model tables between the history markers here (default: none)",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if --readme or --history is stale"
    )
    parser.add_argument(
        "--smoke", dest="smoke_test", action="store_true", help="print only, write nothing"
    )
    args = parser.parse_args(argv)
    use_results_dir(args.results_dir)
    root = shown(results_root())
    try:
        seeds, models = collect(root)
        block, history = render(models), render_history(models)
        targets = [(args.readme, block, (START, END), "--readme")]
        targets.append((args.history, history, (HISTORY_START, HISTORY_END), "--history"))
        targets = [t for t in targets if t[0]]
        for path, _, markers, flag in targets:  # a wrong file fails before anything is written
            read_readme(Path(path), markers, flag)
        if args.check:
            for path, text, _, flag in targets or [(None, block, None, "--readme")]:
                if path is None or text not in Path(path).read_text():
                    print(f"error: {path} is stale: run scripts/leaderboard.py {flag} {path}")
                    return 1
            return 0
        print(block)
        if args.smoke_test:
            return 0
        write_tables(models.drop(columns=["command"]), root)
        plot(models, root / "leaderboard.png")
        print(f"wrote {root / 'leaderboard.parquet'}, .csv and .png")
        for path, text, markers, _ in targets:
            if update_readme(Path(path), text, markers):
                print(f"updated {path}")
    except (InputError, TableError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
