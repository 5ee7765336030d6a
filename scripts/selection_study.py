"""Which selection metric and which ASHA rungs can rank configurations 0.05 points apart?

Measured from the tables and weights already committed under results/ (nothing is trained):

1. Rungs: over every 15-epoch run with a per-epoch curve (campaign 1's searches and every
   confirmation seed), the Spearman rank correlation between a metric at epoch r and the
   run's final accuracy, and the share of the final top third that a rung at r (keeping a
   third, as ASHA with reduction factor 3) would keep. The 6-epoch probes' validation
   curves are shown beside them. These curves only measure how learning curves rank; no
   model is chosen from them.
2. Metrics: every confirmed configuration with 3 or more saved seeds is evaluated image by
   image on the test set, split in two halves: a candidate metric read on half A (5,000
   images, the size of a search's validation set, or 2,500) from one seed or a 2-seed
   cohort is scored by how it orders the configurations' mean accuracy over the *other*
   seeds on half B (disjoint images and seeds, so no shared noise). Again a measurement of
   metrics; the published figures stay final-epoch test accuracies of fresh seeds.
3. The search-time validation figures of the configurations chosen on validation against
   their 5-seed test means.
4. Noise floors: the binomial standard error of an accuracy near 99.4% at 2,500, 5,000 and
   10,000 images, beside the seed-to-seed spread of the confirmations.

    python scripts/selection_study.py                     # markdown tables on stdout
    python scripts/selection_study.py --out docs/selection-figures.md
    python scripts/selection_study.py --smoke             # 3 configurations, 2,000 images
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from tune_mnist import load_model
from tune_mnist.parser import Parser
from tune_mnist.paths import results_root
from tune_mnist.train.data import DATA_DIR_HELP, DataError, load_mnist, normalize

RESULTS = results_root()
HALF = 5000  # test images per half: A ranks, B is the truth
SMOKE_HALF = 1000  # --smoke
MIN_GAP = 0.05  # points: configuration pairs closer than this on half B are not scored


def spearman(a, b) -> float:
    a, b = pd.Series(a, dtype=float), pd.Series(b, dtype=float)
    if len(a) < 3 or a.nunique() < 2 or b.nunique() < 2:
        return float("nan")
    return float(a.rank().corr(b.rank()))


def curves(folder_glob: str, table: str, metric_prefix: str) -> list[pd.DataFrame]:
    """Per-run epoch curves (one frame per run, indexed by epoch) from results/*/<table>."""
    runs = []
    for path in sorted(RESULTS.glob(f"{folder_glob}/{table}")):
        frame = pd.read_parquet(path)
        if f"{metric_prefix}_acc" not in frame or frame[f"{metric_prefix}_acc"].isna().all():
            continue
        keys = [k for k in ("trial_id", "seed", "confirmed_at") if k in frame]
        for _, run in frame.groupby(keys, dropna=False):
            run = run.sort_values("epoch").set_index("epoch")
            # the mean of the last 3 epochs, as the searches report it (older tables lack it)
            run[f"{metric_prefix}_acc_avg3"] = run[f"{metric_prefix}_acc"].rolling(3, 1).mean()
            runs.append(run)
    return runs


def rung_table(runs: list[pd.DataFrame], prefix: str, epochs: int) -> pd.DataFrame:
    """For r < epochs: Spearman(metric at r, final accuracy) and the final top third kept."""
    full = [r for r in runs if len(r) == epochs and r.index.max() == epochs]
    final = np.array([r[f"{prefix}_acc"].iloc[-1] for r in full])
    top = final >= np.quantile(final, 2 / 3)
    rows = []
    for r in range(1, epochs):
        row = {"epoch": r, "runs": len(full)}
        for name, sign in ((f"{prefix}_acc", 1), (f"{prefix}_acc_avg3", 1), (f"{prefix}_loss", -1)):
            if name not in full[0]:
                continue
            values = np.array([sign * run[name].loc[r] for run in full])
            row[f"rho {name}"] = spearman(values, final)
            kept = values >= np.quantile(values, 2 / 3)
            row[f"top kept {name}"] = (kept & top).sum() / max(top.sum(), 1)
        rows.append(row)
    return pd.DataFrame(rows)


def confirmed_seeds(limit: int | None) -> list[tuple[str, list[Path]]]:
    """(label, seed files) of every confirmed configuration with >= 3 saved seeds."""
    out = []
    for folder in sorted(RESULTS.glob("*/confirmed/*")):
        seeds = sorted(folder.glob("seed*.pt"))
        if len(seeds) >= 3:
            out.append((f"{folder.parent.parent.name}/{folder.name}", seeds))
    return out[:limit] if limit else out


def per_image(model, images, labels) -> tuple[np.ndarray, np.ndarray]:
    """(correct, cross-entropy) of every image."""
    with torch.inference_mode():
        logits = model(normalize(images))
        loss = F.cross_entropy(logits, labels, reduction="none")
        return (logits.argmax(1) == labels).numpy(), loss.numpy()


def evaluate_seeds(configs, data, half: int = HALF) -> pd.DataFrame:
    """One row per (configuration, seed): metrics on half A (and its first half), half B."""
    x, y = data.test_x[: 2 * half], data.test_y[: 2 * half]
    rows = []
    for i, (label, seeds) in enumerate(configs):
        for path in seeds:
            correct, loss = per_image(load_model(path), x, y)
            a, b = slice(0, half), slice(half, 2 * half)
            quarter = slice(0, half // 2)
            rows.append(
                {
                    "config": label,
                    "seed": path.stem,
                    "acc_A": 100 * correct[a].mean(),
                    "ce_A": loss[a].mean(),
                    "acc_A2500": 100 * correct[quarter].mean(),
                    "ce_A2500": loss[quarter].mean(),
                    "acc_B": 100 * correct[b].mean(),
                }
            )
        print(f"  evaluated {i + 1}/{len(configs)}: {label}", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


PREDICTORS = {  # name -> (column on half A, seeds read, +1 if higher is better)
    "val accuracy, 1 seed (today)": ("acc_A", 1, 1),
    "val cross-entropy, 1 seed": ("ce_A", 1, -1),
    "val accuracy, 1 seed, 2,500 images": ("acc_A2500", 1, 1),
    "val cross-entropy, 1 seed, 2,500 images": ("ce_A2500", 1, -1),
    "val accuracy, 2-seed cohort mean": ("acc_A", 2, 1),
    "val cross-entropy, 2-seed cohort mean": ("ce_A", 2, -1),
}


def predictor_table(seeds: pd.DataFrame, near: float | None = None) -> pd.DataFrame:
    """Each predictor: P(correct order) over configuration pairs >= MIN_GAP apart on half B,
    averaged over every choice of the predicting seeds (the others give the truth)."""
    rows = []
    groups = {c: g.reset_index(drop=True) for c, g in seeds.groupby("config")}
    for name, (column, k, sign) in PREDICTORS.items():
        draws = []  # one draw: per config, (predictor, truth) for one choice of k seeds
        for offset in range(3):
            draw = {}
            for config, g in groups.items():
                pick = [(offset + j) % len(g) for j in range(k)]
                rest = [j for j in range(len(g)) if j not in pick]
                draw[config] = (sign * g.loc[pick, column].mean(), g.loc[rest, "acc_B"].mean())
            draws.append(draw)
        right = total = 0
        rhos = []
        for draw in draws:
            kept = {c: v for c, v in draw.items() if near is None or v[1] >= near}
            rhos.append(spearman([v[0] for v in kept.values()], [v[1] for v in kept.values()]))
            for (p1, t1), (p2, t2) in itertools.combinations(kept.values(), 2):
                if abs(t1 - t2) >= MIN_GAP:
                    total += 1
                    right += (p1 - p2) * (t1 - t2) > 0
        rows.append(
            {
                "metric (read on 5,000 images unless named)": name,
                "runs": k,
                "configs": len(kept),
                "pairs": total // len(draws),
                "P(correct order)": right / max(total, 1),
                "spearman": float(np.nanmean(rhos)),
            }
        )
    return pd.DataFrame(rows)


def search_time_table() -> pd.DataFrame:
    """Configurations chosen on validation with 5+ seeds: their search-time validation figures
    (final accuracy, final cross-entropy) beside the 5-seed test mean."""
    rows = []
    for path in sorted(RESULTS.glob("*/confirmations.parquet")):
        folder = path.parent
        conf = pd.read_parquet(path)
        if "selected_on" not in conf or not (folder / "epochs.parquet").is_file():
            continue
        epochs = pd.read_parquet(folder / "epochs.parquet")
        for trial, group in conf[conf["selected_on"] == "val_acc"].groupby("trial_id"):
            curve = epochs[epochs["trial_id"] == trial].sort_values("epoch")
            if len(group) < 5 or curve.empty:
                continue
            rows.append(
                {
                    "config": f"{folder.name}/{trial}",
                    "params": int(group["params"].iloc[0]),
                    "search val acc": curve["val_acc"].iloc[-1],
                    "search val loss": curve["val_loss"].iloc[-1],
                    "5-seed test mean": group["final_test_acc"].mean(),
                }
            )
    return pd.DataFrame(rows)


def seed_spread() -> pd.Series:
    """Std of the final test accuracy over seeds, per confirmed configuration (3+ seeds)."""
    stds = []
    for path in sorted(RESULTS.glob("*/confirmations.parquet")):
        conf = pd.read_parquet(path)
        for _, group in conf.groupby("trial_id"):
            if len(group) >= 3:
                stds.append(group["final_test_acc"].std(ddof=1))
    return pd.Series(stds)


def noise_lines(spread: pd.Series) -> list[str]:
    p = 0.994
    lines = ["| source | standard error (points) |", "| --- | ---: |"]
    for n in (2500, 5000, 10000):
        lines.append(
            f"| binomial, {n:,} images at 99.4% | {100 * math.sqrt(p * (1 - p) / n):.3f} |"
        )
    lines.append(
        f"| seed to seed, {len(spread)} confirmed configurations (median std) | "
        f"{spread.median():.3f} |"
    )
    lines.append(
        f"| seed to seed, pooled (root mean variance) | {math.sqrt((spread**2).mean()):.3f} |"
    )
    return lines


def _cell(value, digits: int) -> str:
    if isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer()):
        return f"{int(value):,}" if abs(value) >= 1000 else str(int(value))
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = []
    for _, row in frame.iterrows():
        cells = [_cell(v, digits) for v in row]
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *body])


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("--out", help="also write the markdown here")
    parser.add_argument(
        "--smoke",
        dest="smoke_test",
        action="store_true",
        help="3 configurations on 2,000 test images: seconds",
    )
    args = parser.parse_args(argv)
    try:
        data = load_mnist(args.data_dir)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    parts = ["## 1. Rungs: how early a curve ranks the final accuracy\n"]
    long_runs = curves("*", "epochs.parquet", "test") + curves(
        "*", "confirmation_epochs.parquet", "test"
    )
    parts.append(
        "15-epoch runs (test curves of campaign 1's searches and of every confirmation seed):\n"
    )
    parts.append(markdown(rung_table(long_runs, "test", 15)))
    parts.append("\n6-epoch probes (validation curves, 12,000 training images):\n")
    parts.append(markdown(rung_table(curves("*", "epochs.parquet", "val"), "val", 6)))
    configs = confirmed_seeds(3 if args.smoke_test else None)
    # the smoke test reads halves of SMOKE_HALF images: seconds, not a minute, on one thread
    seeds = evaluate_seeds(configs, data, SMOKE_HALF if args.smoke_test else HALF)
    parts.append("\n## 2. Metrics: ordering the other seeds' mean accuracy on disjoint images\n")
    if args.smoke_test:
        parts.append(f"(smoke test: halves of {SMOKE_HALF:,} images, not {HALF:,})\n")
    parts.append(f"All {seeds['config'].nunique()} configurations:\n")
    parts.append(markdown(predictor_table(seeds)))
    parts.append("\nOnly configurations whose other seeds average >= 99.3% on half B:\n")
    parts.append(markdown(predictor_table(seeds, near=99.3)))
    chosen = search_time_table()
    parts.append("\n## 3. Search-time validation figures against 5-seed test means\n")
    if len(chosen):
        parts.append(markdown(chosen, 4))
        truth = chosen["5-seed test mean"]
        parts.append(
            f"\nSpearman with the 5-seed mean: final val accuracy "
            f"{spearman(chosen['search val acc'], truth):.3f}, final val cross-entropy "
            f"{spearman(-chosen['search val loss'], truth):.3f} ({len(chosen)} configurations)"
        )
    parts.append("\n## 4. Noise floors\n")
    parts.append("\n".join(noise_lines(seed_spread())))
    text = "\n".join(parts) + "\n"
    print(text)
    if args.out:
        head = (
            "# Selection study: the figures\n\nWritten by `python scripts/selection_study.py "
            "--out docs/selection-figures.md`; read with\n[selection.md](selection.md).\n\n"
        )
        Path(args.out).write_text(head + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
