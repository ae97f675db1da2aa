"""Leaderboards computed from the tracking store alone, recomputed from per-case data (nnU-Net style).

Per (suite, dataset): methods × budgets ranked by seed-averaged Dice, with mean ± std over seeds
of dice, iou, hd95 (recomputed from ``per_case.parquet``), latency_ms and nfe (logged), and the
number of seeds. Failed cells are listed, never silently dropped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from segarena.platform.errors import SegarenaError
from segarena.platform.scoring.aggregate import SUMMARY_METRICS, aggregate
from segarena.platform.store.tracking import KIND_EVAL, KIND_TRAIN, PREFIX, STATUS_FINISHED, Tracker

SCORES = ("dice", "iou", "hd95")
COSTS = ("latency_ms", "nfe")
EXTRAS = SUMMARY_METRICS  # NSD, GED, diversity, entropy, calibration, stability (per-case std of Dice over repeats)
KEYS = ["suite", "dataset", "method", "variant", "profile", "budget"]


def _tag(run, name: str) -> str | None:
    return run.data.tags.get(PREFIX + name)


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
    train_runs = tracker.runs(ids, KIND_TRAIN)
    tuned = tracker.tuned_cells(ids)  # cells a finished search selected: "tuned (N trials, S s)"
    finished_parents = {r.info.run_id for r in train_runs
                        if r.info.status == "FINISHED" and _tag(r, "status") == STATUS_FINISHED}
    finished_cells = {_tag(r, "cell") for r in train_runs if r.info.run_id in finished_parents}
    rows, seen = [], set()
    evals = sorted(tracker.runs(ids, KIND_EVAL), key=lambda r: -r.info.start_time)
    for run in evals:
        if _tag(run, "parent") not in finished_parents or run.info.status != "FINISHED":
            continue
        if (_tag(run, "cell"), _tag(run, "budget")) in seen:
            continue  # an older run of the same cell and budget
        seen.add((_tag(run, "cell"), _tag(run, "budget")))
        per_case = tracker.load_table(run.info.run_id)
        scores = aggregate(per_case)  # the same case-then-dataset means as the logged metrics
        row = {k: _tag(run, k) or "" for k in KEYS} | {"seed": _tag(run, "seed")}
        row.update({k: scores[k] for k in SCORES})
        row.update({k: scores.get(k, np.nan) for k in EXTRAS})  # diffusion-aware means, where measured
        row.update({k: run.data.metrics.get(k, np.nan) for k in COSTS})
        row["hd95_unit"] = per_case["hd95_unit"].iloc[0] if len(per_case) else ""
        row["n_cases"] = int(scores["n_cases"])
        row["run_id"] = run.info.run_id
        row["tuning"] = tuned.get(_tag(run, "cell") or "", "default")
        rows.append(row)
    failures = []
    for run in sorted(train_runs, key=lambda r: -r.info.start_time):
        if run.info.status == "FAILED" and _tag(run, "cell") not in finished_cells:
            failures.append({"suite": _tag(run, "suite"), "dataset": _tag(run, "dataset"),
                             "method": _tag(run, "method"), "seed": _tag(run, "seed"),
                             "error": _tag(run, "error") or "", "run_id": run.info.run_id, "cell": _tag(run, "cell")})
    failed = pd.DataFrame(failures, columns=["suite", "dataset", "method", "seed", "error", "run_id", "cell"])
    failed = failed.drop_duplicates(["cell"]).drop(columns=["cell"])
    return pd.DataFrame(rows, columns=[*KEYS, "seed", *SCORES, *EXTRAS, *COSTS, "hd95_unit", "n_cases", "run_id",
                                       "tuning"]), failed


def leaderboard(tracker: Tracker, suite: str | None = None, statistics: bool = True
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ranked board (mean ± std over seeds, with confidence intervals, rank groups and rank
    stability from the per-case rows; platform/board/statistics.py) and the failed cells."""
    seeds, failed = seed_scores(tracker, suite)
    if seeds.empty:
        board = pd.DataFrame(columns=["suite", "dataset", "rank", "method", "profile", "budget"])
        return board, failed
    agg = {f"{k}_{s}": (k, s) for k in (*SCORES, *EXTRAS, *COSTS) for s in ("mean", "std")}
    board = seeds.groupby(KEYS, dropna=False).agg(**agg, n_seeds=("seed", "nunique"), n_cases=("n_cases", "max"),
                                                  hd95_unit=("hd95_unit", "first"),
                                                  tuning=("tuning", "first")).reset_index()
    board = board.fillna({f"{k}_std": 0.0 for k in (*SCORES, *COSTS)})
    board = board.sort_values(["suite", "dataset", "dice_mean", "hd95_mean"], ascending=[True, True, False, True])
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
