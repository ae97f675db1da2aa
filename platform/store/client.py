"""The MLflow client of one tracking URI, every call retried on a locked database: the small public write
and read API the stages use (the cell runs in ``tracking.py``, the search stage in ``run/search/store.py``).
Tag, param and metric names come from ``schema.py``; nothing here knows what a cell is.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from segarena.platform.store.retry import retry, store_creation_lock
from segarena.platform.store.schema import MetricName, Tag
from segarena.platform.store.workdir import WorkDir

PARAM_CHARS = 6000  # MLflow's limit on a param value
PARAMS_PER_BATCH, METRICS_PER_BATCH = 100, 900


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts as dotted param names (``{"hparams": {"lr": 0.1}}`` → ``hparams.lr``), values as text."""
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)[:PARAM_CHARS]
    return out


def _now_ms() -> int:
    return int(time.time() * 1000)


class StoreClient:
    """The store of one tracking URI; ``workdir`` given and owning that URI = the embedded store."""

    def __init__(self, tracking_uri: str, workdir: WorkDir | None = None) -> None:
        self.uri = tracking_uri
        with store_creation_lock(tracking_uri):  # the client opens (and, when new, creates) the store
            self.client = MlflowClient(tracking_uri=tracking_uri)
        self.workdir = workdir
        self.embedded = workdir is not None and tracking_uri == workdir.tracking_uri

    # reads ----------------------------------------------------------------------------------
    def get_run(self, run_id: str) -> Any:
        return retry(lambda: self.client.get_run(run_id))

    def experiments(self) -> list[Any]:
        """The experiments segarena made (one per suite)."""
        return [e for e in self.client.search_experiments() if e.tags.get(Tag.SUITE)]

    def runs(self, experiment_ids: Iterable[str], kind: str) -> list[Any]:
        """Every run of one kind (``schema.KIND_*``) in these experiments, all pages."""
        ids = list(experiment_ids)
        if not ids:
            return []
        runs, token = [], None
        while True:
            page = retry(lambda token=token: self.client.search_runs(
                ids, filter_string=f"tags.`{Tag.KIND}` = '{kind}'", max_results=5000, page_token=token))
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def metric_history(self, run_id: str, key: str) -> list[float]:
        """One metric's values in step order (a curve)."""
        history = retry(lambda: self.client.get_metric_history(run_id, key))
        return [m.value for m in sorted(history, key=lambda m: m.step)]

    # writes ---------------------------------------------------------------------------------
    def start_run(self, experiment_id: str, name: str, tags: dict[str, str]) -> str:
        """A new RUNNING run; ``tags`` should hold its ``Tag.KIND`` and ``Tag.STATUS``."""
        return retry(lambda: self.client.create_run(experiment_id, run_name=name, tags=tags)).info.run_id

    def reopen(self, run_id: str) -> None:
        """RUNNING again (a search a killed driver left behind, resumed)."""
        retry(lambda: self.client.update_run(run_id, status="RUNNING"))

    def end_run(self, run_id: str, state: str = "FINISHED") -> None:
        """MLflow's own end state (FINISHED | FAILED | KILLED); segarena's ``Tag.STATUS`` is the caller's."""
        retry(lambda: self.client.set_terminated(run_id, state))

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        retry(lambda: self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()], synchronous=True))

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Params, nested dicts flattened (``flatten``)."""
        batch = [Param(k, v) for k, v in flatten(params).items()]
        for i in range(0, len(batch), PARAMS_PER_BATCH):
            retry(lambda i=i: self.client.log_batch(run_id, params=batch[i:i + PARAMS_PER_BATCH], synchronous=True))

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        if not metrics:
            return
        now = _now_ms()
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        retry(lambda: self.client.log_batch(run_id, metrics=batch, synchronous=True))

    def log_history(self, run_id: str, history: pd.DataFrame) -> None:
        """Training curves (``train/*``, ``val/*``) per epoch."""
        now = _now_ms()
        metrics = []
        for _, row in history.iterrows():
            if "epoch" not in row or pd.isna(row["epoch"]):
                continue
            for k, v in row.items():
                if str(k).startswith((MetricName.TRAIN_PREFIX, MetricName.VAL_PREFIX)) and pd.notna(v):
                    metrics.append(Metric(str(k), float(v), now, int(row["epoch"])))
        for i in range(0, len(metrics), METRICS_PER_BATCH):
            retry(lambda i=i: self.client.log_batch(run_id, metrics=metrics[i:i + METRICS_PER_BATCH],
                                                    synchronous=True))
