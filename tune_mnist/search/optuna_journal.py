"""The search as an Optuna study on disk, `results/<name>/optuna.journal`, for the viewers
Optuna users already have: `optuna-dashboard results/<name>/optuna.journal`.

Ray's OptunaSearch keeps its study in memory. This file is a view of the search's own journal
(tune_mnist.search.journal), kept up to date by the driver each time it writes the tables,
so it follows a running search and survives kills: each sync appends only what the file
lacks, and finds each trial by its Ray trial id (a user attribute), so a resumed search
continues the same study with no trial twice. A folder made before this file existed gets
it on its next `python -m tune_mnist.report`.

Each Optuna trial holds the trial's sampled parameters (with their distributions, replayed
through the search space), the value of the search's metric at every epoch (the step is the
trial's epoch across its rungs; `fidelity_by_epoch` names each epoch's rung), its end
(COMPLETE with the final value, PRUNED when ASHA stopped it, FAIL when it diverged, failed,
was over budget or lost) and user attributes: parameters, status and node. Once confirmed,
the study's `confirmed_test_acc` gives each confirmed trial's test accuracy per seed. One
writer: the search's driver, or the command making the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tune_mnist.results import TrialView
from tune_mnist.search.journal import Journal
from tune_mnist.search.space_file import load_space
from tune_mnist.tables import read_parquet

FILE = "optuna.journal"
STATES = {  # trials.parquet status -> Optuna state (None: still running)
    "completed": "COMPLETE",
    "asha_stopped": "PRUNED",
    "over_budget": "FAIL",
    "diverged": "FAIL",
    "error": "FAIL",
    "lost": "FAIL",
}


class StudyFile:
    """The open journal of one search; `sync` brings it up to date."""

    def __init__(self, folder: Path, space):
        import optuna  # lazy: Optuna loads only where a study is read or written
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space, self.settings = space, space.settings
        self.path = folder / FILE
        self.storage = JournalStorage(JournalFileBackend(str(self.path)))
        directions = [self.settings["mode"] + "imize"]
        if self.settings.get("pareto"):
            directions.append("minimize")
        optuna.create_study(
            study_name=folder.name,
            storage=self.storage,
            directions=directions,
            load_if_exists=True,
        )
        self.study_id = self.storage.get_study_id_from_name(folder.name)
        self.known: dict[str, Any] = {}  # Ray trial id -> its Optuna trial, as last synced
        self.ids: dict[str, int] = {}  # Ray trial id -> the storage's id of its Optuna trial
        for frozen in self.storage.get_all_trials(self.study_id, deepcopy=False):
            if "trial_id" in frozen.user_attrs:
                trial_id = frozen.user_attrs["trial_id"]
                self.known[trial_id] = frozen
                self.ids[trial_id] = self.storage.get_trial_id_from_study_id_trial_number(
                    self.study_id, frozen.number
                )

    def sync(self, views, trials_df, confirmations=None) -> None:
        rows = {r["trial_id"]: r for r in trials_df.to_dict("records")} if len(trials_df) else {}
        for view in views:
            row = rows.get(view.trial_id)
            if row is None or not view.config:
                continue
            frozen = self.known.get(view.trial_id)
            if frozen is None:
                frozen = self._create(view)
                if frozen is None:
                    continue
            self._update(frozen, view, row)
        if confirmations is not None and len(confirmations):
            self._confirmed(confirmations)

    def _create(self, view):
        # lazy: Optuna loads only where a study is read or written
        from optuna.trial import FixedTrial, TrialState, create_trial

        replay = FixedTrial(view.config)
        try:
            self.space.define_by_run(replay)
        except (ValueError, KeyError, TypeError):  # a config the space cannot replay
            return None
        params = {k: view.config[k] for k in replay.distributions}
        template = create_trial(
            state=TrialState.RUNNING,
            params=params,
            distributions=replay.distributions,
            user_attrs={"trial_id": view.trial_id},
        )
        tid = self.storage.create_new_trial(self.study_id, template_trial=template)
        self.ids[view.trial_id] = tid
        self.known[view.trial_id] = self.storage.get_trial(tid)
        return self.known[view.trial_id]

    def _update(self, frozen, view, row: dict) -> None:
        # lazy: Optuna loads only where a study is read or written
        from optuna.trial import TrialState

        tid = self.ids[view.trial_id]
        if frozen.state.is_finished():  # (Optuna refuses any change to a finished trial)
            return
        metric, fidelity = self.settings["metric"], {}
        for report in view.results:
            epoch, value = report.get("epoch"), report.get(metric)
            if not epoch or value is None or report.get("over_budget"):
                continue
            fidelity[str(int(epoch))] = report.get("fidelity") or "full"
            if int(epoch) not in frozen.intermediate_values:
                self.storage.set_trial_intermediate_value(tid, int(epoch), float(value))
        attrs = {
            "params": int(row.get("params") or -1),
            "status": str(row["status"]),
            "node": str(row.get("node_id") or ""),
            "fidelity_by_epoch": fidelity,
        }
        for key, value in attrs.items():
            if frozen.user_attrs.get(key) != value:
                self.storage.set_trial_user_attr(tid, key, value)
        state = STATES.get(str(row["status"]))
        if state == "COMPLETE":
            values = [float(view.results[-1][metric])]
            if self.settings.get("pareto"):
                values.append(float(row["params"]))
            self.storage.set_trial_state_values(tid, TrialState.COMPLETE, values)
        elif state is not None:
            self.storage.set_trial_state_values(tid, TrialState[state])
        self.known[view.trial_id] = self.storage.get_trial(tid)

    def _confirmed(self, confirmations) -> None:
        """Each confirmed trial's test accuracy per seed, as the study's user attribute
        `confirmed_test_acc` ({trial: {seed: accuracy}}): a finished Optuna trial takes no
        new attributes, and confirmations come after the search."""
        seeds: dict[str, dict[str, float]] = {}
        for row in confirmations.itertuples():
            seeds.setdefault(str(row.trial_id), {})[str(int(row.seed))] = float(row.final_test_acc)
        study = self.storage.get_study_user_attrs(self.study_id)
        if seeds and study.get("confirmed_test_acc") != seeds:
            self.storage.set_study_user_attr(self.study_id, "confirmed_test_acc", seeds)


def rebuild(folder: Path) -> Path | None:
    """The study file of a finished search, brought up to date from its journal, or from
    its tables where no journal is kept (a search committed without one; confirmations made
    since): the file, or None when the folder has neither a space nor trials."""

    space_file, trials_file = folder / "space.yaml", folder / "trials.parquet"
    if not space_file.is_file() or not trials_file.is_file():
        return None
    space, trials = load_space(space_file), read_parquet(trials_file)
    records = Journal(folder).read()
    if records:
        views = [
            TrialView(t, r.ended or "INTERRUPTED", r.config, r.last_result, r.results)
            for t, r in records.items()
        ]
    else:
        views = views_from_tables(space, trials, read_parquet(folder / "epochs.parquet"))
    path = folder / "confirmations.parquet"
    confirmations = read_parquet(path) if path.is_file() else None
    StudyFile(folder, space).sync(views, trials, confirmations)
    return folder / FILE


def views_from_tables(space, trials, epochs) -> list[TrialView]:
    """Each trial as the journal would have it, from its table rows: its sampled values
    under the space's Optuna names (`arch`, the shared ones, `<arch>:<field>`) and its
    epochs as reports."""
    by_trial = {t: rows for t, rows in epochs.groupby("trial_id")}
    out = []
    for row in trials.to_dict("records"):
        arch = space.branch_of(row)  # its Optuna `arch`: the branch (`lean-late`)
        if arch is None:
            continue
        config = {"arch": arch}
        config |= {k: row[k] for k, d in space.shared.items() if d.kind != "const" and k in row}
        config |= {
            f"{arch}:{k}": row[k]
            for k, d in space.branches[arch].items()
            if d.kind != "const" and k in row
        }
        rows = by_trial.get(row["trial_id"])
        results = [] if rows is None else rows.sort_values("epoch").to_dict("records")
        plain = {k: v.item() if hasattr(v, "item") else v for k, v in config.items()}
        out.append(
            TrialView(
                row["trial_id"], "TERMINATED", plain, results[-1:] and results[-1] or {}, results
            )
        )
    return out
