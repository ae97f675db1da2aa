"""What the report reads from a tracking store: the board, its per-case rows, training curves, cells and
the prediction overlays the evaluations stored.

Everything comes from the store alone (``leaderboard()``, ``per_case.parquet`` and ``predictions/overlays/``
of each eval run, the metric history of its training run), so a report can be rebuilt anywhere the store is
reachable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from segarena.platform.store.schema import EvaluationRun, ParamName, TrainingRun

if TYPE_CHECKING:
    from segarena.dashboards.prediction_grid import PredictionGrid

CURVE_COLUMNS = ["dataset", "method", "variant", "seed", "train_run", "key", "step", "value", "headline"]
HPARAMS = f"{ParamName.HPARAMS}."  # the training run's params of its hparams (flattened)
CELL_COLUMNS = ["dataset", "method", "variant", "profile", "seed", "train_run", "hparams"]


def _empty(cols: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=cols)


@dataclass
class ReportData:
    """The inputs of one report. Tests build it from plain DataFrames; ``load_report_data`` from a store."""

    suite: str
    board: pd.DataFrame                  # leaderboard() rows (statistics are recomputed from ``cases``)
    failed: pd.DataFrame                 # failed cells: suite, dataset, method, seed, error, run_id
    cases: pd.DataFrame                  # statistics.case_rows(): per-case rows with the row keys
    curves: pd.DataFrame = field(default_factory=lambda: _empty(CURVE_COLUMNS))
    cells: pd.DataFrame = field(default_factory=lambda: _empty(CELL_COLUMNS))
    source: str = ""                     # where it was read from (credentials stripped)
    predictions: dict[str, PredictionGrid] = field(default_factory=dict)  # dataset → stored overlays


def public_uri(uri: str) -> str:
    """A tracking URI without user:password, safe to print in a shared report."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _seed_rows(result: Any) -> pd.DataFrame:
    """``seed_scores`` returns the seed rows (or, in older versions, ``(rows, failed)``)."""
    return result[0] if isinstance(result, tuple) else result


def training_runs(tracker: Any, seeds: pd.DataFrame) -> pd.DataFrame:
    """The training run of each seed row (the eval run's parent tag), with its cell keys."""
    rows = []
    for r in seeds.drop_duplicates("run_id").itertuples(index=False):
        parent = EvaluationRun.from_mlflow(tracker.client.get_run(r.run_id)).parent
        if parent:
            rows.append({"dataset": r.dataset, "method": r.method, "variant": r.variant, "profile": r.profile,
                         "seed": str(r.seed), "train_run": parent})
    return pd.DataFrame(rows, columns=[*CELL_COLUMNS[:-1]]).drop_duplicates("train_run")


def load_curves_and_cells(tracker: Any, seeds: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-epoch ``val/*`` and ``train/*`` histories of every training run, and each cell's hparams."""
    curves, cells = [], []
    for cell in training_runs(tracker, seeds).itertuples(index=False):
        run = tracker.client.get_run(cell.train_run)
        hp = {k.removeprefix(HPARAMS): v for k, v in sorted(run.data.params.items()) if k.startswith(HPARAMS)}
        cells.append({**cell._asdict(), "hparams": ", ".join(f"{k}={v}" for k, v in hp.items())})
        headline = TrainingRun.from_mlflow(run).headline_loss  # the plugin's headline loss key, when tagged
        for key in sorted(k for k in run.data.metrics if k.startswith(("train/", "val/"))):
            for m in tracker.client.get_metric_history(cell.train_run, key):
                curves.append({**{c: getattr(cell, c) for c in CURVE_COLUMNS[:5]}, "key": key, "step": int(m.step),
                               "value": float(m.value), "headline": headline})
    return pd.DataFrame(curves, columns=CURVE_COLUMNS), pd.DataFrame(cells, columns=CELL_COLUMNS)


def load_report_data(tracker: Any, suite: str) -> ReportData:
    """Read one suite's report inputs from the store (raises SegarenaError for an unknown suite)."""
    from segarena.dashboards.prediction_grid import load_prediction_grids
    from segarena.platform.board.leaderboard import leaderboard, seed_scores
    from segarena.platform.board.statistics import case_rows

    board, failed = leaderboard(tracker, suite)
    seeds = _seed_rows(seed_scores(tracker, suite))
    cases = case_rows(tracker, seeds)
    curves, cells = load_curves_and_cells(tracker, seeds)
    return ReportData(suite=suite, board=board, failed=failed, cases=cases, curves=curves, cells=cells,
                      source=public_uri(str(getattr(tracker, "uri", ""))),
                      predictions=load_prediction_grids(tracker, board, seeds, cases))
