"""The MLflow schema of segarena: every tag, param and metric name it writes or reads, and typed views of
the runs it reads back (docs/contracts.md, "Tracking"). The one place a ``segarena.*`` name is spelled.

Run kinds: one *training* run per cell, one nested *evaluation* run per budget, one *driver* run per
driver (its lease), one *search* run per hyperparameter search with one nested *search-trial* run per
trial. Every segarena run carries ``segarena.kind`` and ``segarena.status``; MLflow's own status
(``state`` here) is FINISHED last.

Import-light (no torch, no mlflow): the board and the report read the store where neither is installed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final, TypeVar

from segarena.platform.scoring import catalog

PREFIX: Final = "segarena."

# run kinds (the value of Tag.KIND)
KIND_TRAIN, KIND_EVAL, KIND_DRIVER = "train", "eval", "driver"
KIND_SEARCH, KIND_TRIAL = "search", "search-trial"
# a run's own status (Tag.STATUS); MLflow's RUNNING / FINISHED / FAILED is the run's ``state``
STATUS_RUNNING, STATUS_FINISHED, STATUS_FAILED = "running", "finished", "failed"


class Tag:
    """Run and experiment tag names, as stored."""

    # every run
    KIND: Final = "segarena.kind"
    STATUS: Final = "segarena.status"
    ERROR: Final = "segarena.error"
    SUITE: Final = "segarena.suite"  # also the experiment's tag: a segarena suite
    DRIVER: Final = "segarena.driver"
    # a cell (training and evaluation runs; search runs carry the first five)
    METHOD: Final = "segarena.method"
    DATASET: Final = "segarena.dataset"  # the dataset's label
    SEED: Final = "segarena.seed"
    PROFILE: Final = "segarena.profile"
    PLUGIN_VERSION: Final = "segarena.plugin_version"
    DATASET_PLUGIN: Final = "segarena.dataset_plugin"
    CELL: Final = "segarena.cell"  # training key
    PLUGIN_SOURCE: Final = "segarena.plugin_source"
    VERSION: Final = "segarena.version"  # segarena's own
    GIT_SHA: Final = "segarena.git_sha"
    BUDGET: Final = "segarena.budget"  # a training: its budgets, comma-separated; an evaluation: its budget
    VARIANT: Final = "segarena.variant"
    AUGMENT: Final = "segarena.augment"
    # a training
    DATASET_HASH: Final = "segarena.dataset_hash"
    BEST_BUDGET: Final = "segarena.best_budget"
    HEADLINE_LOSS: Final = "segarena.headline_loss"  # the plugin's ``headline_loss``: the report's loss curve
    # an evaluation
    PARENT: Final = "segarena.parent"  # its training run (search trials: their search run)
    EVAL_KEY: Final = "segarena.eval_key"
    MEMBERS_FROM: Final = "segarena.members_from"  # the budget whose ensemble members it reused
    # a driver (its lease)
    HOST: Final = "segarena.host"
    PID: Final = "segarena.pid"
    HEARTBEAT: Final = "segarena.heartbeat"
    # a search and its trials
    SEARCH_KEY: Final = "segarena.search_key"
    TUNED_CELLS: Final = "segarena.tuned_cells"
    SUMMARY: Final = "segarena.summary"
    SEARCHER_STATES: Final = "segarena.searcher_states"
    TRIAL_STATUS: Final = "segarena.trial_status"
    TRIAL_CONFIG: Final = "segarena.trial_config"
    TRIAL_POINTS: Final = "segarena.trial_points"
    TUNE_TRIAL: Final = "segarena.tune_trial"
    # MLflow's own
    MLFLOW_PARENT: Final = "mlflow.parentRunId"  # nests a run under another in the MLflow UI
    MLFLOW_NOTE: Final = "mlflow.note.content"  # an experiment's description
    MLFLOW_DATA_CONTEXT: Final = "mlflow.data.context"  # a dataset input's role


def named_tag(name: str) -> str:
    """The tag of a name a plugin or a scorer chooses (a plugin's ``card_tags``, an evaluation's tags)."""
    return PREFIX + name


def harness_tag(name: str) -> str:
    """A training's harness cost known only once it is logged (``logging_s``, ``cell_wall_s``, ``overhead_s``)."""
    return f"{PREFIX}harness.{name}"


HARNESS_TAG_PREFIX: Final = harness_tag("")


class ParamName:
    """Param names; nested dicts are flattened with dots (``hparams.lr``, ``budget.sampler``)."""

    HPARAMS: Final = "hparams"
    DATASET_PARAMS: Final = "dataset_params"
    EPOCHS: Final = "epochs"
    STEPS_PER_EPOCH: Final = "steps_per_epoch"
    AUGMENT: Final = "augment"
    METHOD: Final = "method"
    PROFILE: Final = "profile"
    VARIANT: Final = "variant"
    DATASET: Final = "dataset"
    SEED: Final = "seed"
    BUDGET: Final = "budget"
    EVALUATION: Final = "evaluation"
    SEARCH: Final = "search"
    SPACE: Final = "space"
    CANDIDATES: Final = "candidates"


class MetricName:
    """Run metric names segarena defines (the scores of an evaluation are the metric catalogue's names)."""

    PARAMETERS: Final = "parameters"  # a training: the model's parameter count
    BEST_PREFIX: Final = "best/"  # a training: its best evaluation's scores
    TRAIN_PREFIX: Final = "train/"  # per-epoch training curves
    VAL_PREFIX: Final = "val/"
    VAL_DICE: Final = "val/dice"
    # a search
    TRIALS: Final = "trials"
    TRIALS_FINISHED: Final = "trials_finished"
    TRIALS_STOPPED: Final = "trials_stopped"
    TRIALS_FAILED: Final = "trials_failed"
    SEARCHER_TRIALS: Final = "searcher_trials"
    SEARCH_TRIAL_S: Final = "search_trial_s"
    BEST_VAL_DICE: Final = "best/val_dice"
    # a search trial
    TRIAL_S: Final = "trial_s"
    EPOCHS_RUN: Final = "epochs_run"

    @staticmethod
    def best(name: str) -> str:
        return MetricName.BEST_PREFIX + name

    @staticmethod
    def budget(budget: str, name: str) -> str:
        """A search trial's score at one candidate budget (``budget/ddim5-e1/val_dice``)."""
        return f"budget/{budget}/{name}"


BEST = catalog.names(headline=True)  # a training's best evaluation, copied as ``best/*`` (dice iou hd95 latency nfe)

# artifacts
PER_CASE = "per_case.parquet"
PER_CASE_PREVIEW = "per_case.csv"  # the MLflow UI previews CSV as a table
MODEL_DIR = "model"
PREDICTIONS_DIR = "predictions"
ENVIRONMENT_FILE = "environment.json"
HARNESS_FILE = "harness.json"
SELECTION_FILE, POINTS_FILE, TRIALS_FILE = "selection.json", "points.json", "trials.json"


# typed views of the runs read back ------------------------------------------------------------------
V = TypeVar("V", bound="StoredRun")


def _from_tag(name: str, parse: Callable[[str], Any] = str, default: Any = "",
              factory: Callable[[], Any] | None = None) -> Any:
    """A view field read from tag ``name`` (``default``, or ``factory()``, when the run has no such tag)."""
    meta = {"tag": name, "parse": parse}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _from_metric(name: str, default: float = 0.0) -> Any:
    return field(default=default, metadata={"metric": name})


def _json(text: str) -> Any:
    return json.loads(text)


def _float(text: str) -> float:
    return float(text or 0)


def _keys(text: str) -> tuple[str, ...]:
    return tuple(k for k in text.split(",") if k)


@dataclass(frozen=True)
class StoredRun:
    """What every segarena run holds; ``state`` is MLflow's own status, ``status`` segarena's tag."""

    run_id: str
    experiment_id: str
    state: str  # RUNNING | FINISHED | FAILED | KILLED
    start_time: int
    kind: str = _from_tag(Tag.KIND)
    status: str = _from_tag(Tag.STATUS)
    error: str = _from_tag(Tag.ERROR)
    suite: str = _from_tag(Tag.SUITE)
    driver: str = _from_tag(Tag.DRIVER)

    @classmethod
    def from_mlflow(cls: type[V], run: Any) -> V:
        """The view of an MLflow ``Run`` (or anything shaped like one: ``info``, ``data.tags``, ``data.metrics``)."""
        tags, metrics = run.data.tags, run.data.metrics
        values: dict[str, Any] = {}
        for f in fields(cls):
            if "tag" in f.metadata and f.metadata["tag"] in tags:
                values[f.name] = f.metadata["parse"](tags[f.metadata["tag"]])
            elif "metric" in f.metadata and f.metadata["metric"] in metrics:
                values[f.name] = metrics[f.metadata["metric"]]
        info = run.info
        return cls(run_id=info.run_id, experiment_id=info.experiment_id, state=info.status,
                   start_time=info.start_time or 0, **values)

    @property
    def finished(self) -> bool:
        """Counted by readers: FINISHED in MLflow and by its own status."""
        return self.state == "FINISHED" and self.status == STATUS_FINISHED

    @property
    def failed(self) -> bool:
        return self.state == "FAILED" or self.status == STATUS_FAILED


@dataclass(frozen=True)
class CellRun(StoredRun):
    """The cell tags a training and its evaluations share."""

    method: str = _from_tag(Tag.METHOD)
    dataset: str = _from_tag(Tag.DATASET)
    seed: str = _from_tag(Tag.SEED)
    profile: str = _from_tag(Tag.PROFILE)
    variant: str = _from_tag(Tag.VARIANT)
    budget: str = _from_tag(Tag.BUDGET)
    cell: str = _from_tag(Tag.CELL)


@dataclass(frozen=True)
class TrainingRun(CellRun):
    dataset_hash: str = _from_tag(Tag.DATASET_HASH)
    best_budget: str = _from_tag(Tag.BEST_BUDGET)
    headline_loss: str = _from_tag(Tag.HEADLINE_LOSS)


@dataclass(frozen=True)
class EvaluationRun(CellRun):
    parent: str = _from_tag(Tag.PARENT)
    eval_key: str = _from_tag(Tag.EVAL_KEY)
    members_from: str = _from_tag(Tag.MEMBERS_FROM)


@dataclass(frozen=True)
class DriverRun(StoredRun):
    host: str = _from_tag(Tag.HOST)
    pid: str = _from_tag(Tag.PID)
    heartbeat: float = _from_tag(Tag.HEARTBEAT, _float, 0.0)


@dataclass(frozen=True)
class SearchRun(StoredRun):
    search_key: str = _from_tag(Tag.SEARCH_KEY)
    method: str = _from_tag(Tag.METHOD)
    dataset: str = _from_tag(Tag.DATASET)
    tuned_cells: tuple[str, ...] = _from_tag(Tag.TUNED_CELLS, _keys, ())
    summary: str = _from_tag(Tag.SUMMARY)
    searcher_states: Mapping[str, int] = _from_tag(Tag.SEARCHER_STATES, _json, factory=dict)
    trials: float = _from_metric(MetricName.TRIALS)
    searcher_trials: float = _from_metric(MetricName.SEARCHER_TRIALS)
    search_trial_s: float = _from_metric(MetricName.SEARCH_TRIAL_S)


@dataclass(frozen=True)
class TrialRun(StoredRun):
    search_key: str = _from_tag(Tag.SEARCH_KEY)
    parent: str = _from_tag(Tag.PARENT)
    trial_status: str = _from_tag(Tag.TRIAL_STATUS, default=STATUS_RUNNING)
    config: Mapping[str, Any] = _from_tag(Tag.TRIAL_CONFIG, _json, factory=dict)
    points: Sequence[Mapping[str, Any]] = _from_tag(Tag.TRIAL_POINTS, _json, factory=list)
    trial_s: float = _from_metric(MetricName.TRIAL_S)
