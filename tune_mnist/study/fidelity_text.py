"""The words of docs/fidelity.md around the study's tables; every number comes from the data."""

from __future__ import annotations

import pandas as pd

from tune_mnist.study.designs import design_table, kept, markdown, spearman

COMMAND = "python scripts/fidelity_study.py run && python scripts/fidelity_study.py analyse"


def _ceiling(acc: pd.DataFrame) -> str:
    if "full:seed1" not in acc:
        return "No second seed has been trained yet: the ceiling is not measured."
    pair = acc[["full:seed1", "full"]].dropna()
    got, of = kept(pair["full:seed1"], pair["full"])
    gap = (pair["full:seed1"] - pair["full"]).abs()
    return (
        f"A second seed of {len(pair)} configurations at full fidelity ranks them against the "
        f"first with Spearman {spearman(pair['full:seed1'], pair['full']):.2f} and keeps "
        f"{got}/{of} of its top third; the two seeds differ by {gap.mean():.2f} points on "
        f"average (max {gap.max():.2f}). No cheap evaluation can rank a single 15-epoch run "
        "better than another seed of that run does: this is the ceiling, and the column "
        "against the 5-seed test means (published models only) is the truer target."
    )


STUDIED = ("compressed2", "compressed3", "compressed5", "subset25", "subset50", "wsd3", "wsd5")


def _missing(acc: pd.DataFrame) -> str:
    """Which of the study's fidelities lack runs, and for how many configurations."""
    gaps = [
        f"`{name}` ({len(acc) - (int(acc[name].notna().sum()) if name in acc else 0)})"
        for name in STUDIED
        if name not in acc or acc[name].notna().sum() < len(acc)
    ]
    if not gaps:
        return "Every fidelity is measured on every configuration."
    return (
        "Configurations still without a run, per fidelity: " + ", ".join(gaps) + "; `python "
        "scripts/fidelity_study.py run` trains what is missing and `analyse` redraws this page."
    )


def _ratio(text: str) -> float:
    got, of = text.split("/")
    return int(got) / int(of) if int(of) else 0.0


def _chosen(designs: pd.DataFrame) -> str:
    """Per box: the lowest-regret design within 40% under ASHA by promotion (the searches'
    rule: a rung promotes at most 1/factor of what it has seen, so it costs what successive
    halving does), and the designs whose first rung keeps at least 80% of the final top
    third, with their cost; Ray's own asynchronous rule beside each, for contrast."""
    if designs.empty:
        return "Too few configurations have every rung measured to score a design yet."
    lines = []
    for box, part in designs.groupby("box"):
        cheap = part[part["cost"] <= 0.40]
        if cheap.empty:
            lines.append(f"- {box} box: no candidate costs 40% or less.")
        else:
            best = cheap.sort_values(["regret (points)", "cost"]).iloc[0]
            lines.append(
                f"- {box} box ({best['configs']} configurations): within 40%, the lowest "
                f"regret is `{best['design']}`, factor {best['factor']}: cost "
                f"{best['cost']:.2f} ({best['cost (ASHA)']:.2f} under Ray's rule), regret "
                f"{best['regret (points)']:.2f} points, its first rung keeping "
                f"{best['top third kept at rung 1']} of the final top third."
            )
        keeps = part[part["top third kept at rung 1"].map(_ratio) >= 0.8]
        for _, row in keeps.iterrows():
            lines.append(
                f"  - keeps >= 80% at its first rung: `{row['design']}`, factor "
                f"{row['factor']}: {row['top third kept at rung 1']}, at cost "
                f"{row['cost']:.2f} ({row['cost (ASHA)']:.2f} under Ray's rule)"
            )
        if keeps.empty:
            lines.append("  - no candidate's first rung keeps 80% of the final top third")
    return "\n".join(lines)


def render(
    acc, secs, fidelities: pd.DataFrame, figures: list[str], shares: dict[str, float]
) -> str:
    """The page; `shares`: the full-fidelity share the cold search recorded under each
    rule ("ray", "promotion"), where it ran."""
    ours, rays, chosen, default = (
        f"{shares[k]:.2f}" if shares.get(k) else "(not run)"
        for k in ("promotion", "ray", "chosen", "default")
    )
    designs = design_table(acc)
    table, designs_md = markdown(fidelities), markdown(designs)
    runs = int(secs.drop(columns=["search_full"], errors="ignore").notna().sum().sum())
    boxes = acc["box"].value_counts()
    pictures = "\n\n".join(f"![{name}]({name})" for name in figures)
    return f"""# Cheap evaluations that rank: the fidelity study

Which low fidelity ranks configurations like their full 15-epoch one-cycle run, and at what
cost? Regenerate every table and figure here with

    {COMMAND}

(`run` trains only what is not recorded in `results/fidelity-study/runs.parquet`; `analyse`
trains nothing and rewrites this page, its figures and
`results/fidelity-study/by_configuration.csv`).

## What was measured

- {len(acc)} configurations from the campaign searches' spaces: {boxes.get("4k", 0)} in the
  2,500-4,000-parameter box, {boxes.get("8k", 0)} in the 7,000-8,000 box, the rest below.
  Every trial those searches trained to 15 epochs, and an even spread of the ones ASHA
  stopped at epoch 12 (trained to 15 here), so the set is not only the searches' winners.
- Full fidelity: 15 epochs, one-cycle, the 55,000 training images, final accuracy on the
  5,000 held-out validation images (as the searches select). The searches' own runs are
  reused; {runs} runs are the study's, each recorded with its config, seed, versions,
  commit and CPU.
- The fidelities: the prefix of the 15-epoch run at epochs 3 and 5 (what ASHA's rungs read
  before); one-cycle compressed into 2, 3 and 5 epochs (`compressedE`); 25% and 50% of the
  training images with the full schedule (`subsetP`); warmup-stable-decay branched at epochs
  3 and 5 with a one-epoch cool-down off a shared trunk (`wsdE`; `TrainConfig.schedule`).
- Cost: the nominal share of a full run's training steps, and the measured median ratio of
  core-seconds to the same configuration's full run, both trained by the study two at a
  time on this 2-core machine.
- Rank: Spearman against the 15-epoch validation accuracy, in all and in the 4k box (one
  search's budget); the share of the final top third that a rung keeping the best third
  keeps; Spearman against the published 5-seed test means where a configuration has one.

## The fidelities

{table}

{pictures}

## The ceiling that seed noise sets

{_ceiling(acc)}

## Designs

Successive halving over each box's configurations with the measured figures: the cost is
the share of the core-seconds of a full run of every configuration (a WSD design continues
its trunk: a kept trial pays the epochs after its branch); "regret" is how far the best
full run among the configurations that reach it falls below the best of all.

{designs_md}

{_chosen(designs)}

## The spaces' rungs

The campaign spaces run `compressed3 -> compressed5 -> full`, factor 4: the cheapest design
within 40% whose first rung keeps more of the top third than a second seed of the full run
does (the ceiling below: 2/3). The lowest-regret design above starts at `compressed2`, which
ranks the 4k box with Spearman 0.17 and keeps 2/8 of its top third; its regret is 0.00 by the
luck of 24 configurations. No design keeps the 80% asked at 40% or less, and 8 configurations
cannot show 80% beyond seed noise, which keeps 2/3. The cold 4k search with these rungs
measured a full-fidelity share of {chosen} ([history.md](history.md), "The main command,
cold, with the study's rungs").

The default space runs `compressed3 -> full`, factor 4, over 64 draws. Its middle rung,
`compressed5`, ranks the 4k box worse than `compressed3` does, and the cold searches with
it let 5 or 6 of 96 draws reach the full run: too few for the sampler to learn the recipe
fields, which only a full run judges. Without it, 16 of 64 draws reach the full run at about
the same core-seconds; its first rung keeps 6/8 of the 4k box's top third at a cost of 0.45.
The cold 4k search with these rungs measured a full-fidelity share of {default}
([history.md](history.md), "The main command, cold, with two rungs").

## Limits

- One seed per run; at 5,000 validation images a figure near 99.4% carries a standard error
  of about 0.11 points, as large as the spread of the better half of a box.
- Successive halving here is synchronous and exact. The searches' ASHA by promotion
  (`tune_mnist/search/promotion.py`) keeps to the same quota, so it costs what the `cost`
  column says, and the cold 4k search with it measured a full-fidelity share of {ours}. The
  "(ASHA)" columns simulate Ray's own rule, which promotes more than 1/factor early in a
  search (its first arrivals, judged against few figures) and again when the sampler's later
  proposals beat its early ones: the same search under it measured {rays} ([history.md](history.md),
  "The main command, cold", and "... with promotions").
- {_missing(acc)}
- The pilot's compressed 2- and 3-epoch runs of the searches' 27 completed trials were made
  on another CPU (AMD EPYC family 26 model 2) at the commit their rows name; their seconds are not
  recorded, so those rows count at their nominal cost.
"""
