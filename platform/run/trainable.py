"""The Ray Tune trainable of one job: train a cell (in this process, or through a Ray Train
``TorchTrainer`` for several workers), or evaluate stored weights; then record it in MLflow."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from segarena.platform.records import CellResult, Job
from segarena.platform.run import reports
from segarena.platform.run.train_loop import (
    ERROR_MARK,
    TrialSession,
    evaluate_stored,
    guarded,
    train_and_evaluate,
    train_cell,
)
from segarena.platform.store.schema import Tag, harness_tag
from segarena.platform.store.tracking import Tracker, cell_tags
from segarena.platform.store.workdir import WorkDir


def error_line(exc: BaseException) -> str:
    """The plugin's own error from a CellError or a Ray TrainingFailedError, as one line."""
    text = str(exc)
    if ERROR_MARK in text:
        return text.split(ERROR_MARK, 1)[1].strip().splitlines()[0]
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("(Background on this error")]
    return (lines[-1] if lines else type(exc).__name__)[:1000]


def job_resources(config: dict[str, Any]) -> Any:
    """Per-trial resources (Tune calls this with the trial's config)."""
    from ray.tune.execution.placement_groups import resource_dict_to_pg_factory

    return resource_dict_to_pg_factory(Job.from_wire(config["job"]).resources())


def timeout_message(seconds: float) -> str:
    return f"timed out after {seconds:g} s (resources.cell_timeout_s)"


def _watchdog(job: Job, tracker: Tracker, workdir: WorkDir) -> threading.Timer | None:
    """End this trial's process once the cell's time is up: a hung plugin (in Python or in C) cannot be
    interrupted any other way. Its runs are recorded failed first, and a marker keeps a retry from
    starting it again; the process exit frees the trial's resources (and its Train workers)."""
    s = job.settings
    if not s.cell_timeout_s:
        return None

    def expire() -> None:
        message = timeout_message(s.cell_timeout_s)
        marker = workdir.timeout_marker(job.cell)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(s.driver)
        try:
            tracker.fail_driver_runs(s.experiment_id, s.driver, message, job.cell.key)
        finally:
            os._exit(3)

    timer = threading.Timer(s.cell_timeout_s, expire)
    timer.daemon = True
    timer.start()
    return timer


def timed_out_before(job: Job, workdir: WorkDir) -> bool:
    marker = workdir.timeout_marker(job.cell)
    return marker.exists() and marker.read_text() == job.settings.driver


def run_job(config: dict[str, Any]) -> None:
    """Tune function trainable; ``config = {"job": Job.to_wire()}``."""
    from ray import tune

    t0 = time.time()
    job = Job.from_wire(config["job"])
    s = job.settings
    workdir = WorkDir(Path(s.workdir))
    tracker = Tracker(s.tracking_uri, workdir)
    if timed_out_before(job, workdir):  # Tune retried a trial the watchdog ended: it stays failed
        tune.report(reports.cell_end(job.kind, timeout_message(s.cell_timeout_s or 0)))
        return
    timer = _watchdog(job, tracker, workdir)
    try:
        _run(job, tracker, workdir, t0)
    finally:
        if timer is not None:
            timer.cancel()


def _run(job: Job, tracker: Tracker, workdir: WorkDir, t0: float) -> None:
    from ray import tune

    s, cell = job.settings, job.cell
    tags = {**cell_tags(cell, s.segarena_version, s.git_sha), Tag.DRIVER: s.driver}
    if job.kind == "evaluate":
        try:
            weights = tracker.fetch(job.train_run_id, "model", workdir.model_dir(job.train_run_id))
            with tempfile.TemporaryDirectory() as tmp:
                result = guarded(evaluate_stored, job, weights, Path(tmp))
                tracker.log_evaluations(s.experiment_id, job.train_run_id, cell, tags, result.budgets,
                                        result.per_case, result.fingerprint, result.predictions)
        except Exception as exc:  # the stored training stays FINISHED; these budgets are retried next run
            tune.report(reports.cell_end(job.kind, error_line(exc)))
            return
        tune.report(reports.cell_end(job.kind, metrics=reports.harness({"cell_wall_s": time.time() - t0})))
        return
    tracker.mark_retried(s.experiment_id, cell.key, s.driver)
    run_id = tracker.start_training(s.experiment_id, cell, tags, headline_loss=_headline_loss(job))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if job.in_trial:
                result = guarded(train_and_evaluate, job, TrialSession(workdir.cell_checkpoint(cell)), Path(tmp))
                harness = _log(tracker, run_id, job, tags, result, t0)
            else:
                fit = _trainer(job, workdir).fit()
                with fit.checkpoint.as_directory() as d:
                    result = CellResult.load(d, weights=str(Path(d) / "model"))
                    harness = _log(tracker, run_id, job, tags, result, t0)
    except Exception as exc:  # recorded as the cell's failure; the other cells go on
        message = error_line(exc)
        tracker.fail_run(run_id, message)
        tune.report(reports.cell_end(job.kind, message))
        return
    workdir.clear_cell_checkpoint(cell)
    tune.report(reports.cell_end(job.kind, metrics=harness))


def _headline_loss(job: Job) -> str | None:
    """The plugin's ``headline_loss``, tagged on its training run for the report; None when the plugin does not
    load here (its training then records why)."""
    from segarena.platform.plugins.registry import discover

    try:
        return discover(job.settings.plugin_dirs, use_env=False).method(job.cell.method).headline_loss
    except Exception:
        return None


def _trainer(job: Job, workdir: WorkDir) -> Any:
    from ray import train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    s = job.settings
    return TorchTrainer(
        train_cell,
        train_loop_config={"job": job.to_wire()},
        scaling_config=train.ScalingConfig(num_workers=s.workers_per_trial, use_gpu=s.device == "cuda",
                                           resources_per_worker={"CPU": s.cpus_per_worker,
                                                                 **({"GPU": s.gpus_per_worker}
                                                                    if s.gpus_per_worker else {})}),
        run_config=train.RunConfig(
            name=f"cell-{workdir.cell_name(job.cell)}",  # stable: a rerun resumes this cell's last checkpoint
            storage_path=str(workdir.ray_storage),
            failure_config=train.FailureConfig(max_failures=s.failure_retries),
            checkpoint_config=train.CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()]))


def _log(tracker: Tracker, run_id: str, job: Job, tags: dict[str, str], result: CellResult,
         t0: float) -> dict[str, float]:
    """Everything the training handed back → its MLflow run (FINISHED only once all is logged)."""
    cell, s = job.cell, job.settings
    tm = result.timings
    t_log = time.time()
    # Where a cell's wall time goes: start of the worker (Ray Train's controller + worker group when
    # there are several), data and plugin setup, compute, hand-back to the trial, MLflow logging.
    harness = {"trainer_start_s": tm.started_at - t0, "worker_setup_s": tm.setup_s,
               "compute_s": tm.train_compute_s + tm.eval_s, "train_compute_s": tm.train_compute_s,
               "eval_s": tm.eval_s, "handback_s": t_log - tm.evaluated_at}
    files = {"config.json": {"cell": cell.as_dict(), "training_key": cell.key, "task": result.task.as_dict(),
                             "resources": {k: v for k, v in asdict(s).items() if "per_" in k},
                             "dataset_hash": result.dataset_hash},
             "environment.json": result.fingerprint, "split.json": result.split}
    tracker.finish_training(s.experiment_id, run_id, cell, tags, result, files, harness)
    wall = time.time() - t0
    harness.update({"logging_s": time.time() - t_log, "cell_wall_s": wall, "overhead_s": wall - harness["compute_s"]})
    # known only once everything is logged: tags, which may follow FINISHED (harness.json holds the rest)
    tracker.set_tags(run_id, {harness_tag(k): f"{harness[k]:.3f}" for k in ("logging_s", "cell_wall_s", "overhead_s")})
    return reports.harness(harness)
