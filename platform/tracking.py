"""MLflow tracking under the tracking contract (DESIGN.md): one experiment per suite, one run per
cell (with a nested run per evaluated budget), exact tag/metric/artifact names.

Only the harness writes here; plugins never see MLflow. A cell's run is RUNNING while it trains,
then FINISHED with everything logged, or FAILED with its error: readers count FINISHED only.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from segarena.platform.suite import Cell

T = TypeVar("T")
PREFIX = "segarena."
KIND_TRAIN, KIND_EVAL = "train", "eval"
STATUS_RUNNING, STATUS_FINISHED, STATUS_FAILED = "running", "finished", "failed"
ORPHAN_ERROR = "orphaned: the driver stopped before this cell finished"


def default_tracking_uri(workdir: Path) -> str:
    return f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"


def _retry(fn: Callable[[], T], attempts: int = 8) -> T:
    """SQLite allows one writer at a time; concurrent trials retry a locked database."""
    for i in range(attempts):
        try:
            return fn()
        except MlflowException as exc:
            if "locked" not in str(exc).lower() or i == attempts - 1:
                raise
            time.sleep(0.2 * 2**i)
    raise AssertionError("unreachable")


def cell_tags(cell: Cell, segarena_version: str, git_sha: str) -> dict[str, str]:
    return {
        f"{PREFIX}suite": cell.suite, f"{PREFIX}method": cell.method, f"{PREFIX}dataset": cell.dataset,
        f"{PREFIX}seed": str(cell.seed), f"{PREFIX}profile": cell.profile, f"{PREFIX}cell": cell.key,
        f"{PREFIX}plugin_version": cell.plugin_version, f"{PREFIX}version": segarena_version,
        f"{PREFIX}git_sha": git_sha,
        f"{PREFIX}budget": ",".join(b.name for b in cell.budget_objects()),
        f"{PREFIX}variant": cell.variant,
    }


def _flat_params(d: dict[str, Any], prefix: str = "") -> list[Param]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flat_params(v, f"{prefix}{k}.")
        else:
            out.append(Param(f"{prefix}{k}", str(v)[:6000]))
    return out


class Tracker:
    def __init__(self, tracking_uri: str, artifact_root: Path | None = None) -> None:
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.artifact_root = artifact_root

    # experiments ------------------------------------------------------------------------
    def experiment(self, suite: str, create: bool = True) -> str | None:
        exp = self.client.get_experiment_by_name(suite)
        if exp is not None:
            return exp.experiment_id
        if not create:
            return None
        location = (self.artifact_root / suite).resolve().as_uri() if self.artifact_root else None
        return _retry(lambda: self.client.create_experiment(suite, artifact_location=location,
                                                            tags={f"{PREFIX}suite": suite}))

    def experiments(self) -> list[Any]:
        return [e for e in self.client.search_experiments() if e.tags.get(f"{PREFIX}suite")]

    def runs(self, experiment_ids: Iterable[str], kind: str) -> list[Any]:
        ids = list(experiment_ids)
        if not ids:
            return []
        runs, token = [], None
        while True:
            page = self.client.search_runs(ids, filter_string=f"tags.`{PREFIX}kind` = '{kind}'", max_results=5000,
                                           page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def finished_cells(self, experiment_id: str) -> dict[str, str]:
        return {r.data.tags[f"{PREFIX}cell"]: r.info.run_id for r in self.runs([experiment_id], KIND_TRAIN)
                if r.info.status == "FINISHED" and r.data.tags.get(f"{PREFIX}status") == STATUS_FINISHED}

    def mark_orphans(self, experiment_id: str) -> list[str]:
        """Cell runs left RUNNING by a driver that died: marked FAILED, never counted."""
        orphans = [r.info.run_id for r in self.runs([experiment_id], KIND_TRAIN) if r.info.status == "RUNNING"]
        for run_id in orphans:
            self.fail_cell(run_id, ORPHAN_ERROR)
        return orphans

    # one cell ----------------------------------------------------------------------------
    def start_cell(self, experiment_id: str, cell: Cell, tags: dict[str, str]) -> str:
        run = _retry(lambda: self.client.create_run(
            experiment_id, run_name=f"{cell.method}-{cell.dataset}-s{cell.seed}",
            tags={**tags, f"{PREFIX}kind": KIND_TRAIN, f"{PREFIX}status": STATUS_RUNNING}))
        run_id = run.info.run_id
        params = _flat_params({"hparams": cell.hparams, "dataset_params": cell.dataset_params,
                               "epochs": cell.epochs, "steps_per_epoch": cell.steps_per_epoch})
        _retry(lambda: self.client.log_batch(run_id, params=params[:100], synchronous=True))
        return run_id

    def log_history(self, run_id: str, history: pd.DataFrame) -> None:
        """Training curves (``train/*``, ``val/dice``) per epoch from the reported results."""
        now = int(time.time() * 1000)
        metrics = []
        for _, row in history.iterrows():
            if "epoch" not in row or pd.isna(row["epoch"]):
                continue
            for k, v in row.items():
                if (str(k).startswith(("train/", "val/"))) and pd.notna(v):
                    metrics.append(Metric(str(k), float(v), now, int(row["epoch"])))
        for i in range(0, len(metrics), 900):
            _retry(lambda i=i: self.client.log_batch(run_id, metrics=metrics[i:i + 900], synchronous=True))

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        _retry(lambda: self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()], synchronous=True))

    def fail_cell(self, run_id: str, error: str) -> None:
        tags = [RunTag(f"{PREFIX}status", STATUS_FAILED), RunTag(f"{PREFIX}error", error[:4900])]
        _retry(lambda: self.client.log_batch(run_id, tags=tags, synchronous=True))
        _retry(lambda: self.client.set_terminated(run_id, "FAILED"))

    def finish_cell(self, experiment_id: str, run_id: str, cell: Cell, tags: dict[str, str],
                    results: dict[str, dict[str, Any]], per_case: pd.DataFrame, files: dict[str, Any],
                    extra_metrics: dict[str, float]) -> list[str]:
        """Log each budget as a nested FINISHED run, the first budget's headline metrics on the cell
        run, then mark the cell FINISHED last, so a crash in between leaves a run that is not counted."""
        child_ids = []
        for budget_name, res in results.items():
            child = _retry(lambda b=budget_name: self.client.create_run(
                experiment_id, run_name=f"{cell.method}-{cell.dataset}-s{cell.seed}-{b}",
                tags={**tags, f"{PREFIX}kind": KIND_EVAL, f"{PREFIX}budget": b, f"{PREFIX}status": STATUS_FINISHED,
                      f"{PREFIX}parent": run_id, "mlflow.parentRunId": run_id}))
            cid = child.info.run_id
            self.log_metrics(cid, res["metrics"])
            self._log_budget_tags(cid, res)
            self._log_files(cid, {"per_case.parquet": per_case[per_case["budget"] == budget_name],
                                  "config.json": files["config.json"], "environment.json": files["environment.json"]})
            _retry(lambda cid=cid: self.client.set_terminated(cid, "FINISHED"))
            child_ids.append(cid)
        first = next(iter(results.values()))
        self.log_metrics(run_id, {**first["metrics"], **extra_metrics})
        self._log_files(run_id, {"per_case.parquet": per_case, **files})
        _retry(lambda: self.client.log_batch(run_id, tags=[RunTag(f"{PREFIX}status", STATUS_FINISHED)],
                                             synchronous=True))
        _retry(lambda: self.client.set_terminated(run_id, "FINISHED"))
        return child_ids

    def _log_budget_tags(self, run_id: str, res: dict[str, Any]) -> None:
        tags = [RunTag(f"{PREFIX}{k}", str(v)) for k, v in res.get("tags", {}).items()]
        if tags:
            _retry(lambda: self.client.log_batch(run_id, tags=tags, synchronous=True))

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        _retry(lambda: self.client.log_batch(run_id, metrics=batch, synchronous=True))

    def _log_files(self, run_id: str, files: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in files.items():
                path = Path(tmp) / name
                if isinstance(content, pd.DataFrame):
                    content.to_parquet(path, index=False)
                elif isinstance(content, (dict, list)):
                    path.write_text(json.dumps(content, indent=1, default=str))
                else:
                    path.write_text(str(content))
                _retry(lambda p=path: self.client.log_artifact(run_id, str(p)))

    def load_table(self, run_id: str, name: str = "per_case.parquet") -> pd.DataFrame:
        with tempfile.TemporaryDirectory() as tmp:
            local = self.client.download_artifacts(run_id, name, tmp)
            return pd.read_parquet(local)
