"""One search trial: train a cell's config on the train split inside the Tune trial's own process,
report ``val/dice`` every epoch, and on the last epoch score the final weights on the validation
split at every candidate budget (dice and latency) without retraining.

The test split is never opened here: ``CellData.cases("test")`` is not called (a spy test checks
what ``predict`` sees). Multi-worker trials are not supported yet (``check_search`` refuses them).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from segarena.platform.records import Budget, Evaluation, Job
from segarena.platform.run import reports
from segarena.platform.run.reports import (
    SEARCH_ERROR,
    SEARCH_FINAL,
    SEARCH_POINTS,
    SEARCH_STATUS,
    SEARCH_TRIAL_S,
    objective_values,
)
from segarena.platform.run.search.plan import best_point
from segarena.platform.run.train_loop import (
    ERROR_MARK,
    CellError,
    _augment,
    _device,
    _open,
    guarded,
    place,
    train_epoch,
)
from segarena.platform.scoring.evaluation import quick_dice
from segarena.platform.scoring.timing import time_method

# the report keys live in run/reports.py; these names stay importable from here for the search stage


def score_budgets(method: Any, cases: list, budgets: list[Budget], task: Any, device: torch.device, seed: int,
                  evaluation: Evaluation) -> list[dict[str, Any]]:
    """Validation Dice and batch-1 median latency of the same weights at each budget."""
    images = torch.stack([c.image for c in cases[: evaluation.timing_repeats]]).to(device)
    points = []
    for b in budgets:
        dice = quick_dice(method, cases, b, task, device, seed, evaluation.batch_size)
        timing = time_method(method, images, b, warmup=evaluation.timing_warmup,
                             repeats=evaluation.timing_repeats, throughput_batch=1, seed=seed)
        if not math.isfinite(dice):
            raise CellError(f"{ERROR_MARK} validation Dice at {b.name} is {dice}")
        points.append({"budget": b.as_dict(), "name": b.name, "dice": dice, "latency_ms": timing.latency_ms,
                       "nfe": b.nfe})
    return points


def search_trial_loop(job: Job, config: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> None:
    """Train ``job.cell`` with ``config`` over its hparams for ``job.cell.epochs`` epochs; ``job.budgets``
    are the candidate budgets (the cheapest draws the per-epoch curve). Raises CellError on NaN."""
    t0 = time.time()
    cell = replace(job.cell, hparams={**job.cell.hparams, **config})
    torch.set_num_threads(job.settings.threads)
    device = _device(job.settings.device)
    registry, data = _open(job)
    torch.manual_seed(cell.seed)
    method = registry.method(cell.method)(cell.hparams, data.task)
    place(method, device, 1)
    tensors, augment = data.train_tensors(), _augment(cell)
    val_cases = data.cases("val")[: cell.evaluation.val_cases]
    if not val_cases:
        raise CellError(f"{ERROR_MARK} dataset {cell.dataset!r} has no validation cases to select on")
    budgets = list(job.budgets)
    cheapest = min(budgets, key=lambda b: b.nfe)
    for epoch in range(cell.epochs):
        t_epoch = time.time()
        metrics: dict[str, Any] = {reports.EPOCH: epoch,
                                   **train_epoch(method, tensors, cell, epoch, 0, 1, device, augment)}
        dice = quick_dice(method, val_cases, cheapest, data.task, device, cell.seed, cell.evaluation.batch_size)
        if not math.isfinite(dice):
            raise CellError(f"{ERROR_MARK} {cell.method} produced val/dice={dice} at epoch {epoch}")
        metrics[reports.VAL_DICE] = dice
        final = epoch == cell.epochs - 1
        points = score_budgets(method, val_cases, budgets, data.task, device, cell.seed, cell.evaluation) \
            if final else None
        metrics |= objective_values(best_point(points) if points else None)
        metrics |= {reports.EPOCH_S: time.time() - t_epoch, SEARCH_TRIAL_S: time.time() - t0,
                    SEARCH_STATUS: reports.FINISHED if final else reports.RUNNING, SEARCH_FINAL: int(final),
                    SEARCH_POINTS: json.dumps(points or [])}  # Tune's loggers take no lists
        report(metrics)


def failure_report(exc: BaseException, t0: float) -> dict[str, Any]:
    """The one result a failed trial reports: NaN objectives, so the searcher records a failure."""
    from segarena.platform.run.trainable import error_line

    return {reports.VAL_DICE: math.nan, **objective_values(None), SEARCH_STATUS: reports.FAILED, SEARCH_FINAL: 0,
            SEARCH_ERROR: error_line(exc), SEARCH_TRIAL_S: time.time() - t0, SEARCH_POINTS: "[]"}


def search_trainable(config: dict[str, Any], job: dict[str, Any]) -> None:
    """Ray Tune function trainable (``tune.with_parameters(search_trainable, job=Job.to_wire())``):
    ``config`` is the searcher's hparams. A plugin error or NaN ends the trial with a failure report."""
    from ray import tune

    t0 = time.time()

    def report(metrics: dict[str, Any]) -> None:
        try:
            tune.report(metrics)
        except Exception as exc:  # Tune's own (a stopping trial): never recorded as the plugin's failure
            raise _TuneExit(str(exc)) from exc

    try:
        guarded(search_trial_loop, Job.from_wire(job), dict(config), report)
    except CellError as exc:
        tune.report(failure_report(exc, t0))


class _TuneExit(BaseException):
    """Raised through ``guarded`` (which wraps only ``Exception``) when Tune's report itself fails."""
