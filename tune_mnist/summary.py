"""The search's closing summary: statuses, epochs saved by ASHA, slot time, passing trials."""

from __future__ import annotations

import math


def epochs_summary(trials_df, max_epochs: int) -> tuple[int, int]:
    trained = trials_df[trials_df["status"] != "over_budget"]
    return int(trained["epochs_run"].sum()), int(len(trained) * max_epochs)


def format_summary(trials_df, passing, settings, wall_s: float, slots: int, paths) -> str:
    counts = trials_df["status"].value_counts().to_dict()
    lines = ["", f"== search summary: {len(trials_df)} trials =="]
    lines.append(
        "  "
        + ", ".join(
            f"{s}: {counts.get(s, 0)}"
            for s in ("completed", "asha_stopped", "over_budget", "diverged", "error")
        )
    )
    done, grid = epochs_summary(trials_df, settings["epochs"])
    saved = 100 * (1 - done / grid) if grid else 0.0
    lines.append(f"  epochs trained {done} vs {grid} for every trial in full ({saved:.0f}% saved)")
    busy = trials_df["train_s"].sum()
    share = 100 * busy / (wall_s * slots) if wall_s and slots else math.nan
    lines.append(
        f"  wall {wall_s:.1f}s; trials trained {busy:.1f}s in all over {slots} slot(s): "
        f"{share:.0f}% of slot time training, the rest Ray and start-up overhead"
    )
    target = settings["target_acc"]
    lines.append(
        f"  passing (<= {settings['max_params']:,} params, final validation acc >= {target}% "
        f"on {settings['val_size']:,} held-out images): {len(passing)}"
    )
    for _, row in passing.iterrows():
        lines.append(
            f"    {row['params']:>6,} params  val {row['final_val_acc']:.2f}%  "
            f"(test {row['final_test_acc']:.2f}%, reported only)  {row['arch']:<11} "
            f"trial {row['trial_id']}"
        )
    lines.append("  written: " + ", ".join(str(p) for p in paths))
    return "\n".join(lines)
