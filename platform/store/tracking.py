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
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from segarena.platform.errors import StoreError
from segarena.platform.records import BudgetResult, Cell, CellResult
from segarena.platform.store.preflight import local_store_path, tracking_scheme
from segarena.platform.store.workdir import ARTIFACT_SCHEME, WorkDir, experiment_location

T = TypeVar("T")
PREFIX = "segarena."
KIND_TRAIN, KIND_EVAL, KIND_DRIVER = "train", "eval", "driver"
STATUS_RUNNING, STATUS_FINISHED, STATUS_FAILED = "running", "finished", "failed"
ORPHAN_ERROR = "orphaned: the driver stopped before this cell finished"
RETRIED_ERROR = "trial process crashed; retried"
CRASHED_ERROR = "trial process crashed"
INTERRUPTED_ERROR = "interrupted: the driver was stopped (Ctrl-C)"
LEASE_S = 60.0  # a driver whose heartbeat is older than this is gone: its RUNNING runs are orphans
PER_CASE = "per_case.parquet"
PER_CASE_PREVIEW = "per_case.csv"  # the MLflow UI previews CSV as a table
MODEL_DIR = "model"
BEST = ("dice", "iou", "hd95", "latency_ms", "nfe")


def default_tracking_uri(workdir: Path) -> str:
    return WorkDir.at(workdir).tracking_uri


def _locked(text: str) -> bool:
    return "locked" in text


def _retry(fn: Callable[[], T], attempts: int = 10, retriable: Callable[[str], bool] = _locked) -> T:
    """SQLite allows one writer at a time; concurrent trials retry a locked database. MLflow passes some
    of SQLAlchemy's errors through unwrapped, so any error whose type, text or cause says "database is
    locked" is retried (``retriable`` widens that for a known race)."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # MlflowException, sqlalchemy.exc.OperationalError, sqlite3.OperationalError
            if not retriable(f"{type(exc).__name__} {exc} {exc.__cause__ or ''}".lower()) or i == attempts - 1:
                raise
            time.sleep(0.1 * 2**i + random.random() * 0.1)  # jitter: two trials that collided do not retry in step
    raise AssertionError("unreachable")


@contextmanager
def _store_creation_lock(uri: str) -> Iterator[None]:
    """Opening a fresh SQLite store runs MLflow's schema migrations; two processes running them at once both
    fail ("table _alembic_tmp_… already exists"), e.g. two drivers started together on a new work dir. They
    take turns on a lock file beside the database (no lock where the store's folder cannot take one)."""
    path = local_store_path(uri) if tracking_scheme(uri) == "sqlite" else None
    try:
        handle = open(path.with_name(path.name + ".lock"), "a") if path is not None and path.parent.is_dir() else None
    except OSError:  # a read-only store folder: no process can create the store there either
        handle = None
    if handle is None:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def cell_tags(cell: Cell, segarena_version: str, git_sha: str) -> dict[str, str]:
    return {
        f"{PREFIX}suite": cell.suite, f"{PREFIX}method": cell.method,
        f"{PREFIX}dataset": cell.dataset_label or cell.dataset, f"{PREFIX}dataset_plugin": cell.dataset,
        f"{PREFIX}seed": str(cell.seed), f"{PREFIX}profile": cell.profile, f"{PREFIX}cell": cell.key,
        f"{PREFIX}plugin_version": cell.plugin_version, f"{PREFIX}plugin_source": cell.plugin_source_hash,
        f"{PREFIX}version": segarena_version,
        f"{PREFIX}git_sha": git_sha,
        f"{PREFIX}budget": ",".join(b.name for b in cell.budget_objects()),
        f"{PREFIX}variant": cell.variant, f"{PREFIX}augment": cell.augment,
    }


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)[:6000]
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _tag(run: Any, name: str) -> str | None:
    return run.data.tags.get(PREFIX + name)


def _gone_here(driver_run: Any) -> bool:
    """A driver recorded on this host whose process no longer exists."""
    if _tag(driver_run, "host") != socket.gethostname() or not (_tag(driver_run, "pid") or "").isdigit():
        return False
    try:
        os.kill(int(_tag(driver_run, "pid")), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def best_budget(evals: Iterable[Any]) -> Any | None:
    """The finished evaluation with the highest Dice (lower HD95 breaks ties), or None."""
    done = [r for r in evals if r.info.status == "FINISHED" and "dice" in r.data.metrics]
    if not done:
        return None
    return max(done, key=lambda r: (r.data.metrics["dice"], -r.data.metrics.get("hd95", 0.0)))


class Tracker:
    """The store of one tracking URI; ``workdir`` given and owning that URI = the embedded store."""

    def __init__(self, tracking_uri: str, workdir: WorkDir | None = None) -> None:
        self.uri = tracking_uri
        with _store_creation_lock(tracking_uri):  # the client opens (and, when new, creates) the store
            self.client = MlflowClient(tracking_uri=tracking_uri)
        self.workdir = workdir
        self.embedded = workdir is not None and tracking_uri == workdir.tracking_uri
        self._tables: dict[tuple[str, str], pd.DataFrame] = {}

    def _get_run(self, run_id: str) -> Any:
        return _retry(lambda: self.client.get_run(run_id))

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
                exp_id = _retry(lambda: self.client.create_experiment(suite, artifact_location=location,
                                                                      tags={f"{PREFIX}suite": suite}))
            except MlflowException as exc:  # another driver created it a moment ago: use theirs
                exp = self.client.get_experiment_by_name(suite)
                if exp is None or exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp_id = exp.experiment_id
        if description:
            _retry(lambda: self.client.set_experiment_tag(exp_id, "mlflow.note.content", description))
        return exp_id

    def experiments(self) -> list[Any]:
        return [e for e in self.client.search_experiments() if e.tags.get(f"{PREFIX}suite")]

    def runs(self, experiment_ids: Iterable[str], kind: str) -> list[Any]:
        ids = list(experiment_ids)
        if not ids:
            return []
        runs, token = [], None
        while True:
            page = _retry(lambda token=token: self.client.search_runs(
                ids, filter_string=f"tags.`{PREFIX}kind` = '{kind}'", max_results=5000, page_token=token))
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def finished_trainings(self, experiment_id: str) -> dict[str, str]:
        """Training key → run id of its newest finished training."""
        runs = sorted(self.runs([experiment_id], KIND_TRAIN), key=lambda r: r.info.start_time)
        return {_tag(r, "cell"): r.info.run_id for r in runs
                if r.info.status == "FINISHED" and _tag(r, "status") == STATUS_FINISHED}

    def finished_evaluations(self, experiment_id: str) -> set[tuple[str, str]]:
        """(training run id, evaluation key) of every finished evaluation."""
        return {(_tag(r, "parent"), _tag(r, "eval_key")) for r in self.runs([experiment_id], KIND_EVAL)
                if r.info.status == "FINISHED" and _tag(r, "status") == STATUS_FINISHED}

    def tuned_cells(self, experiment_ids: Iterable[str]) -> dict[str, str]:
        """Training key → ``tuned (N trials, S s)`` for the cells a finished search selected (run/search/
        writes the ``search`` runs); every other cell is ``default`` on the leaderboard."""
        out: dict[str, str] = {}
        for r in sorted(self.runs(experiment_ids, "search"), key=lambda r: r.info.start_time):
            if r.info.status != "FINISHED" or _tag(r, "status") != STATUS_FINISHED:
                continue
            label = (f"tuned ({r.data.metrics.get('trials', 0):.0f} trials, "
                     f"{r.data.metrics.get('search_trial_s', 0):.0f} s)")
            out.update(dict.fromkeys([k for k in (_tag(r, "tuned_cells") or "").split(",") if k], label))
        return out

    # drivers: a lease in the store, so drivers sharing a store never take each other's live cells ---------
    def start_driver(self, experiment_id: str, suite: str, driver: str, host: str) -> str:
        run = _retry(lambda: self.client.create_run(
            experiment_id, run_name=f"driver-{host}-{driver}",
            tags={f"{PREFIX}kind": KIND_DRIVER, f"{PREFIX}suite": suite, f"{PREFIX}driver": driver,
                  f"{PREFIX}host": host, f"{PREFIX}pid": str(os.getpid()), f"{PREFIX}heartbeat": str(time.time())}))
        return run.info.run_id

    def heartbeat(self, driver_run_id: str) -> None:
        self.set_tags(driver_run_id, {f"{PREFIX}heartbeat": str(time.time())})

    def stop_driver(self, driver_run_id: str) -> None:
        _retry(lambda: self.client.set_terminated(driver_run_id, "FINISHED"))

    def live_drivers(self, experiment_id: str, lease_s: float = LEASE_S) -> list[Any]:
        """Driver runs whose heartbeat is recent, oldest first; a driver of this machine whose process is
        gone is dead at once (a killed driver's rerun need not wait for its lease to run out)."""
        now = time.time()
        runs = [r for r in self.runs([experiment_id], KIND_DRIVER) if r.info.status == "RUNNING"
                and now - float(_tag(r, "heartbeat") or 0) < lease_s and not _gone_here(r)]
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    def mark_orphans(self, experiment_id: str, lease_s: float = LEASE_S) -> list[str]:
        """Runs left RUNNING by a driver that is gone (no live lease): marked FAILED, never counted.
        Runs of a live driver (another suite's, or another work dir's on a shared server) are left alone."""
        live = {_tag(r, "driver") for r in self.live_drivers(experiment_id, lease_s)}
        for r in self.runs([experiment_id], KIND_DRIVER):
            if r.info.status == "RUNNING" and _tag(r, "driver") not in live:
                _retry(lambda r=r: self.client.set_terminated(r.info.run_id, "KILLED"))
        orphans = [r.info.run_id for kind in (KIND_TRAIN, KIND_EVAL) for r in self.runs([experiment_id], kind)
                   if r.info.status == "RUNNING" and _tag(r, "driver") not in live]
        for run_id in orphans:
            self.fail_run(run_id, ORPHAN_ERROR)
        return orphans

    def fail_driver_runs(self, experiment_id: str, driver: str, error: str, cell_key: str | None = None) -> list[str]:
        """This driver's RUNNING runs (of one cell, or all): a crashed trial, an interrupted run."""
        stale = [r.info.run_id for kind in (KIND_TRAIN, KIND_EVAL) for r in self.runs([experiment_id], kind)
                 if r.info.status == "RUNNING" and _tag(r, "driver") == driver
                 and (cell_key is None or _tag(r, "cell") == cell_key)]
        for run_id in stale:
            self.fail_run(run_id, error)
        return stale

    def mark_retried(self, experiment_id: str, cell_key: str, driver: str) -> list[str]:
        """This driver's own earlier runs of a cell still RUNNING: a crashed trial that Tune retries."""
        return self.fail_driver_runs(experiment_id, driver, RETRIED_ERROR, cell_key)

    # one training -------------------------------------------------------------------------
    def start_training(self, experiment_id: str, cell: Cell, tags: dict[str, str]) -> str:
        run = _retry(lambda: self.client.create_run(
            experiment_id, run_name=f"{cell.method}-{cell.dataset_label or cell.dataset}-s{cell.seed}",
            tags={**tags, f"{PREFIX}kind": KIND_TRAIN, f"{PREFIX}status": STATUS_RUNNING}))
        run_id = run.info.run_id
        params = _flat({"hparams": cell.hparams, "dataset_params": cell.dataset_params, "epochs": cell.epochs,
                        "steps_per_epoch": cell.steps_per_epoch, "augment": cell.augment})
        self._params(run_id, params)
        return run_id

    def fail_run(self, run_id: str, error: str) -> None:
        """FAILED with its error; a training's finished evaluations go with it (a half-logged cell leaves
        no FINISHED evaluation under a FAILED parent)."""
        tags = [RunTag(f"{PREFIX}status", STATUS_FAILED), RunTag(f"{PREFIX}error", error[:4900])]
        _retry(lambda: self.client.log_batch(run_id, tags=tags, synchronous=True))
        _retry(lambda: self.client.set_terminated(run_id, "FAILED"))
        if _tag(self._get_run(run_id), "kind") == KIND_TRAIN:
            self._fail_children(run_id, f"its training run failed: {error}")

    def _fail_children(self, run_id: str, error: str) -> None:
        run = self._get_run(run_id)
        tags = [RunTag(f"{PREFIX}status", STATUS_FAILED), RunTag(f"{PREFIX}error", error[:4900])]
        for child in self.runs([run.info.experiment_id], KIND_EVAL):
            if _tag(child, "parent") == run_id and child.info.status != "FAILED":
                _retry(lambda c=child: self.client.log_batch(c.info.run_id, tags=tags, synchronous=True))
                _retry(lambda c=child: self.client.set_terminated(c.info.run_id, "FAILED"))

    def _check_not_failed(self, run_id: str) -> None:
        run = self._get_run(run_id)
        if run.info.status == "FAILED" or _tag(run, "status") == STATUS_FAILED:
            raise StoreError(f"run {run_id} was marked failed ({_tag(run, 'error') or 'no error'}) while this "
                             "process was logging it: not finished")

    def finish_training(self, experiment_id: str, run_id: str, cell: Cell, tags: dict[str, str],
                        result: CellResult, files: dict[str, Any], harness: dict[str, float]) -> list[str]:
        """Training record, weights, then each budget's evaluation, then FINISHED last."""
        self.log_history(run_id, pd.DataFrame(result.history))
        self.set_tags(run_id, {f"{PREFIX}dataset_hash": result.dataset_hash,
                               **{f"{PREFIX}{k}": v for k, v in result.card_tags.items()}})
        self._log_dataset(run_id, cell, result.dataset_hash)
        self.log_metrics(run_id, {"parameters": float(result.parameters)})
        self._put(run_id, {**files, "harness.json": harness})
        if result.weights:
            self._put_dir(run_id, Path(result.weights), MODEL_DIR)
        try:
            children = self.log_evaluations(experiment_id, run_id, cell, tags, result.budgets, result.per_case,
                                            files.get("environment.json", {}), result.predictions)
            self._finish(run_id)
        except StoreError:  # marked failed meanwhile: whatever this process logged under it goes too
            self._fail_children(run_id, "its training run failed while it was being logged")
            raise
        return children

    def log_evaluations(self, experiment_id: str, parent_id: str, cell: Cell, tags: dict[str, str],
                        budgets: list[BudgetResult], per_case: pd.DataFrame, environment: dict[str, Any],
                        predictions: str | None = None) -> list[str]:
        """One nested FINISHED run per budget (with its saved masks and overlay images under
        ``predictions/``), then the parent's ``best/*`` from all its evaluations."""
        child_ids = []
        for res in budgets:
            self._check_not_failed(parent_id)
            b = res.budget
            child = _retry(lambda b=b, res=res: self.client.create_run(
                experiment_id, run_name=f"{cell.method}-{cell.dataset_label or cell.dataset}-s{cell.seed}-{b.name}",
                tags={**tags, f"{PREFIX}kind": KIND_EVAL, f"{PREFIX}budget": b.name,
                      f"{PREFIX}eval_key": cell.eval_key(b), f"{PREFIX}status": STATUS_RUNNING,
                      f"{PREFIX}parent": parent_id, "mlflow.parentRunId": parent_id,
                      **{f"{PREFIX}{k}": str(v) for k, v in res.tags.items()}}))
            cid = child.info.run_id
            self._params(cid, _flat({"method": cell.method, "profile": cell.profile, "variant": cell.variant,
                                     "dataset": cell.dataset_label or cell.dataset, "seed": cell.seed,
                                     "hparams": cell.hparams, "budget": b.as_dict(),
                                     "evaluation": cell.evaluation_settings()}))
            self.log_metrics(cid, res.metrics)
            table = per_case[per_case["budget"] == b.name]
            self._put(cid, {PER_CASE: table, PER_CASE_PREVIEW: table, "environment.json": environment})
            if predictions and (Path(predictions) / b.name).is_dir():
                self._put_dir(cid, Path(predictions) / b.name, "predictions")
            self._finish(cid)
            child_ids.append(cid)
        self.update_best(parent_id)
        return child_ids

    def update_best(self, parent_id: str) -> None:
        """``best/*`` metrics and the ``segarena.best_budget`` tag of a training run, from its evaluations
        (never the first budget's scores under the plain names: those sort wrongly in the UI)."""
        run = self._get_run(parent_id)
        evals = [r for r in self.runs([run.info.experiment_id], KIND_EVAL) if _tag(r, "parent") == parent_id
                 and _tag(r, "status") == STATUS_FINISHED]
        best = best_budget(evals)
        if best is None:
            return
        self.log_metrics(parent_id, {f"best/{k}": best.data.metrics[k] for k in BEST if k in best.data.metrics})
        self.set_tags(parent_id, {f"{PREFIX}best_budget": _tag(best, "budget") or ""})

    # small writes ---------------------------------------------------------------------------
    def _finish(self, run_id: str) -> None:
        """FINISHED last; never over a run another driver already marked failed (a late write of a
        driver that was taken for dead must not bring its cell back)."""
        run = self._get_run(run_id)
        if run.info.status != "RUNNING" or _tag(run, "status") == STATUS_FAILED:
            raise StoreError(f"run {run_id} was marked {run.info.status.lower()} ({_tag(run, 'error') or 'no error'})"
                             " while this process was logging it: not finished")
        self.set_tags(run_id, {f"{PREFIX}status": STATUS_FINISHED})
        _retry(lambda: self.client.set_terminated(run_id, "FINISHED"))

    def _params(self, run_id: str, params: dict[str, str]) -> None:
        batch = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(batch), 100):
            _retry(lambda i=i: self.client.log_batch(run_id, params=batch[i:i + 100], synchronous=True))

    def _log_dataset(self, run_id: str, cell: Cell, digest: str) -> None:
        source = json.dumps({"plugin": cell.dataset, "params": cell.dataset_params, "path": cell.dataset_path})
        ds = Dataset(name=cell.dataset_label or cell.dataset, digest=digest[:36], source_type="segarena",
                     source=source)
        inputs = [DatasetInput(ds, [InputTag("mlflow.data.context", "train")])]
        # two cells of one dataset race to insert its row: the loser retries and links the winner's
        _retry(lambda: self.client.log_inputs(run_id, inputs),
               retriable=lambda text: _locked(text) or "unique" in text or "integrity" in text)

    def log_history(self, run_id: str, history: pd.DataFrame) -> None:
        """Training curves (``train/*``, ``val/dice``) per epoch."""
        now = int(time.time() * 1000)
        metrics = []
        for _, row in history.iterrows():
            if "epoch" not in row or pd.isna(row["epoch"]):
                continue
            for k, v in row.items():
                if str(k).startswith(("train/", "val/")) and pd.notna(v):
                    metrics.append(Metric(str(k), float(v), now, int(row["epoch"])))
        for i in range(0, len(metrics), 900):
            _retry(lambda i=i: self.client.log_batch(run_id, metrics=metrics[i:i + 900], synchronous=True))

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        _retry(lambda: self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()], synchronous=True))

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        _retry(lambda: self.client.log_batch(run_id, metrics=batch, synchronous=True))

    # artifacts ------------------------------------------------------------------------------
    def _local_root(self, run_id: str) -> Path | None:
        """The run's artifact folder when it lives in this work dir (embedded store), else None."""
        if not self.embedded:
            return None
        uri = self._get_run(run_id).info.artifact_uri
        return self.workdir.artifact_path(uri) if uri.startswith(ARTIFACT_SCHEME) else None

    def _put(self, run_id: str, files: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in files.items():
                path = Path(tmp) / name
                if isinstance(content, pd.DataFrame):
                    if name.endswith(".csv"):
                        content.to_csv(path, index=False)
                    else:
                        content.to_parquet(path, index=False)
                elif isinstance(content, (dict, list)):
                    path.write_text(json.dumps(content, indent=1, default=str))
                else:
                    path.write_text(str(content))
            self._put_dir(run_id, Path(tmp), "")

    def _put_dir(self, run_id: str, folder: Path, under: str) -> None:
        root = self._local_root(run_id)
        if root is not None:
            dest = root / under if under else root
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copytree(folder, dest, dirs_exist_ok=True)
            return
        _retry(lambda: self.client.log_artifacts(run_id, str(folder), under or None))

    def fetch(self, run_id: str, path: str, dest: Path) -> Path:
        """A local copy of one artifact file or folder (in place for the embedded store)."""
        try:
            root = self._local_root(run_id)
            if root is not None:
                local = root / path
                if not local.exists():
                    raise StoreError(f"run {run_id}: artifact {path!r} is missing ({local})")
                return local
            dest.mkdir(parents=True, exist_ok=True)
            return Path(self.client.download_artifacts(run_id, path, str(dest)))
        except StoreError:
            raise
        except (MlflowException, OSError) as exc:
            raise StoreError(f"run {run_id}: cannot read artifact {path!r}: {_first_line(exc)}") from exc

    def load_table(self, run_id: str, name: str = PER_CASE) -> pd.DataFrame:
        """A run's table; read once per Tracker (the leaderboard and its statistics read the same ones)."""
        key = (run_id, name)
        if key not in self._tables:
            self._tables[key] = self._read_table(run_id, name)
        return self._tables[key].copy()

    def _read_table(self, run_id: str, name: str) -> pd.DataFrame:
        with tempfile.TemporaryDirectory() as tmp:
            local = self.fetch(run_id, name, Path(tmp))
            try:
                return pd.read_parquet(local)
            except (OSError, ValueError) as exc:
                raise StoreError(f"run {run_id}: artifact {name!r} is unreadable: {_first_line(exc)}") from exc

    def load_json(self, run_id: str, name: str) -> Any:
        with tempfile.TemporaryDirectory() as tmp:
            return json.loads(self.fetch(run_id, name, Path(tmp)).read_text())
