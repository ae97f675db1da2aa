"""Per-cell harness overhead against the cell's compute, measured on a real suite run.

Runs SUITE (default: the shipped `default`) in a fresh work dir on a local Ray, then reads the
`harness.json` each training run stored: worker start (in the trial's own process for one-worker
cells; Ray Train's controller + worker group for several), data and plugin setup, compute
(training + evaluation), hand-back to the trial, MLflow logging. Harness efficiency =
Σ compute / (driver wall × concurrent slots). Writes benchmarks/perf/results/harness_overhead.{json,md}.

    .venv/bin/python benchmarks/perf/harness_overhead.py [SUITE] [WORKDIR]

WORKDIR (default: a temporary folder, deleted) must not hold the suite yet: every cell is trained.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"
PARTS = ["trainer_start_s", "worker_setup_s", "compute_s", "handback_s", "logging_s", "overhead_s", "cell_wall_s"]


def _noop_loop(config: dict) -> None:
    from ray import train

    train.report({"ok": 1})


def _noop_trial(config: dict) -> None:
    from ray import train, tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    t0 = time.time()
    TorchTrainer(_noop_loop, scaling_config=train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                 run_config=train.RunConfig(name=f"noop-{config['i']}", storage_path=config["storage"],
                                            callbacks=[TuneReportCallback()])).fit()
    tune.report({"wall_s": time.time() - t0})


def ray_train_floor(storage: str, n: int = 4) -> list[float]:
    """Wall time of a TorchTrainer whose loop does nothing, one at a time: Ray's own floor per cell."""
    from ray import tune

    from segarena.platform.run.cluster import connect

    handle = connect(None)  # the same private local Ray a suite run gets
    try:
        grid = tune.Tuner(tune.with_resources(_noop_trial, {"cpu": 0, "memory": 64 * 2**20}),
                          param_space={"i": tune.grid_search(list(range(n))), "storage": storage},
                          tune_config=tune.TuneConfig(max_concurrent_trials=1),
                          run_config=tune.RunConfig(storage_path=storage, verbose=0)).fit()
        return sorted(float(v) for v in grid.get_dataframe()["wall_s"])
    finally:
        handle.shutdown()


def main(suite: str = "default", workdir: str | None = None) -> dict:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from segarena.platform.run.driver import run_suite
    from segarena.platform.run.fingerprint import fingerprint
    from segarena.platform.store.schema import HARNESS_TAG_PREFIX, Tag
    from segarena.platform.store.tracking import KIND_TRAIN, Tracker
    from segarena.platform.store.workdir import WorkDir

    with tempfile.TemporaryDirectory() as scratch:
        tmp = workdir or scratch
        load_before = os.getloadavg()
        t0 = time.time()
        lines_seen: list[str] = []
        summary = run_suite(suite, tmp, echo=lines_seen.append)
        driver_s = time.time() - t0
        wd = WorkDir.at(tmp)
        tracker = Tracker(wd.tracking_uri, wd)
        rows = []
        for run in tracker.runs([summary.experiment_id], KIND_TRAIN):
            h = tracker.load_json(run.info.run_id, "harness.json")
            h |= {k.removeprefix(HARNESS_TAG_PREFIX): float(v) for k, v in run.data.tags.items()
                  if k.startswith(HARNESS_TAG_PREFIX)}  # logging_s, cell_wall_s, overhead_s
            rows.append({"cell": f"{run.data.tags[Tag.METHOD]} × {run.data.tags[Tag.DATASET]}",
                         **{p: round(h.get(p, float("nan")), 2) for p in PARTS}})
        slots = next((int(ln.split(" cell(s) at a time")[0].rsplit("·", 1)[1]) for ln in lines_seen
                      if " cell(s) at a time" in ln), 1)
        if summary.skipped:
            raise SystemExit(f"{tmp} already holds {summary.skipped} finished cell(s): give an empty work dir")
        floor = ray_train_floor(str(Path(scratch) / "floor"))
    rows.sort(key=lambda r: r["cell"])
    overhead = sum(r["overhead_s"] for r in rows)
    compute = sum(r["compute_s"] for r in rows)
    result = {"suite": suite, "cells": rows, "ray_start_s": round(summary.ray_start_s, 2), "slots": slots,
              "harness_efficiency": round(compute / (driver_s * slots), 3),
              "median_overhead_s": round(statistics.median(r["overhead_s"] for r in rows), 2),
              "driver_wall_s": round(driver_s, 1), "sum_overhead_s": round(overhead, 1),
              "sum_compute_s": round(compute, 1), "overhead_to_compute": round(overhead / max(compute, 1e-9), 2),
              "ray_train_noop_trainer_s": [round(f, 2) for f in floor],
              "machine": {k: fingerprint()[k] for k in ("cpu", "cpu_count", "device_name")},
              "load_average_before": load_before, "load_average_at_end": os.getloadavg()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "harness_overhead.json").write_text(json.dumps(result, indent=1))
    lines = [f"# Harness overhead per cell — suite `{suite}`", "",
             f"Ray start {result['ray_start_s']} s · driver wall {result['driver_wall_s']} s · "
             f"Σ overhead {result['sum_overhead_s']} s vs Σ compute {result['sum_compute_s']} s "
             f"(ratio {result['overhead_to_compute']}) · harness efficiency Σ compute / (wall × {slots} slots) "
             f"{result['harness_efficiency']} · median per-cell overhead {result['median_overhead_s']} s · "
             f"load average at end {result['load_average_at_end'][0]:.1f}",
             "", f"Ray Train's own floor: a TorchTrainer (1 worker) whose loop does nothing takes "
             f"{statistics.median(floor):.1f} s wall (median of {len(floor)}, one at a time).",
             "", "| cell | " + " | ".join(PARTS) + " |", "|---|" + "---|" * len(PARTS)]
    lines += [f"| {r['cell']} | " + " | ".join(str(r[p]) for p in PARTS) + " |" for r in rows]
    (OUT / "harness_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main(*sys.argv[1:3])
