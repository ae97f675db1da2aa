"""How a run ends, and whose runs are whose: a driver's lease in the store, so drivers sharing a store never
take each other's live cells; runs of a driver that is gone marked FAILED (orphans, a crashed trial's); and
FINISHED written last, never over a run another driver already marked failed.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from segarena.platform.errors import StoreError
from segarena.platform.store.client import StoreClient
from segarena.platform.store.schema import (
    KIND_DRIVER,
    KIND_EVAL,
    KIND_TRAIN,
    STATUS_FAILED,
    STATUS_FINISHED,
    CellRun,
    DriverRun,
    EvaluationRun,
    StoredRun,
    Tag,
)

ORPHAN_ERROR = "orphaned: the driver stopped before this cell finished"
RETRIED_ERROR = "trial process crashed; retried"
CRASHED_ERROR = "trial process crashed"
INTERRUPTED_ERROR = "interrupted: the driver was stopped (Ctrl-C)"
LEASE_S = 60.0  # a driver whose heartbeat is older than this is gone: its RUNNING runs are orphans
ERROR_CHARS = 4900  # under MLflow's limit on a tag value


def _gone_here(driver: DriverRun) -> bool:
    """A driver recorded on this host whose process no longer exists."""
    if driver.host != socket.gethostname() or not driver.pid.isdigit():
        return False
    try:
        os.kill(int(driver.pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class RunLifecycle(StoreClient):
    """Driver leases and the end of runs (FAILED with the reason, or FINISHED last)."""

    # drivers ---------------------------------------------------------------------------------
    def start_driver(self, experiment_id: str, suite: str, driver: str, host: str) -> str:
        return self.start_run(experiment_id, f"driver-{host}-{driver}", {
            Tag.KIND: KIND_DRIVER, Tag.SUITE: suite, Tag.DRIVER: driver, Tag.HOST: host, Tag.PID: str(os.getpid()),
            Tag.HEARTBEAT: str(time.time())})

    def heartbeat(self, driver_run_id: str) -> None:
        self.set_tags(driver_run_id, {Tag.HEARTBEAT: str(time.time())})

    def stop_driver(self, driver_run_id: str) -> None:
        self.end_run(driver_run_id, "FINISHED")

    def live_drivers(self, experiment_id: str, lease_s: float = LEASE_S) -> list[Any]:
        """Driver runs whose heartbeat is recent, oldest first; a driver of this machine whose process is
        gone is dead at once (a killed driver's rerun need not wait for its lease to run out)."""
        now = time.time()
        runs = [r for r in self.runs([experiment_id], KIND_DRIVER)
                if (d := DriverRun.from_mlflow(r)).state == "RUNNING" and now - d.heartbeat < lease_s
                and not _gone_here(d)]
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    def mark_orphans(self, experiment_id: str, lease_s: float = LEASE_S) -> list[str]:
        """Runs left RUNNING by a driver that is gone (no live lease): marked FAILED, never counted.
        Runs of a live driver (another suite's, or another work dir's on a shared server) are left alone."""
        live = {DriverRun.from_mlflow(r).driver for r in self.live_drivers(experiment_id, lease_s)}
        for r in map(DriverRun.from_mlflow, self.runs([experiment_id], KIND_DRIVER)):
            if r.state == "RUNNING" and r.driver not in live:
                self.end_run(r.run_id, "KILLED")
        orphans = [r.run_id for kind in (KIND_TRAIN, KIND_EVAL)
                   for r in map(StoredRun.from_mlflow, self.runs([experiment_id], kind))
                   if r.state == "RUNNING" and r.driver not in live]
        for run_id in orphans:
            self.fail_run(run_id, ORPHAN_ERROR)
        return orphans

    def fail_driver_runs(self, experiment_id: str, driver: str, error: str, cell_key: str | None = None) -> list[str]:
        """This driver's RUNNING runs (of one cell, or all): a crashed trial, an interrupted run."""
        stale = [r.run_id for kind in (KIND_TRAIN, KIND_EVAL)
                 for r in map(CellRun.from_mlflow, self.runs([experiment_id], kind))
                 if r.state == "RUNNING" and r.driver == driver and (cell_key is None or r.cell == cell_key)]
        for run_id in stale:
            self.fail_run(run_id, error)
        return stale

    def mark_retried(self, experiment_id: str, cell_key: str, driver: str) -> list[str]:
        """This driver's own earlier runs of a cell still RUNNING: a crashed trial that Tune retries."""
        return self.fail_driver_runs(experiment_id, driver, RETRIED_ERROR, cell_key)

    # the end of a run ------------------------------------------------------------------------
    def fail_run(self, run_id: str, error: str) -> None:
        """FAILED with its error; a training's finished evaluations go with it (a half-logged cell leaves
        no FINISHED evaluation under a FAILED parent)."""
        self._mark_failed(run_id, error)
        if StoredRun.from_mlflow(self.get_run(run_id)).kind == KIND_TRAIN:
            self.fail_children(run_id, f"its training run failed: {error}")

    def _mark_failed(self, run_id: str, error: str) -> None:
        self.set_tags(run_id, {Tag.STATUS: STATUS_FAILED, Tag.ERROR: error[:ERROR_CHARS]})
        self.end_run(run_id, "FAILED")

    def fail_children(self, run_id: str, error: str) -> None:
        """A training's evaluations not yet FAILED, marked FAILED with ``error``."""
        run = self.get_run(run_id)
        for child in map(EvaluationRun.from_mlflow, self.runs([run.info.experiment_id], KIND_EVAL)):
            if child.parent == run_id and child.state != "FAILED":
                self._mark_failed(child.run_id, error)

    def check_not_failed(self, run_id: str) -> None:
        """Raise StoreError when another process marked the run failed while this one was logging it."""
        run = StoredRun.from_mlflow(self.get_run(run_id))
        if run.failed:
            raise StoreError(f"run {run_id} was marked failed ({run.error or 'no error'}) while this "
                             "process was logging it: not finished")

    def finish_run(self, run_id: str) -> None:
        """FINISHED last; never over a run another driver already marked failed (a late write of a
        driver that was taken for dead must not bring its cell back)."""
        run = StoredRun.from_mlflow(self.get_run(run_id))
        if run.state != "RUNNING" or run.status == STATUS_FAILED:
            raise StoreError(f"run {run_id} was marked {run.state.lower()} ({run.error or 'no error'})"
                             " while this process was logging it: not finished")
        self.set_tags(run_id, {Tag.STATUS: STATUS_FINISHED})
        self.end_run(run_id, "FINISHED")

