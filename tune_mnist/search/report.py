"""Pictures of a search: `python -m tune_mnist.report results/<name>`.

Writes pareto.png, curves.png, asha.png, importance.png and one self-contained report.html
(images embedded) into the experiment folder. Parameter importance uses Optuna's fANOVA
evaluator on each trial's validation accuracy at the ASHA grace period, the one epoch every
trained trial reached (final accuracies of stopped and finished trials are not comparable).
Trials are drawn by what the search selected on: validation accuracy, or test accuracy for
the searches made before the validation split (their tables have no validation figures).
"""

from __future__ import annotations

import base64
import html
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from tune_mnist.files import atomic_write_text  # noqa: E402
from tune_mnist.parser import Parser
from tune_mnist.results import Results, load  # noqa: E402
from tune_mnist.search.importance import importance  # noqa: E402
from tune_mnist.search.optuna_journal import rebuild  # noqa: E402
from tune_mnist.search.summary import epochs_summary, full_fidelity  # noqa: E402
from tune_mnist.tables import read_search_record  # noqa: E402

COLORS = {
    "completed": "tab:blue",
    "asha_stopped": "tab:gray",
    "diverged": "tab:red",
    "error": "black",
    "running": "tab:orange",
    "pending": "tab:orange",
}


def selected_on(results: Results) -> tuple[str, str]:
    """(metric column, words): what this search chose its trials on."""
    column = results.trials.get("final_val_acc")
    if column is not None and column.notna().any():
        return "val_acc", "validation accuracy"
    return "test_acc", "test accuracy (chosen on test: a search before the validation split)"


def plot_pareto(results: Results, settings: dict, path: Path) -> None:
    metric, words = selected_on(results)
    final = f"final_{metric}"
    trials = results.trials[results.trials["epochs_run"] > 0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for status, group in trials.groupby("status"):
        ax.scatter(
            group["params"],
            group[final],
            s=22,
            alpha=0.7,
            color=COLORS.get(status, "tab:purple"),
            label=f"{status} ({len(group)})",
        )
    passing = results.passing
    ax.scatter(
        passing["params"],
        passing[final],
        s=90,
        facecolors="none",
        edgecolors="tab:green",
        linewidths=1.5,
        label=f"passing ({len(passing)})",
    )
    if "on_front" in trials and trials["on_front"].any():  # the trade-offs found, as a staircase
        front = trials[trials["on_front"]].sort_values("params")
        ax.step(
            front["params"],
            front[final],
            where="post",
            color="tab:gray",
            lw=1,
            label=f"Pareto front ({len(front)})",
        )
    conf = results.confirmations
    if conf is not None and len(conf):
        stats = conf.groupby("trial_id").agg(
            params=("params", "first"),
            mean=("final_test_acc", "mean"),
            std=("final_test_acc", "std"),
            n=("final_test_acc", "size"),
        )
        ax.errorbar(
            stats["params"],
            stats["mean"],
            yerr=stats["std"].fillna(0),
            fmt="D",
            color="tab:green",
            capsize=4,
            label="confirmed: test acc, mean ± std over fresh seeds",
        )
    target, budget = settings["target_acc"], settings["max_params"]
    ax.axhline(target, color="tab:red", ls="--", lw=1, label=f"target {target}%")
    ax.axvline(budget, color="tab:red", ls=":", lw=1, label=f"budget {budget:,} params")
    finals = trials[final].dropna()
    if len(finals):  # zoom on the interesting band, not on a 10% trial
        low = max(finals.min(), min(target - 1.5, finals.quantile(0.75) - 1.0))
        ax.set_ylim(low - 0.1, max(finals.max(), target) + 0.15)
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"final-epoch {words.split(' (')[0]} (%)")
    ax.set_title("Accuracy against size: every trial (trials below the axis are cut)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves(results: Results, settings: dict, path: Path, top: int = 5) -> None:
    metric, words = selected_on(results)
    trials, epochs = results.trials, results.epochs
    best = trials[trials["status"] == "completed"].nlargest(top, f"final_{metric}")
    stopped = trials[trials["status"] == "asha_stopped"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for _, row in stopped.iterrows():
        e = epochs[epochs["trial_id"] == row["trial_id"]]
        ax.plot(e["epoch"], e[metric], color="tab:gray", alpha=0.4, lw=1)
    for _, row in best.iterrows():
        e = epochs[epochs["trial_id"] == row["trial_id"]]
        ax.plot(
            e["epoch"],
            e[metric],
            marker=".",
            lw=1.5,
            label=f"{row['arch']} {row['params']:,}p: {row[f'final_{metric}']:.2f}%",
        )
    ax.plot([], [], color="tab:gray", alpha=0.6, label=f"stopped by ASHA ({len(stopped)})")
    ax.axhline(settings["target_acc"], color="tab:red", ls="--", lw=1)
    accs = epochs[metric].dropna()
    if len(accs):
        ax.set_ylim(max(accs.quantile(0.1), settings["target_acc"] - 3), accs.max() + 0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{words.split(' (')[0]} (%)")
    ax.set_title(f"Learning curves: top {len(best)} finished trials and ASHA-stopped ones")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def asha(results: Results, settings: dict, path: Path) -> None:
    trained = results.trials[results.trials["status"] != "over_budget"]
    counts = trained["epochs_run"].value_counts().sort_index()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    left.bar(counts.index.astype(str), counts.values, color="tab:blue")
    left.set_xlabel("epochs trained before the trial ended")
    left.set_ylabel("trials")
    left.set_title("Where ASHA stopped the trials")
    over = int((results.trials["status"] == "over_budget").sum())
    share, used, full, _ = full_fidelity(results.trials)
    unit = "core-seconds"
    if share != share:  # tables from before full_fidelity_s: epochs instead
        (used, full), unit = epochs_summary(results.trials, settings["epochs"]), "epochs"
    right.bar(["trained", "every trial in full"], [used, full], color=["tab:green", "tab:gray"])
    right.set_ylabel(unit)
    right.set_title(f"{unit}: {used:,.0f} of {full:,.0f} ({over} over budget, untrained)")
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def passing_table(results: Results) -> str:
    columns = [
        "trial_id",
        "arch",
        "params",
        "final_val_acc",
        "final_test_acc",
        "epochs_run",
        "max_lr",
        "dropout",
        "rotate_deg",
        "translate_frac",
        "width1",
        "width2",
        "width3",
        "depth1",
        "depth2",
        "depth3",
        "squeeze",
    ]
    table = results.passing[[c for c in columns if c in results.passing.columns]]
    if table.empty:
        return "<p>No trial passed.</p>"
    return table.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0)


TITLES = {  # each picture's section heading
    "pareto": "Accuracy against size: the front the search found",
    "curves": "Learning curves",
    "asha": "Where ASHA stopped trials",
    "importance": "Which parameters mattered",
}
STATUS_WORDS = {
    "completed": "trained in full",
    "asha_stopped": "stopped early by ASHA",
    "over_budget": "over the parameter budget (never trained)",
    "diverged": "diverged",
    "error": "failed",
    "interrupted": "interrupted (--resume continues them)",
    "running": "still running",
    "pending": "not yet started",
    "lost": "lost to a kill before Ray recorded them",
}


def opening(trials) -> str:
    """`16 trials: 4 trained in full, 9 stopped early by ASHA and 3 over the budget.`"""
    counts = trials["status"].value_counts()
    parts = [f"{n} {STATUS_WORDS.get(status, status)}" for status, n in counts.items()]
    listed = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
    return f"{len(trials)} trials: {listed}." if parts else "No trials."


def build(folder: str | Path, out: str | Path | None = None) -> Path:
    """The report of the search in `folder`: its figures and report.html, in `out` (default:
    the search's folder)."""
    folder = Path(folder)
    target = Path(out) if out is not None else folder
    results = load(folder)
    meta = read_search_record(folder)
    settings = meta["settings"]
    target.mkdir(parents=True, exist_ok=True)
    images = {name: target / f"{name}.png" for name in ("pareto", "curves", "asha", "importance")}
    plot_pareto(results, settings, images["pareto"])
    curves(results, settings, images["curves"])
    asha(results, settings, images["asha"])
    kept = folder / "space.yaml"  # the space the search ran, kept with it
    space_path = kept if kept.is_file() else meta["space"]
    note = importance(results, settings, space_path, images["importance"], selected_on(results))
    embedded = "\n".join(
        f'<h2>{TITLES[name]}</h2><img alt="{TITLES[name]}" src="data:image/png;base64,'
        f'{base64.b64encode(path.read_bytes()).decode()}">'
        for name, path in images.items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>tune_mnist report: {html.escape(folder.name)}</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:auto}} img{{max-width:100%}}
table{{border-collapse:collapse;font-size:12px}}
td,th{{padding:2px 6px;border-bottom:1px solid #ddd}}
</style></head><body>
<h1>Search {html.escape(folder.name)}</h1>
<p>{html.escape(opening(results.trials))} Space
{html.escape(meta["space"])}; target {settings["target_acc"]}%, budget
{settings["max_params"]:,} parameters, {settings["epochs"]} epochs.
Trials were selected on {html.escape(selected_on(results)[1])}; test accuracy is reported
only. Importance: {html.escape(note)}</p>
{embedded}
<h2>Passing configurations</h2>{passing_table(results)}
</body></html>"""
    page_path = target / "report.html"
    atomic_write_text(page_path, page)
    rebuild(folder)  # the Optuna study file, for optuna-dashboard (a search made before it)
    return page_path


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m tune_mnist.report", description=__doc__)
    parser.add_argument("folder", nargs="?", help="the search's folder, results/<name>")
    parser.add_argument(
        "--results",
        help="the search's folder, results/<name>, as a flag (default: the positional one)",
    )
    parser.add_argument("--out", help="folder for report.html and its figures (default: results)")
    args = parser.parse_args(argv)
    if (args.folder is None) == (args.results is None):
        print("error: name the search's folder once: report results/<name>", file=sys.stderr)
        return 2
    args.results = args.results or args.folder
    try:
        out = build(args.results, args.out)
    except (FileNotFoundError, NotADirectoryError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output folder that cannot be written (full, read-only)
        where = exc.filename or args.out or args.results
        print(f"error: cannot write {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
