"""The search's MLflow records, written by the driver through the Tracker's public methods: one parent run
per search (kind ``search``) with one nested run per trial (kind ``search-trial``: params, per-epoch
``val/dice``, status finished|stopped|failed, trial seconds). A trial that ASHA stops cannot write its own
end, so the driver does. Names come from ``store/schema.py``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

from segarena.platform.records import Settings
from segarena.platform.run.search.plan import TRIAL_STATUSES, SearchOutcome, SearchPlan, TrialRecord
from segarena.platform.run.search.select import all_points
from segarena.platform.store.schema import (
    KIND_SEARCH,
    KIND_TRIAL,
    POINTS_FILE,
    SELECTION_FILE,
    STATUS_FINISHED,
    STATUS_RUNNING,
    TRIALS_FILE,
    MetricName,
    ParamName,
    SearchRun,
    Tag,
    TrialRun,
)

INTERRUPTED = "interrupted: the driver stopped before this trial finished; rerun"
SUMMARY_CHARS = 4900  # under MLflow's limit on a tag value


class SearchStore:
    """The search's MLflow records in the suite's experiment (driver side only)."""

    def __init__(self, tracker: Any, experiment_id: str, plan: SearchPlan, settings: Settings) -> None:
        self.tracker, self.exp, self.plan, self.settings = tracker, experiment_id, plan, settings

    def _runs(self, kind: str) -> list[Any]:
        return [r for r in self.tracker.runs([self.exp], kind) if r.data.tags.get(Tag.SEARCH_KEY) == self.plan.key]

    def finished(self) -> SearchRun | None:
        done = [v for v in map(SearchRun.from_mlflow, self._runs(KIND_SEARCH)) if v.finished]
        return max(done, key=lambda v: v.start_time) if done else None

    def open_parent(self) -> str:
        """The unfinished parent of this search (a killed driver's) or a new one."""
        live = sorted(self._runs(KIND_SEARCH), key=lambda r: -r.info.start_time)
        if live:
            run_id = live[0].info.run_id
            self.tracker.reopen(run_id)
            self.tracker.set_tags(run_id, {Tag.STATUS: STATUS_RUNNING})
            return run_id
        plan, s = self.plan, self.settings
        tags = {Tag.KIND: KIND_SEARCH, Tag.STATUS: STATUS_RUNNING, Tag.SEARCH_KEY: plan.key,
                Tag.SUITE: plan.base.suite, Tag.METHOD: plan.method, Tag.DATASET: plan.dataset,
                Tag.PROFILE: plan.base.profile, Tag.PLUGIN_VERSION: plan.base.plugin_version,
                Tag.SEED: str(plan.base.seed), Tag.VERSION: s.segarena_version, Tag.GIT_SHA: s.git_sha,
                Tag.DRIVER: s.driver}
        run_id = self.tracker.start_run(self.exp, f"search-{plan.method}-{plan.dataset}", tags)
        self.tracker.log_params(run_id, {ParamName.SEARCH: plan.search.model_dump(),
                                         ParamName.SPACE: {k: repr(v) for k, v in plan.space.items()},
                                         ParamName.CANDIDATES: ",".join(b.name for b in plan.candidates)})
        return run_id

    def previous(self, parent: str) -> list[TrialRecord]:
        """The trials a killed driver recorded (finished/stopped/failed); its live ones become interrupted."""
        out = []
        for t in sorted(map(TrialRun.from_mlflow, self._runs(KIND_TRIAL)), key=lambda t: t.start_time):
            if t.parent != parent:
                continue
            if t.trial_status not in TRIAL_STATUSES:
                if t.trial_status == STATUS_RUNNING:
                    self.tracker.fail_run(t.run_id, INTERRUPTED)
                    self.tracker.set_tags(t.run_id, {Tag.TRIAL_STATUS: "interrupted"})
                continue
            curve = self.tracker.metric_history(t.run_id, MetricName.VAL_DICE)
            out.append(TrialRecord(config=dict(t.config), status=t.trial_status, curve=curve,
                                   points=[dict(p) for p in t.points], trial_s=t.trial_s, error=t.error,
                                   run_id=t.run_id))
        return out

    def start_trial(self, parent: str, config: dict[str, Any], tune_id: str) -> str:
        plan = self.plan
        tags = {Tag.KIND: KIND_TRIAL, Tag.STATUS: STATUS_RUNNING, Tag.TRIAL_STATUS: STATUS_RUNNING,
                Tag.SEARCH_KEY: plan.key, Tag.PARENT: parent, Tag.MLFLOW_PARENT: parent,
                Tag.METHOD: plan.method, Tag.DATASET: plan.dataset, Tag.SUITE: plan.base.suite,
                Tag.TRIAL_CONFIG: json.dumps(config, sort_keys=True, default=str), Tag.TUNE_TRIAL: tune_id}
        run_id = self.tracker.start_run(self.exp, f"trial-{plan.method}-{tune_id}", tags)
        self.tracker.log_params(run_id, {ParamName.HPARAMS: config})
        return run_id

    def log_epoch(self, run_id: str, result: dict[str, Any]) -> None:
        """A trial's per-epoch ``train/*`` and ``val/*`` results (finite numbers only) at its epoch."""
        metrics = {k: float(v) for k, v in result.items()
                   if k.startswith((MetricName.TRAIN_PREFIX, MetricName.VAL_PREFIX)) and isinstance(v, int | float)
                   and math.isfinite(v)}
        self.tracker.log_metrics(run_id, metrics, step=int(result.get("epoch", 0)))

    def end_trial(self, run_id: str, record: TrialRecord) -> None:
        metrics = {MetricName.TRIAL_S: record.trial_s, MetricName.EPOCHS_RUN: float(len(record.curve))}
        for p in record.points:
            metrics |= {MetricName.budget(p["name"], "val_dice"): p["dice"],
                        MetricName.budget(p["name"], "latency_ms"): p["latency_ms"]}
        self.tracker.log_metrics(run_id, metrics)
        self.tracker.set_tags(run_id, {Tag.TRIAL_STATUS: record.status,
                                       Tag.TRIAL_POINTS: json.dumps(record.points, default=str)})
        if record.status == "failed":
            self.tracker.fail_run(run_id, record.error or "failed")
            return
        self.tracker.set_tags(run_id, {Tag.STATUS: STATUS_FINISHED})
        self.tracker.end_run(run_id, "FINISHED")

    def finish(self, parent: str, outcome: SearchOutcome, cell_keys: list[str]) -> None:
        c = outcome.counts()
        self.tracker.log_metrics(parent, {
            MetricName.TRIALS: float(len(outcome.records)), MetricName.TRIALS_FINISHED: c["finished"],
            MetricName.TRIALS_STOPPED: c["stopped"], MetricName.TRIALS_FAILED: c["failed"],
            MetricName.SEARCHER_TRIALS: float(outcome.searcher_trials), MetricName.SEARCH_TRIAL_S: outcome.trial_s(),
            **({MetricName.BEST_VAL_DICE: outcome.selected[0]["dice"]} if outcome.selected else {})})
        self.tracker.put_files(parent, {SELECTION_FILE: outcome.selected, POINTS_FILE: all_points(outcome.records),
                                        TRIALS_FILE: [asdict(r) for r in outcome.records]})
        self.tracker.set_tags(parent, {Tag.TUNED_CELLS: ",".join(cell_keys),
                                       Tag.SUMMARY: outcome.line()[:SUMMARY_CHARS],
                                       Tag.SEARCHER_STATES: json.dumps(outcome.searcher_states),
                                       Tag.STATUS: STATUS_FINISHED})
        self.tracker.end_run(parent, "FINISHED")

    def add_cells(self, run: SearchRun, cell_keys: list[str]) -> None:
        """A finished search reused with other seeds or epochs: its new tuned cells join its tag."""
        known = list(run.tuned_cells)
        new = [k for k in cell_keys if k not in known]
        if new:
            self.tracker.set_tags(run.run_id, {Tag.TUNED_CELLS: ",".join(known + new)})
