"""Which parameters mattered in a search: Optuna's fANOVA evaluator over each trial's
accuracy at the ASHA grace period, the one epoch every trained trial reached (the report's
importance.png)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from tune_mnist.search.space_file import load_space

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def importance(results, settings: dict, space_path: str, path: Path, selected) -> str:
    """fANOVA importance for the selection accuracy at the grace epoch, drawn to `path`;
    returns a note. `selected`: (metric column, words), what the search chose on."""
    import optuna  # lazy: Optuna loads only where a study is read or written

    space = load_space(space_path)
    metric, words = selected
    grace = settings["grace_period"]
    at_grace = results.epochs[results.epochs["epoch"] == grace].set_index("trial_id")[metric]
    dists = {n: _optuna_dist(d) for n, d in space.shared.items() if d.kind != "const"}
    if len(space.branches) > 1:
        dists["arch"] = optuna.distributions.CategoricalDistribution(sorted(space.branches))
    else:  # one architecture: its own parameters are present in every trial
        ((arch, branch),) = space.branches.items()
        dists |= {n: _optuna_dist(d) for n, d in branch.items() if d.kind != "const"}
    study = optuna.create_study(direction="maximize")
    for _, row in results.trials.iterrows():
        branch = space.branch_of(row)
        if row["trial_id"] in at_grace.index and branch is not None:
            params = {n: _native(branch if n == "arch" else row[n]) for n in dists}
            study.add_trial(
                optuna.trial.create_trial(
                    params=params, distributions=dists, value=float(at_grace[row["trial_id"]])
                )
            )
    if len(study.trials) < 3 or not dists:
        return _blank(path, f"parameter importance needs >= 3 trained trials ({len(study.trials)})")
    scores = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
    )
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(scores) + 1.2))
    names = list(scores)[::-1]
    ax.barh(names, [scores[n] for n in names], color="tab:purple")
    ax.set_xlabel(f"fANOVA importance for {words.split(' (')[0]} at epoch {grace}")
    ax.set_title(f"What mattered ({len(study.trials)} trials; Optuna fANOVA)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"Optuna's fANOVA evaluator over {len(study.trials)} trials, {words} at epoch {grace}."


def _optuna_dist(dist):
    import optuna.distributions as od  # lazy: Optuna loads only where a study is read or written

    if dist.kind == "choice":
        return od.CategoricalDistribution(list(dist.values))
    if dist.kind == "int":
        return od.IntDistribution(*dist.values, step=dist.step)
    return od.FloatDistribution(*dist.values, log=dist.kind == "loguniform")


def _native(value):
    return value.item() if hasattr(value, "item") else value


def _blank(path: Path, message: str) -> str:
    fig, ax = plt.subplots(figsize=(7, 1.5))
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.axis("off")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return message
