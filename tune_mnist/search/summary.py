"""The search's closing summary: statuses, epochs saved by ASHA, slot time, passing trials."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tune_mnist.search import rungs


def epochs_summary(trials_df, max_epochs: int) -> tuple[int, int]:
    """Epochs trained vs a full run of every trial the scheduler judged."""
    trained = trials_df[trials_df["status"].isin(JUDGED)]
    return int(trained["epochs_run"].sum()), int(len(trained) * max_epochs)


# How a trial can end, in trials.parquet's `status`. Trained to its end: the full run
# completed, or the scheduler stopped it at a rung (its figure stands). Every other ending
# is cut short by something else, and none of them makes a search a success (exit 0).
JUDGED = ("completed", "asha_stopped")
CUT_SHORT = {
    "diverged": "diverged",  # its loss went non-finite or exploded; never retried
    "error": "failed",  # failed on every retry Ray gave it (--max-failures)
    "over_budget": "over budget",  # more parameters than the budget: never trained
    "lost": "lost",  # a kill came before Ray's state named it
    "interrupted": "interrupted",  # Ctrl-C, SIGTERM or a kill: --resume continues it
}


def cut_short(trials_df, trial_epochs: int) -> dict[str, dict[str, int]]:
    """Per ending that is not the scheduler's: its trials and the epochs they did not train
    of a full trial's `trial_epochs` (every rung's)."""
    out = {}
    for status in CUT_SHORT:
        part = trials_df[trials_df["status"] == status]
        if len(part):
            missing = (trial_epochs - part["epochs_run"]).clip(lower=0)
            out[status] = {"trials": len(part), "epochs_not_trained": int(missing.sum())}
    return out


def full_fidelity(trials_df) -> tuple[float, float, float, int]:
    """(share, core-seconds trained, core-seconds a full run of each would take, trials)
    over the trials ASHA judged: what its rungs saved. Core-seconds: seconds x threads."""
    judged = trials_df[trials_df["status"].isin(JUDGED)]
    if not len(judged) or "full_fidelity_s" not in judged:
        return math.nan, 0.0, 0.0, 0
    threads = judged["threads"].clip(lower=1) if "threads" in judged else 1
    spent = float((judged["train_s"] * threads).sum())
    full = float((judged["full_fidelity_s"] * threads).sum())
    return (spent / full if full else math.nan), spent, full, len(judged)


ENDED = ("completed", "asha_stopped", "over_budget", "diverged", "error")
UNENDED = ("interrupted", "running", "pending", "lost")


def format_summary(
    trials_df,
    passing,
    settings,
    wall_s: float,
    slots: int,
    paths,
    total: int | None = None,
    busy: float | None = None,
) -> str:
    """`total`: the trials of the whole search (samples, plus any lost to a kill); `busy`:
    seconds trained by this process (a resume's wall time covers only its own epochs)."""
    counts = trials_df["status"].value_counts().to_dict()
    total = max(total or 0, len(trials_df))
    ended = sum(counts.get(s, 0) for s in ENDED) + counts.get("lost", 0)
    lines = ["", f"== search summary: {ended} of {total} trials ended =="]
    shown = [*ENDED, *(s for s in UNENDED if counts.get(s))]
    lines.append("  " + ", ".join(f"{s}: {counts.get(s, 0)}" for s in shown))
    if ended < total:
        lines.append(f"  {total - ended} trial(s) left: --resume continues them")
    if "error" in trials_df:
        for _, row in trials_df[trials_df["status"] == "error"].iterrows():
            lines.append(f"    failed: trial {row['trial_id']} {row['arch']}: {row['error']}")
    short = cut_short(trials_df, rungs.trial_epochs(settings))
    if short:
        lines.append(
            "  cut short (not the scheduler's doing): "
            + ", ".join(
                f"{CUT_SHORT[s]} {n['trials']} ({n['epochs_not_trained']} epochs not trained)"
                for s, n in short.items()
            )
        )
    share, spent, full, judged = full_fidelity(trials_df)
    if judged:
        lines.append(
            f"  full-fidelity share {100 * share:.0f}%: the {judged} trials ASHA judged trained "
            f"{spent:,.0f} core-s, a full run of each {full:,.0f} "
            f"(rungs: {', '.join(settings.get('rungs') or ['full'])})"
        )
    busy = trials_df["train_s"].sum() if busy is None else busy
    share = 100 * busy / (wall_s * slots) if wall_s and slots else math.nan
    lines.append(
        f"  wall {wall_s:.1f}s; trials trained {busy:.1f}s in all over {slots} slot(s): "
        f"{share:.0f}% of slot time training, the rest Ray and start-up overhead"
    )
    target = settings["target_acc"]
    lines.append(
        f"  passing (under {settings['max_params']:,} params, final validation acc >= {target}% "
        f"on {settings['val_size']:,} held-out images): {len(passing)}"
    )
    for _, row in passing.iterrows():
        lines.append(
            f"    {row['params']:>6,} params  val {row['final_val_acc']:.2f}%  "
            f"(test {row['final_test_acc']:.2f}%, reported only)  {row['arch']:<11} "
            f"trial {row['trial_id']}"
        )
    if settings.get("pareto") and "on_front" in trials_df:
        lines += front_lines(trials_df)
    lines.append("  written: " + ", ".join(str(p) for p in paths))
    return "\n".join(lines)


def front_lines(trials_df) -> list[str]:
    """The Pareto front the search found: smaller, or more accurate on validation, than any
    other completed trial."""
    front = trials_df[trials_df["on_front"]].sort_values("params")
    lines = [f"  Pareto front (completed trials, validation accuracy vs parameters): {len(front)}"]
    for _, row in front.iterrows():
        mark = "  passing" if row["passed"] else ""
        lines.append(
            f"    {row['params']:>6,} params  val {row['final_val_acc']:.2f}%  {row['arch']:<11} "
            f"trial {row['trial_id']}{mark}"
        )
    return lines


def first_cause(trials, settings: dict) -> str:
    """Why no trial trained to its end, in one line: the counts by cause, then the first
    failed trial's error, or the first trial's ending."""
    counts = ", ".join(
        f"{n} {CUT_SHORT.get(s, s)}" for s, n in trials["status"].value_counts().items()
    )
    failed = trials[trials["status"] == "error"]
    if len(failed):
        row = failed.iloc[0]
        more = f" (and {len(failed) - 1} more failed trials)" if len(failed) > 1 else ""
        return f"{counts}; first: trial {row['trial_id']}: {row.get('error') or 'error'}{more}"
    if not len(trials):
        return "no trials; see trials.parquet"
    row = trials.iloc[0]
    how = {
        "diverged": f"diverged at epoch {row['epochs_run']} (loss not finite or exploding)",
        "over_budget": f"over budget ({row['params']:,} > {settings['max_params']:,} parameters)",
    }.get(row["status"], row["status"])
    return f"{counts}; first: trial {row['trial_id']} {how}; see trials.parquet"


def totals(summary: dict) -> tuple[float, float]:
    """(wall seconds, held core-seconds) of every invocation a summary.json counts; one
    written before the sums counts its own invocation alone."""
    wall_s = float(summary.get("wall_s") or 0.0)
    held = summary.get("held_core_s")
    held = wall_s * float(summary.get("slots") or 0) if held is None else float(held)
    return float(summary.get("wall_s_all", wall_s) or 0.0), held


def across_invocations(
    folder: Path, resumed: bool, wall_s: float, slots: int, peak: int = 0
) -> dict:
    """The search's wall clock and held core-seconds summed over its invocations, and the most
    trials any of them ran at once: a resume adds its own to those its last summary.json
    kept (an invocation killed before writing one is not counted)."""
    before = {}
    if resumed and (folder / "summary.json").is_file():
        try:
            before = json.loads((folder / "summary.json").read_text())
        except (OSError, ValueError):
            pass  # a damaged summary: this invocation's alone
    wall, held = totals(before)
    most = max(int(before.get("peak_running") or 0), peak)
    return {"wall_s_all": wall + wall_s, "held_core_s": held + wall_s * slots, "peak_running": most}
