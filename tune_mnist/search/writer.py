"""The driver's record keeper: journal every event, rebuild the parquet tables from it.

Ray pickles its callbacks into the experiment state (tuner.pkl), and a resume unpickles them.
So what Ray holds is a `Relay` with no state: it forwards each event to the `ResultsWriter`
of the driver process that is running now (`set_live`). A resumed or moved experiment thus
writes into the folder its own driver names, never into the one a first driver used.
"""

from __future__ import annotations

import time
from pathlib import Path

from optuna.exceptions import OptunaError
from ray import tune

from tune_mnist.results import TrialView, build_tables, write_tables
from tune_mnist.search import ray_door, rungs
from tune_mnist.search.eta import epochs_left
from tune_mnist.search.journal import Journal, Ledger, TrialRecord, resolve
from tune_mnist.search.optuna_journal import FILE, StudyFile
from tune_mnist.train.labels import label

WRITE_EVERY_S = 10.0  # tables follow running trials' epochs at most this often
HEARTBEAT_S = 60.0  # a progress line at least this often while trials train
_LIVE: ResultsWriter | None = None
UNFINISHED = ("PENDING", "RUNNING", "PAUSED")


def set_live(writer: ResultsWriter | None) -> None:
    global _LIVE
    _LIVE = writer


def live_reports() -> tuple[dict[str, list[dict]], set[str]]:
    """Every trial's journaled reports, in order, and the trials that ended: what a
    resumed scheduler rebuilds its rungs from (tune_mnist.search.promotion)."""
    records = _LIVE.journal.read() if _LIVE else {}
    return {t: r.results for t, r in records.items()}, {t for t, r in records.items() if r.ended}


class Relay(tune.Callback):
    """The callback Ray keeps: forwards to the live writer (none: the event is dropped)."""

    def on_trial_start(self, iteration, trials, trial, **info):
        if _LIVE:
            _LIVE.on_trial_start(trials, trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if _LIVE:
            _LIVE.on_trial_result(trials, trial, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if _LIVE:
            _LIVE.on_trial_complete(trials, trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        if _LIVE:
            _LIVE.on_trial_error(trials, trial)

    def on_step_begin(self, iteration, trials, **info):
        if _LIVE:
            _LIVE.on_step_begin(trials)

    def on_experiment_end(self, trials, **info):
        if _LIVE:
            _LIVE.write(trials)


def error_text(trial) -> str:
    try:
        lines = Path(trial.error_file).read_text().strip().splitlines() if trial.error_file else []
    except OSError:
        lines = []
    lines = [line for line in lines if line.strip()]
    return lines[-1][:500] if lines else "error (no error file)"


def end_text(last: dict, space) -> str:
    """`completed 15 epochs, val_acc 99.46%` / `stopped by ASHA at epoch 12, ...` /
    `over budget (4,099 parameters, not under 4,000), not trained`: how a trial ended, on
    validation."""
    if last.get("over_budget"):
        limit = space.settings["max_params"]
        return (
            f"over budget ({last.get('params', 0):,} parameters, not under {limit:,}), not trained"
        )
    epoch, val = int(last.get("epoch") or 0), last.get("val_acc")
    if last.get("diverged"):
        return f"diverged at epoch {epoch} (loss not finite), never passes"
    fidelity = last.get("fidelity") or "full"
    if epoch >= rungs.trial_epochs(space.settings):
        how = f"completed {epoch} epochs"
    elif fidelity != "full":  # ASHA judges a rung at its last epoch
        how = f"stopped by ASHA after its {fidelity} rung"
    else:
        how = f"stopped by ASHA at epoch {epoch}"
    return how + (f", val_acc {val:.2f}%" if val is not None else "")


def config_summary(space, config: dict) -> str:
    """A trial's model as the tables will name it (`lean 8-16s-(6)-12-24s-30s silu lr0.035
    clean3`, tune_mnist.train.labels); a config that is no TrainConfig (the cause of its
    failure) is shown as its sampled values."""
    try:
        return label(space.train_config(config))
    except (ValueError, TypeError):
        values = {key.split(":", 1)[-1]: value for key, value in config.items()}
        return " ".join(f"{key} {value}" for key, value in values.items())


class ResultsWriter:
    """Journals each event (search.journal), then rewrites the tables from the journal."""

    def __init__(self, folder: Path, space, cpus: int, prov: dict, experiment: str):
        self.folder, self.space, self.cpus, self.prov = folder, space, cpus, prov
        self.experiment = experiment  # where Ray keeps this run's checkpoints (path or URI)
        self.journal = Journal(folder)
        self.started = time.time()
        self.written = 0.0
        self.trials: list = []  # Ray's trials, as last seen
        self.checked = False  # for trials that Ray lost (see on_step_begin)
        self.busy_s = 0.0  # training seconds reported to this process
        self.peak_running = 0  # most trials Ray ran at once (holding their resources)
        self.beat = time.time()  # when the last progress line was printed
        self.epochs: dict[str, int] = {}  # each running trial's newest epoch
        self.seen: set[str] = set()  # trials started by this process
        self.paused: set[str] = set()  # trials seen waiting at a rung
        self.study: StudyFile | None = None  # the Optuna study file (optuna_journal)
        self.study_failed = False
        # reports journaled before this process started (a resume): not this pace's epochs
        self.resumed_epochs = sum(len(r.results) for r in self.journal.read().values())

    def on_step_begin(self, trials) -> None:
        """Once, when Ray's loop starts: a journaled trial that Ray's restored state does not
        know (a kill came before Ray's first snapshot named it) can never be continued; it
        is recorded as lost, and Ray runs another trial in its place."""
        running = sum(t.status == "RUNNING" for t in trials)
        self.peak_running = max(self.peak_running, running)
        self.paused.update(t.trial_id for t in trials if t.status == "PAUSED")
        if self.checked:
            return
        self.checked = True
        known = {t.trial_id for t in trials}
        for trial_id, record in self.journal.read().items():
            if trial_id not in known and not record.ended:
                self.journal.end(trial_id, "LOST", "lost: killed before Ray recorded it")

    def on_trial_start(self, trials, trial) -> None:
        self.trials = trials
        # a second start in this process is Ray's retry after a failure; a trial the journal
        # knew before this process began is continued by a --resume
        how = "started"
        if trial.trial_id in self.paused:  # waited at a rung (tune_mnist.search.promotion)
            how = "promoted: goes on to its next rung"
            self.paused.discard(trial.trial_id)
        elif trial.trial_id in self.seen:
            how = "restarted after a failure"
        elif trial.trial_id in self.journal.read():
            how = "resumed"
        self.seen.add(trial.trial_id)
        self.journal.start(trial.trial_id, trial.config, self.prov)
        print(
            f"trial {trial.trial_id} {how}: {config_summary(self.space, trial.config)}", flush=True
        )

    def on_trial_result(self, trials, trial, result) -> None:
        self.journal.start(trial.trial_id, trial.config, self.prov)
        if not self.journal.ended(trial.trial_id) and not result.get("replayed"):
            self.busy_s += float(result.get("epoch_s") or 0.0)  # trained by this process
        # Ray stores the report's checkpoint before the report reaches the driver, and names
        # its folder in the report: the journal keeps it relative to the experiment folder
        folder = result.get("checkpoint_dir_name")
        checkpoint = f"{ray_door.trial_dir_name(trial)}/{folder}" if folder else ""
        self.journal.epoch(trial.trial_id, result, checkpoint)
        self.epochs[trial.trial_id] = int(result.get("epoch") or 0)
        if time.time() - self.written > WRITE_EVERY_S:
            self.write(trials)
        if time.time() - self.beat > HEARTBEAT_S:
            self.progress()

    def on_trial_complete(self, trials, trial) -> None:
        # `done` marks a real end: the trainable returned, or the scheduler stopped it. A
        # trial stopped because the search was interrupted has no `done`: it stays resumable.
        # A paused trial that Ray completes is one the scheduler stopped at its rung
        # (tune_mnist.search.promotion): a real end too.
        last = trial.last_result or {}
        stopped = last.get("done") or trial.status == "PAUSED"
        news = stopped and not self.journal.ended(trial.trial_id)  # (a resume's ended
        if news:  # trials return unannounced, and bring no progress line each)
            self.journal.end(trial.trial_id, "TERMINATED")
            print(f"trial {trial.trial_id} ended: {end_text(last, self.space)}", flush=True)
        self.epochs.pop(trial.trial_id, None)
        self.write(trials)
        if news or time.time() - self.beat > HEARTBEAT_S:
            self.progress()

    def on_trial_error(self, trials, trial) -> None:
        cause = error_text(trial)
        self.journal.end(trial.trial_id, "ERROR", cause)
        where = f"; Ray's full error: {trial.error_file}" if trial.error_file else ""
        model = config_summary(self.space, trial.config)
        print(f"trial {trial.trial_id} failed ({model}): {cause}{where}", flush=True)
        self.epochs.pop(trial.trial_id, None)
        self.write(trials)
        self.progress()

    def ledger(self) -> Ledger:
        """What a resumed trainable needs: the ended trials (never trained again), each
        running trial's newest checkpoint, as a path or URI under today's experiment, and
        its newest journaled epoch."""
        records = self.journal.read()
        running = {t: r for t, r in records.items() if not r.ended}
        return Ledger(
            ended=frozenset(t for t, r in records.items() if r.ended),
            newest={
                t: resolve(r.checkpoint, self.experiment)
                for t, r in running.items()
                if r.checkpoint
            },
            epochs={
                t: max((int(x.get("epoch") or 0) for x in r.results), default=0)
                for t, r in running.items()
            },
        )

    def views(self, trials=None) -> list[TrialView]:
        trials = self.trials if trials is None else trials
        live = {t.trial_id: t for t in trials}
        records = self.journal.read()
        views = [_view(record, live.get(tid)) for tid, record in records.items()]
        views += [
            TrialView(tid, trial.status, trial.config, {}, [])
            for tid, trial in live.items()
            if tid not in records
        ]
        return views

    def write(self, trials=None) -> list[Path]:
        """The tables, then the Optuna study file (optuna_journal), from the journal. None
        before a trial began: a search stopped then has nothing to continue (its name stays
        free, command.has_started)."""
        if trials is not None:
            self.trials = trials
        self.written = time.time()
        views = self.views()
        if not views:
            return []
        tables = build_tables(views, self.space, self.cpus, self.prov)
        paths = write_tables(self.folder, *tables)
        self.sync_study(views, tables[0])
        return paths

    def sync_study(self, views, trials_df) -> None:
        """The study file is a view for the viewers: a failure to write it is said once and
        never stops the search (the journal and the tables hold everything)."""
        if self.study_failed:
            return
        try:
            if self.study is None:
                self.study = StudyFile(self.folder, self.space)
            self.study.sync(views, trials_df)
        except (OSError, ValueError, RuntimeError, OptunaError) as exc:
            self.study_failed = True
            print(f"note: {self.folder / FILE} not written ({exc}); the tables are", flush=True)

    def tables(self):
        return build_tables(self.views(), self.space, self.cpus, self.prov)

    def counts(self) -> tuple[int, int, int]:
        """(ended, running, total) trials of the search."""
        records = self.journal.read()
        ended = sum(bool(r.ended) for r in records.values())
        # Ray still lists a trial as RUNNING while its end is being handled
        running = sum(
            t.status == "RUNNING" and not self.journal.ended(t.trial_id) for t in self.trials
        )
        total = max(self.space.settings["samples"], len(records))
        return ended, running, total

    def progress(self) -> None:
        """`progress: 5 of 24 trials ended, 2 running (epochs 7, 3 of 20), 3 waiting at a
        rung, 6.1 min so far, about 23 min left`. The estimate counts epochs, not trials (an
        over-budget trial ends at once, a promoted one trains every rung): the epochs left,
        at the pace of the epochs trained so far."""
        self.beat = time.time()
        records = self.journal.read()
        ended, running, total = self.counts()
        elapsed = time.time() - self.started
        status = {t.trial_id: t.status for t in self.trials}
        done = sorted(  # a promoted trial waiting for a free slot is PENDING: not listed
            (e for t, e in self.epochs.items() if status.get(t) == "RUNNING"), reverse=True
        )
        closed = {t for t, r in records.items() if r.ended}  # Ray may still say PAUSED
        waiting = sum(s == "PAUSED" and t not in closed for t, s in status.items())  # at a rung
        queued = sum(  # promoted, no slot yet: pending with epochs journaled (a resume's too)
            status.get(t) == "PENDING" and bool(r.results) and not r.ended
            for t, r in records.items()
        )
        left = epochs_left(records, self.epochs, total, self.space.settings)
        trained = sum(len(r.results) for r in records.values()) - self.resumed_epochs
        left_s = elapsed * left / trained if trained > 0 else 0.0  # at this search's pace
        at = f" (epochs {', '.join(map(str, done))} of {rungs.trial_epochs(self.space.settings)})"
        print(
            f"progress: {min(ended, total)} of {total} trials ended, {running} running"
            f"{at if done and running else ''}"
            f"{f', {waiting} waiting at a rung' if waiting else ''}"
            f"{f', {queued} promoted, waiting for a slot' if queued else ''}, "
            f"{elapsed / 60:.1f} min so far, "
            f"about {left_s / 60:.0f} min left",
            flush=True,
        )


def _view(record: TrialRecord, trial) -> TrialView:
    """The journal's word on a trial, with Ray's live status while it has not ended."""
    if record.ended:
        status = record.ended
    elif trial is not None and trial.status in UNFINISHED:
        status = trial.status
    else:  # stopped by an interrupt or a kill, or unknown to Ray after one
        status = "INTERRUPTED"
    config = record.config or (trial.config if trial is not None else {})
    return TrialView(
        record.trial_id,
        status,
        config,
        record.last_result,
        record.results,
        record.error,
        record.provenance,
    )
