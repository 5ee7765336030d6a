"""Does a faster CPU step keep accuracy? 5 seeds, 15 epochs, all 60,000 images, per variant.

Two models, super_light (4,836 parameters) and campaign 2's lean 8-12s-(6)-10-8-16 silu
clean3 (2,992), each trained on seeds 1-5 with 1 thread in a step variant
(`tune_mnist.train.config.CPU_STEPS`), beside the plain fp32 step. Plain seeds already published
(results/default-12 and results/separable-probe-16 confirmations) are read, not retrained.
Each seed is `python -m tune_mnist.train ... --out results/cpu-step/<model>/<variant>/seedN.pt`;
its file holds the config (precision, channels_last), the final test accuracy and where it
ran. Prints the table: per model and variant, mean, std, min, and the difference.

    python scripts/cpu_step_accuracy.py --run channels_last   # trains the missing seeds
    python scripts/cpu_step_accuracy.py                       # the table, from the files
    python scripts/cpu_step_accuracy.py --smoke          # 1 epoch, 2,000 images, seconds
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from tune_mnist.parser import Parser
from tune_mnist.paths import results_root, shown
from tune_mnist.publish.confirm import train_command
from tune_mnist.train.config import CPU_STEPS, TrainConfig
from tune_mnist.train.data import DATA_DIR_HELP
from tune_mnist.train.modelfile import read_model_file

RESULTS = results_root()
OUT = RESULTS / "cpu-step"
SEEDS = (1, 2, 3, 4, 5)
MODELS = {  # name -> (config, the published plain confirmation: results folder, trial)
    "super_light": (
        TrainConfig(arch="super_light", perspective_p=0.5, threads=1),
        ("default-12", "4ef0c387"),
    ),
    "lean3k": (
        TrainConfig(
            **{"arch": "lean", "squeeze_width": 6, "width3": 10, "width4": 8, "width5": 16},
            **{"activation": "silu", "separable2": True, "clean_epochs": 3, "threads": 1},
        ),
        ("separable-probe-16", "74d1b8c1"),
    ),
}


def seed_file(model: str, variant: str, seed: int, root: Path = OUT) -> Path:
    return root / model / variant / f"seed{seed}.pt"


def command(config: TrainConfig, out: Path, data_dir: str | None) -> list[str]:
    line = [sys.executable, *shlex.split(train_command(config))[1:], "--out", str(out)]
    return line + (["--data-dir", data_dir] if data_dir else [])


def run_missing(variant: str, data_dir: str | None, jobs: int, smoke: bool, root: Path) -> int:
    """Train every seed of both models whose file is not there yet, `jobs` at a time."""
    todo = []
    for model, (config, _) in MODELS.items():
        for seed in SEEDS[:1] if smoke else SEEDS:
            out = seed_file(model, variant, seed, root)
            if not out.is_file():
                config = config.replace(seed=seed, **CPU_STEPS[variant])
                if smoke:
                    config = config.replace(epochs=1, train_subset=2000, test_subset=1000)
                out.parent.mkdir(parents=True, exist_ok=True)
                todo.append(command(config, out, data_dir))
    print(f"{len(todo)} seed(s) to train, {jobs} at a time", flush=True)

    def one(line: list[str]) -> int:
        log = Path(line[line.index("--out") + 1]).with_suffix(".log")
        with open(log, "w") as sink:
            return subprocess.run(line, stdout=sink, stderr=subprocess.STDOUT).returncode

    with ThreadPoolExecutor(jobs) as pool:
        codes = list(pool.map(one, todo))
    return max(codes, default=0)


def rows(root: Path) -> pd.DataFrame:
    """One row per trained seed: model, variant, seed, final test accuracy, where it ran."""
    out = []
    for model, (_, (search, trial)) in MODELS.items():
        published = RESULTS / search / "confirmations.parquet"
        if published.is_file():
            conf = pd.read_parquet(published)
            for _, r in conf[conf["trial_id"] == trial].iterrows():
                out.append(
                    {"model": model, "variant": "plain", "seed": int(r["seed"])}
                    | {"final_test_acc": r["final_test_acc"], "cpu": r.get("cpu") or "?"}
                    | {"source": f"results/{search} {trial}"}
                )
        for path in sorted((root / model).glob("*/seed*.pt")):
            payload = read_model_file(path)
            config, extra = payload["config"], payload["extra"]
            out.append(
                {"model": model, "variant": path.parent.name, "seed": config["seed"]}
                | {"final_test_acc": extra["final_test_acc"], "cpu": extra.get("cpu", "?")}
                | {"source": str(shown(path)), "precision": config["precision"]}
                | {"channels_last": config.get("channels_last", False)}
            )
    return pd.DataFrame(out)


def table(frame: pd.DataFrame) -> str:
    lines = ["| model | variant | seeds | mean | std | min | vs plain |"]
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for model, group in frame.groupby("model", sort=False):
        base = group[group["variant"] == "plain"]["final_test_acc"].mean()
        for variant, g in group.groupby("variant", sort=False):
            acc = g.drop_duplicates("seed", keep="last")["final_test_acc"]
            lines.append(
                f"| {model} | {variant} | {len(acc)} | {acc.mean():.3f} | {acc.std():.3f} | "
                f"{acc.min():.2f} | {acc.mean() - base:+.3f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", choices=list(CPU_STEPS), help="train the missing seeds first")
    parser.add_argument("--jobs", type=int, default=2, help="seeds trained at once")
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument(
        "--smoke", dest="smoke_test", action="store_true", help="1 epoch, 2,000 images"
    )
    parser.add_argument("--out", default=str(OUT), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root = Path(args.out)
    if args.smoke_test and root == OUT:  # a plumbing check never writes a published file
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="cpu-step-smoke-"))
        args.run = args.run or "channels_last"
    if args.run and run_missing(args.run, args.data_dir, args.jobs, args.smoke_test, root):
        print("error: a seed failed; its .log beside its .pt says why", file=sys.stderr)
        return 1
    frame = rows(root)
    if root.is_dir():
        frame.to_parquet(root / "accuracy.parquet", index=False)
    print(table(frame))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
