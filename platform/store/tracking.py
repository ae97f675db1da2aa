"""MLflow tracking under the tracking contract (docs/contracts.md, "Tracking").

One experiment per suite. One *training* run per cell (training key): training curves, the best
budget's scores as ``best/*``, weights under ``model/``, provenance. One nested *evaluation* run
per budget (evaluation key) with that budget's scores, cost and per-case table. A run is RUNNING
while it works, then FINISHED with everything logged, or FAILED with its error: readers count
FINISHED only, and every run is marked FINISHED last.

Only the harness writes here; plugins never see MLflow. This module never imports torch.
The embedded store (SQLite in the work dir) keeps artifacts under the work dir exactly as a served
store would (``mlflow-artifacts:/<suite>/<run>/artifacts``): no absolute path is recorded, so a
copied work dir works, and ``mlflow server --serve-artifacts`` on it shows them.

The store is built in layers: ``client.py`` (retried reads and writes), ``artifacts.py`` (a run's files),
``lifecycle.py`` (driver leases, failing and finishing runs), and here the cells' training and evaluation
runs. Every name written comes from ``schema.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.exceptions import MlflowException

from segarena.platform.errors import StoreError
from segarena.platform.records import BudgetResult, Cell, CellResult
from segarena.platform.scoring import catalog
from segarena.platform.store.artifacts import Artifacts
from segarena.platform.store.lifecycle import (
    CRASHED_ERROR,
    INTERRUPTED_ERROR,
    LEASE_S,
    ORPHAN_ERROR,
    RETRIED_ERROR,
    RunLifecycle,
)
from segarena.platform.store.retry import is_locked, retry
from segarena.platform.store.schema import (
    BEST,
    ENVIRONMENT_FILE,
    HARNESS_FILE,
    KIND_DRIVER,
    KIND_EVAL,
    KIND_SEARCH,
    KIND_TRAIN,
    MODEL_DIR,
    PER_CASE,
    PER_CASE_PREVIEW,
    PREDICTIONS_DIR,
    STATUS_FAILED,
    STATUS_FINISHED,
    STATUS_RUNNING,
    EvaluationRun,
    MetricName,
    ParamName,
    SearchRun,
    Tag,
    TrainingRun,
    named_tag,
)
from segarena.platform.store.workdir import experiment_location

__all__ = ["CRASHED_ERROR", "INTERRUPTED_ERROR", "KIND_DRIVER", "KIND_EVAL", "KIND_TRAIN", "LEASE_S", "ORPHAN_ERROR",
           "PER_CASE", "RETRIED_ERROR", "STATUS_FAILED", "STATUS_FINISHED", "STATUS_RUNNING", "Tracker", "best_budget",
           "cell_tags"]


def cell_tags(cell: Cell, segarena_version: str, git_sha: str) -> dict[str, str]:
    """The tags a training and each of its evaluations carry: what the cell is and what ran it."""
    return {
        Tag.SUITE: cell.suite, Tag.METHOD: cell.method,
        Tag.DATASET: cell.dataset_label or cell.dataset, Tag.DATASET_PLUGIN: cell.dataset,
        Tag.SEED: str(cell.seed), Tag.PROFILE: cell.profile, Tag.CELL: cell.key,
        Tag.PLUGIN_VERSION: cell.plugin_version, Tag.PLUGIN_SOURCE: cell.plugin_source_hash,
        Tag.VERSION: segarena_version,
        Tag.GIT_SHA: git_sha,
        Tag.BUDGET: ",".join(b.name for b in cell.budgets),
        Tag.VARIANT: cell.variant, Tag.AUGMENT: cell.augment,
    }


def best_budget(evals: Iterable[Any]) -> Any | None:
    """The finished evaluation that ranks first by the board's order (``catalog.RANK_BY``: highest Dice, lower
    HD95 breaks ties), or None."""
    first = catalog.RANK_BY[0]
    done = [r for r in evals if r.info.status == "FINISHED" and first in r.data.metrics]
    if not done:
        return None

    def key(r: Any) -> tuple[float, ...]:
        return tuple(-r.data.metrics.get(m, 0.0) if catalog.METRICS[m].lower_is_better
                     else r.data.metrics.get(m, 0.0) for m in catalog.RANK_BY)

    return max(done, key=key)


def _run_name(cell: Cell) -> str:
    return f"{cell.method}-{cell.dataset_label or cell.dataset}-s{cell.seed}"


class Tracker(RunLifecycle, Artifacts):
    """The store of one tracking URI; ``workdir`` given and owning that URI = the embedded store."""

    # experiments ------------------------------------------------------------------------
    def experiment(self, suite: str, create: bool = True, description: str = "") -> str | None:
        exp = self.client.get_experiment_by_name(suite)
        if exp is not None:
            exp_id = exp.experiment_id
        elif not create:
            return None
        else:
            # the embedded store records a location relative to its artifact root; a server picks its own
            location = experiment_location(suite) if self.embedded else None
            try:
                exp_id = retry(lambda: self.client.create_experiment(suite, artifact_location=location,
                                                                     tags={Tag.SUITE: suite}))
            except MlflowException as exc:  # another driver created it a moment ago: use theirs
                exp = self.client.get_experiment_by_name(suite)
                if exp is None or exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp_id = exp.experiment_id
        if description:
            retry(lambda: self.client.set_experiment_tag(exp_id, Tag.MLFLOW_NOTE, description))
        return exp_id

    def finished_trainings(self, experiment_id: str) -> dict[str, str]:
        """Training key → run id of its newest finished training."""
        runs = sorted(map(TrainingRun.from_mlflow, self.runs([experiment_id], KIND_TRAIN)), key=lambda r: r.start_time)
        return {r.cell: r.run_id for r in runs if r.finished}

    def finished_evaluations(self, experiment_id: str) -> set[tuple[str, str]]:
        """(training run id, evaluation key) of every finished evaluation."""
        return {(r.parent, r.eval_key) for r in map(EvaluationRun.from_mlflow, self.runs([experiment_id], KIND_EVAL))
                if r.finished}

    def tuned_cells(self, experiment_ids: Iterable[str]) -> dict[str, str]:
        """Training key → ``tuned (N trials, S s)`` for the cells a finished search selected (run/search/
        writes the ``search`` runs); every other cell is ``default`` on the leaderboard."""
        out: dict[str, str] = {}
        for r in sorted(map(SearchRun.from_mlflow, self.runs(experiment_ids, KIND_SEARCH)), key=lambda r: r.start_time):
            if r.finished:
                label = f"tuned ({r.trials:.0f} trials, {r.search_trial_s:.0f} s)"
                out.update(dict.fromkeys(r.tuned_cells, label))
        return out

    # one training -------------------------------------------------------------------------
    def start_training(self, experiment_id: str, cell: Cell, tags: dict[str, str],
                       headline_loss: str | None = None) -> str:
        """The cell's RUNNING training run, with its params; ``headline_loss`` (the plugin's) names the loss
        curve the report shows."""
        headline = {Tag.HEADLINE_LOSS: headline_loss} if headline_loss else {}
        run_id = self.start_run(experiment_id, _run_name(cell),
                                {**tags, **headline, Tag.KIND: KIND_TRAIN, Tag.STATUS: STATUS_RUNNING})
        self.log_params(run_id, {ParamName.HPARAMS: cell.hparams, ParamName.DATASET_PARAMS: cell.dataset_params,
                                 ParamName.EPOCHS: cell.epochs, ParamName.STEPS_PER_EPOCH: cell.steps_per_epoch,
                                 ParamName.AUGMENT: cell.augment})
        return run_id

    def finish_training(self, experiment_id: str, run_id: str, cell: Cell, tags: dict[str, str],
                        result: CellResult, files: dict[str, Any], harness: dict[str, float]) -> list[str]:
        """Training record, weights, then each budget's evaluation, then FINISHED last."""
        self.log_history(run_id, pd.DataFrame(result.history))
        self.set_tags(run_id, {Tag.DATASET_HASH: result.dataset_hash,
                               **{named_tag(k): v for k, v in result.card_tags.items()}})
        self._log_dataset(run_id, cell, result.dataset_hash)
        self.log_metrics(run_id, {MetricName.PARAMETERS: float(result.parameters)})
        self.put_files(run_id, {**files, HARNESS_FILE: harness})
        if result.weights:
            self.put_dir(run_id, Path(result.weights), MODEL_DIR)
        try:
            children = self.log_evaluations(experiment_id, run_id, cell, tags, result.budgets, result.per_case,
                                            files.get(ENVIRONMENT_FILE, {}), result.predictions)
            self.finish_run(run_id)
        except StoreError:  # marked failed meanwhile: whatever this process logged under it goes too
            self.fail_children(run_id, "its training run failed while it was being logged")
            raise
        return children

    def log_evaluations(self, experiment_id: str, parent_id: str, cell: Cell, tags: dict[str, str],
                        budgets: list[BudgetResult], per_case: pd.DataFrame, environment: dict[str, Any],
                        predictions: str | None = None) -> list[str]:
        """One nested FINISHED run per budget (with its saved masks and overlay images under
        ``predictions/``), then the parent's ``best/*`` from all its evaluations."""
        child_ids = []
        for res in budgets:
            self.check_not_failed(parent_id)
            b = res.budget
            cid = self.start_run(experiment_id, f"{_run_name(cell)}-{b.name}", {
                **tags, Tag.KIND: KIND_EVAL, Tag.BUDGET: b.name, Tag.EVAL_KEY: cell.eval_key(b),
                Tag.STATUS: STATUS_RUNNING, Tag.PARENT: parent_id, Tag.MLFLOW_PARENT: parent_id,
                **{named_tag(k): str(v) for k, v in res.tags.items()}})
            self.log_params(cid, {ParamName.METHOD: cell.method, ParamName.PROFILE: cell.profile,
                                  ParamName.VARIANT: cell.variant,
                                  ParamName.DATASET: cell.dataset_label or cell.dataset, ParamName.SEED: cell.seed,
                                  ParamName.HPARAMS: cell.hparams,
                                  ParamName.BUDGET: b.as_dict(), ParamName.EVALUATION: cell.evaluation_settings()})
            self.log_metrics(cid, res.metrics)
            table = per_case[per_case["budget"] == b.name]
            self.put_files(cid, {PER_CASE: table, PER_CASE_PREVIEW: table, ENVIRONMENT_FILE: environment})
            if predictions and (Path(predictions) / b.name).is_dir():
                self.put_dir(cid, Path(predictions) / b.name, PREDICTIONS_DIR)
            self.finish_run(cid)
            child_ids.append(cid)
        self.update_best(parent_id)
        return child_ids

    def update_best(self, parent_id: str) -> None:
        """``best/*`` metrics and the ``segarena.best_budget`` tag of a training run, from its evaluations
        (never the first budget's scores under the plain names: those sort wrongly in the UI)."""
        run = self.get_run(parent_id)
        evals = [r for r in self.runs([run.info.experiment_id], KIND_EVAL)
                 if (v := EvaluationRun.from_mlflow(r)).parent == parent_id and v.status == STATUS_FINISHED]
        best = best_budget(evals)
        if best is None:
            return
        self.log_metrics(parent_id, {MetricName.best(k): best.data.metrics[k] for k in BEST
                                     if k in best.data.metrics})
        self.set_tags(parent_id, {Tag.BEST_BUDGET: EvaluationRun.from_mlflow(best).budget})

    def _log_dataset(self, run_id: str, cell: Cell, digest: str) -> None:
        source = json.dumps({"plugin": cell.dataset, "params": cell.dataset_params, "path": cell.dataset_path})
        ds = Dataset(name=cell.dataset_label or cell.dataset, digest=digest[:36], source_type="segarena",
                     source=source)
        inputs = [DatasetInput(ds, [InputTag(Tag.MLFLOW_DATA_CONTEXT, "train")])]
        # two cells of one dataset race to insert its row: the loser retries and links the winner's
        retry(lambda: self.client.log_inputs(run_id, inputs),
              retriable=lambda text: is_locked(text) or "unique" in text or "integrity" in text)
