"""The keys Tune trials report, for both trainables and everything that reads their results.

A cell trial (run/trainable.py, run/train_loop.py) reports one result per epoch (``PHASE`` =
``train``: ``EPOCH``, ``EPOCH_S``, ``train/*`` losses and ``TRAIN_STEPS``, ``VAL_DICE`` when
validated) and one last result with ``CELL_STATUS`` (finished | failed), ``ACTION`` (train |
evaluate), ``ERROR`` when failed and ``harness/*`` times. A search trial (run/search/trainable.py)
reports every epoch ``VAL_DICE``, the ``objective/*`` values (NaN before the last epoch) and the
``search/*`` keys. run/progress.py and the search stage read them by these names only.
"""

from __future__ import annotations

import math
from typing import Any

# every trial ------------------------------------------------------------------------------------
EPOCH = "epoch"  # 0-based index of the epoch just finished
EPOCH_S = "epoch_s"
VAL_DICE = "val/dice"
TRAIN = "train/"  # prefix of the plugin's training logs (averaged over the epoch's steps)
TRAIN_STEPS = "train/steps"  # steps run this epoch
TRAIN_STAGE = "train/stage"  # a multi-stage method's stage (a mixed epoch averages, e.g. 1.4)

# cell trials ------------------------------------------------------------------------------------
CELL_STATUS = "cell_status"
FINISHED, FAILED, RUNNING = "finished", "failed", "running"
ACTION = "action"  # the job's kind: train | evaluate
ERROR = "error"
PHASE = "phase"
PHASE_TRAIN, PHASE_EVALUATED = "train", "evaluated"  # an epoch; the multi-worker hand-back after evaluation
HEADLINE = "headline"  # the plugin's headline_loss, shown by the progress display
HARNESS = "harness/"  # prefix of where a cell's wall time went

# search trials ----------------------------------------------------------------------------------
SEARCH_STATUS = "search/status"  # running | finished | failed
SEARCH_FINAL = "search/final"  # 1 on the last epoch's report
SEARCH_TRIAL_S = "search/trial_s"
SEARCH_ERROR = "search/error"
SEARCH_POINTS = "search/points"  # JSON list of {budget, name, dice, latency_ms, nfe} on validation (last epoch)
OBJECTIVE = {"val/dice": "objective/dice", "latency_ms": "objective/latency_ms", "nfe": "objective/nfe"}


def cell_end(action: str, error: str | None = None, metrics: dict[str, float] | None = None) -> dict[str, Any]:
    """A cell trial's last result: finished (with ``metrics``, e.g. ``harness/*``), or failed with its
    one-line error."""
    if error is not None:
        return {CELL_STATUS: FAILED, ACTION: action, ERROR: error}
    return {CELL_STATUS: FINISHED, ACTION: action, **(metrics or {})}


def harness(times: dict[str, float]) -> dict[str, float]:
    """``harness/*`` keys of a cell's wall-time breakdown."""
    return {f"{HARNESS}{k}": v for k, v in times.items()}


def objective_values(point: dict[str, Any] | None) -> dict[str, float]:
    """The objective keys of one scored search point (NaN before the final epoch: Tune wants every key)."""
    if point is None:
        return dict.fromkeys(OBJECTIVE.values(), math.nan)
    return {OBJECTIVE["val/dice"]: point["dice"], OBJECTIVE["latency_ms"]: point["latency_ms"],
            OBJECTIVE["nfe"]: float(point["nfe"])}
