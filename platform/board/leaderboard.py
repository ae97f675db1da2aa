"""Leaderboards computed from the tracking store alone, recomputed from per-case data (nnU-Net style).

Per (suite, dataset): methods × budgets ranked by seed-averaged Dice, with mean ± std over seeds
of dice, iou, hd95 (recomputed from ``per_case.parquet``), latency_ms and nfe (logged), and the
number of seeds. Failed cells are listed, never silently dropped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from segarena.platform.errors import SegarenaError
from segarena.platform.scoring.aggregate import aggregate
from segarena.platform.scoring.catalog import METRICS, RANK_BY, names
from segarena.platform.store.schema import KIND_EVAL, KIND_TRAIN, EvaluationRun, TrainingRun
from segarena.platform.store.tracking import Tracker

KEYS = ["suite", "dataset", "method", "variant", "profile", "budget"]


def _metric_columns() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The catalogue's board columns: recomputed from the per-case rows (Dice, IoU, HD95), the diffusion-aware
    means where measured (NSD, GED, diversity, entropy, calibration, stability), and logged by the eval run
    (latency_ms, nfe)."""
    return names(aggregated=True, headline=True), names(aggregated=True, headline=False), names(aggregated=False)


def seed_scores(tracker: Tracker, suite: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per (suite, dataset, method variant, budget, seed) with scores recomputed from
    per-case rows (the newest run of each cell), and one row per failed cell not superseded by a
    finished run. A variant is a cell without its seed: other hparams or epochs make another row."""
    exps = tracker.experiments()
    if suite is not None:
        exps = [e for e in exps if e.name == suite]
        if not exps:
            known = ", ".join(sorted(e.name for e in tracker.experiments())) or "none"
            raise SegarenaError(f"no suite {suite!r} in the tracking store {tracker.uri} (suites: {known})")
    ids = [e.experiment_id for e in exps]
    train_runs = [TrainingRun.from_mlflow(r) for r in tracker.runs(ids, KIND_TRAIN)]
    tuned = tracker.tuned_cells(ids)  # cells a finished search selected: "tuned (N trials, S s)"
    finished_parents = {r.run_id for r in train_runs if r.finished}
    finished_cells = {r.cell for r in train_runs if r.run_id in finished_parents}
    rows, seen = [], set()
    summary, extras, costs = _metric_columns()
    evals = sorted(tracker.runs(ids, KIND_EVAL), key=lambda r: -r.info.start_time)
    for run in evals:
        ev = EvaluationRun.from_mlflow(run)
        if ev.parent not in finished_parents or ev.state != "FINISHED":
            continue
        if (ev.cell, ev.budget) in seen:
            continue  # an older run of the same cell and budget
        seen.add((ev.cell, ev.budget))
        per_case = tracker.load_table(ev.run_id)
        scores = aggregate(per_case)  # the same case-then-dataset means as the logged metrics
        row = {k: getattr(ev, k) for k in KEYS} | {"seed": ev.seed}
        row.update({k: scores[k] for k in summary})
        row.update({k: scores.get(k, np.nan) for k in extras})  # diffusion-aware means, where measured
        row.update({k: run.data.metrics.get(k, np.nan) for k in costs})
        row["hd95_unit"] = per_case["hd95_unit"].iloc[0] if len(per_case) else ""
        row["n_cases"] = int(scores["n_cases"])
        row["run_id"] = ev.run_id
        row["tuning"] = tuned.get(ev.cell, "default")
        rows.append(row)
    failures = []
    for r in sorted(train_runs, key=lambda r: -r.start_time):
        if r.state == "FAILED" and r.cell not in finished_cells:
            failures.append({"suite": r.suite, "dataset": r.dataset, "method": r.method, "seed": r.seed,
                             "error": r.error, "run_id": r.run_id, "cell": r.cell})
    failed = pd.DataFrame(failures, columns=["suite", "dataset", "method", "seed", "error", "run_id", "cell"])
    failed = failed.drop_duplicates(["cell"]).drop(columns=["cell"])
    return pd.DataFrame(rows, columns=[*KEYS, "seed", *summary, *extras, *costs, "hd95_unit", "n_cases", "run_id",
                                       "tuning"]), failed


def leaderboard(tracker: Tracker, suite: str | None = None, statistics: bool = True
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ranked board (mean ± std over seeds, with confidence intervals, rank groups and rank
    stability from the per-case rows; platform/board/statistics.py) and the failed cells."""
    seeds, failed = seed_scores(tracker, suite)
    if seeds.empty:
        board = pd.DataFrame(columns=["suite", "dataset", "rank", "method", "profile", "budget"])
        return board, failed
    summary, extras, costs = _metric_columns()
    agg = {f"{k}_{s}": (k, s) for k in (*summary, *extras, *costs) for s in ("mean", "std")}
    board = seeds.groupby(KEYS, dropna=False).agg(**agg, n_seeds=("seed", "nunique"), n_cases=("n_cases", "max"),
                                                  hd95_unit=("hd95_unit", "first"),
                                                  tuning=("tuning", "first")).reset_index()
    board = board.fillna({f"{k}_std": 0.0 for k in (*summary, *costs)})
    board = board.sort_values(["suite", "dataset", *(f"{k}_mean" for k in RANK_BY)],
                              ascending=[True, True, *(bool(METRICS[k].lower_is_better) for k in RANK_BY)])
    board.insert(2, "rank", board.groupby(["suite", "dataset"]).cumcount() + 1)
    if not failed.empty:
        counts = failed.groupby(["suite", "dataset", "method"]).size().rename("failed_seeds").reset_index()
        board = board.merge(counts, on=["suite", "dataset", "method"], how="left")
        board["failed_seeds"] = board["failed_seeds"].fillna(0).astype(int)
    else:
        board["failed_seeds"] = 0
    board = board.reset_index(drop=True)
    if statistics:
        from segarena.platform.board.statistics import case_rows, with_statistics

        board = with_statistics(board, case_rows(tracker, seeds))
    return board, failed


def display_frame(board: pd.DataFrame) -> pd.DataFrame:
    """The board as display strings (see ``board_format``, which holds the presentation)."""
    from segarena.platform.board import formats as board_format

    return board_format.display_frame(board)


def render(board: pd.DataFrame, failed: pd.DataFrame, fmt: str = "table", output: str | None = None) -> str:
    """The board as text (table/markdown/latex/csv/json) or written to ``output`` (parquet needs it)."""
    from segarena.platform.board import formats as board_format

    return board_format.render(board, failed, fmt, output)
