"""The Ray Tune trainable for one cell: opens the cell's MLflow run, drives a Ray Train
TorchTrainer (Train V2 inside Tune, specs/stack.md §3), then logs results or the failure."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from segarena.platform.suite import Cell
from segarena.platform.tracking import Tracker, cell_tags
from segarena.platform.worker import ERROR_MARK, PER_CASE_FILE, RESULTS_FILE, train_cell


def error_line(exc: BaseException) -> str:
    """The plugin's own error from a Ray TrainingFailedError, as one line."""
    text = str(exc)
    if ERROR_MARK in text:
        return text.split(ERROR_MARK, 1)[1].strip().splitlines()[0]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:1000]


def run_cell(config: dict[str, Any]) -> None:
    """Tune function trainable; ``config = {"cell": Cell dict, "settings": runner settings}``."""
    from ray import train, tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    t0 = time.time()
    cell, s = Cell.from_dict(config["cell"]), config["settings"]
    tracker = Tracker(s["tracking_uri"], Path(s["artifact_root"]))
    tags = cell_tags(cell, s["segarena_version"], s["git_sha"])
    run_id = tracker.start_cell(s["experiment_id"], cell, tags)
    res = s["resources"]
    trainer = TorchTrainer(
        train_cell,
        train_loop_config={"cell": cell.as_dict(), "plugin_dirs": s["plugin_dirs"], "cache_dir": s["cache_dir"],
                           "threads": max(1, int(res["cpus_per_worker"])), "device": s["device"]},
        scaling_config=train.ScalingConfig(num_workers=res["workers_per_trial"], use_gpu=s["device"] == "cuda",
                                           resources_per_worker={"CPU": res["cpus_per_worker"],
                                                                 **({"GPU": res["gpus_per_worker"]}
                                                                    if res["gpus_per_worker"] else {})}),
        run_config=train.RunConfig(
            name=f"cell-{cell.key}",  # stable: a rerun resumes this cell's last checkpoint
            storage_path=s["storage_path"],
            failure_config=train.FailureConfig(max_failures=s["failure_retries"]),
            checkpoint_config=train.CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()]))
    try:
        result = trainer.fit()
        timing = _log_results(tracker, run_id, cell, tags, s, result, t0)
    except Exception as exc:  # recorded as the cell's failure; the other cells go on
        message = error_line(exc)
        tracker.fail_cell(run_id, message)
        tune.report({"cell_status": "failed", "error": message})
        return
    tune.report({"cell_status": "finished", **timing})


def _log_results(tracker: Tracker, run_id: str, cell: Cell, tags: dict[str, str], s: dict[str, Any],
                 result: Any, t0: float) -> dict[str, float]:
    """Everything the worker handed back → the cell's MLflow run (FINISHED only once all is logged)."""
    with result.checkpoint.as_directory() as d:
        out = json.loads((Path(d) / RESULTS_FILE).read_text())
        per_case = pd.read_parquet(Path(d) / PER_CASE_FILE)
    t_fit = time.time()
    tracker.log_history(run_id, pd.DataFrame(out["history"]))
    tm = out["timings"]
    compute = tm["train_compute_s"] + tm["eval_s"]
    # Where a cell's wall time goes: start of Ray Train's controller + worker group, data and plugin
    # setup in the worker, compute, hand-back to the trial, and MLflow logging (estimated before it ends).
    extra = {"harness/trainer_start_s": tm["worker_started_at"] - t0, "harness/worker_setup_s": tm["worker_setup_s"],
             "harness/compute_s": compute, "harness/handback_s": t_fit - tm["evaluated_at"],
             "parameters": float(out["parameters"])}
    files = {"config.json": {"cell": cell.as_dict(), "cell_key": cell.key, "task": out["task"],
                             "resources": s["resources"], "dataset_hash": out["dataset_hash"]},
             "environment.json": out["fingerprint"], "split.json": out["split"]}
    tags = {**tags, "segarena.dataset_hash": out["dataset_hash"]}
    tracker.set_tags(run_id, {"segarena.dataset_hash": out["dataset_hash"]})
    t_log = time.time()
    tracker.finish_cell(s["experiment_id"], run_id, cell, tags, out["results"], per_case, files, extra)
    wall = time.time() - t0
    timing = {**extra, "harness/logging_s": time.time() - t_log, "harness/cell_wall_s": wall,
              "harness/overhead_s": wall - compute}
    tracker.log_metrics(run_id, {k: v for k, v in timing.items() if k not in extra})  # after: it measures logging
    return timing
