"""Report inputs built from plain DataFrames: two datasets, four rows (one with a hostile plugin name), two seeds,
and a prediction grid on the first dataset (flat-colour PNGs, one hostile case id, one row without predictions)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from segarena.dashboards.data import ReportData
from segarena.dashboards.prediction_grid import Overlay, PredictionGrid, PredictionRow

XSS = "<img src=x onerror=alert(1)>"
XSS_ERROR = "ValueError: <script>alert(2)</script>"
XSS_CASE = '"><script>alert(3)</script>'
NOT_STORED = "not stored (evaluation.save_predictions: none)"
KEYS = ["suite", "dataset", "method", "variant", "profile", "budget"]
ROWS = (("unet", "direct-e1", 0.86, 6.0, 1.0), ("cdal", "posterior2-e1", 0.85, 30.0, 2.0),
        ("cdal", "posterior2-e3", 0.855, 60.0, 6.0), (XSS, "direct-e1", 0.70, 15.0, 1.0))
DATASETS = ("synthetic", "mni152-gm")
N_CASES, SEEDS = 20, ("0", "1")


def report_data(suite: str = "demo", seed: int = 0) -> ReportData:
    rng = np.random.default_rng(seed)
    rows, curves, cells = [], [], []
    for d in DATASETS:
        base = rng.uniform(0.5, 1.0, N_CASES)
        for method, budget, mu, _, _ in ROWS:
            variant = "v-" + method[:3]
            for s in SEEDS:
                dice = np.clip(base * mu + rng.normal(0, 0.03, N_CASES), 0, 1)
                for c in range(N_CASES):
                    rows.append({"suite": suite, "dataset": d, "method": method, "variant": variant,
                                 "profile": "tiny", "budget": budget, "seed": s,
                                 "run_id": f"e-{d}-{method}-{budget}-{s}", "case_id": f"case{c:02d}", "class": "1",
                                 "dice": dice[c], "iou": dice[c] / (2 - dice[c]), "hd95": 12 * (1 - dice[c]) + 0.5,
                                 "hd95_unit": "mm" if d != "synthetic" else "px"})
                train = f"t-{d}-{method}-{s}"
                if budget != "posterior2-e3":  # one training per cell, shared by its budgets
                    cells.append({"dataset": d, "method": method, "variant": variant, "profile": "tiny", "seed": s,
                                  "train_run": train, "hparams": "lr=0.001, note=<b>bold</b>"})
                    for e in range(4):
                        for key, v in (("val/dice", 0.4 + 0.1 * e), ("train/loss", 1 / (e + 1)), ("train/steps", 10)):
                            curves.append({"dataset": d, "method": method, "variant": variant, "seed": s,
                                           "train_run": train, "key": key, "step": e, "value": v})
    cases = pd.DataFrame(rows)
    board = board_of(cases)
    return ReportData(suite=suite, board=board, cases=cases, curves=pd.DataFrame(curves),
                      cells=pd.DataFrame(cells), source="sqlite:///tmp/demo.db", predictions=prediction_grids(board),
                      failed=pd.DataFrame([{"suite": suite, "dataset": DATASETS[1], "method": "sdseg", "seed": "2",
                                            "error": XSS_ERROR, "run_id": "f1"}]))


def board_of(cases: pd.DataFrame) -> pd.DataFrame:
    """The board as leaderboard() builds it: per-seed means over cases, then mean ± std over seeds."""
    per_case = cases.groupby([*KEYS, "seed", "case_id"])[["dice", "iou", "hd95"]].mean()
    per_seed = per_case.groupby([*KEYS, "seed"]).mean().reset_index()
    agg = {f"{k}_{s}": (k, s) for k in ("dice", "iou", "hd95") for s in ("mean", "std")}
    board = per_seed.groupby(KEYS).agg(**agg, n_seeds=("seed", "nunique")).reset_index()
    costs = {m: (lat, nfe) for m, _, _, lat, nfe in ROWS}
    board["latency_ms_mean"] = [costs[m][0] for m in board["method"]]
    board["latency_ms_std"] = 0.2
    board["nfe_mean"] = [costs[m][1] * (3 if b.endswith("e3") else 1) for m, b in zip(board["method"],
                                                                                       board["budget"], strict=True)]
    board["nfe_std"] = 0.0
    board["n_cases"] = N_CASES
    board["hd95_unit"] = ["px" if d == "synthetic" else "mm" for d in board["dataset"]]
    board["failed_seeds"] = [int((d, m) == (DATASETS[1], "sdseg"))
                             for d, m in zip(board["dataset"], board["method"], strict=True)]
    board = board.sort_values(["suite", "dataset", "dice_mean"], ascending=[True, True, False])
    board.insert(2, "rank", board.groupby(["suite", "dataset"]).cumcount() + 1)
    return board.reset_index(drop=True)


def overlay_png(shade: int, width: int = 120, height: int = 72) -> bytes:
    """A flat-colour stand-in for a stored overlay (grey image, green and red contours): ≤ 64 colours, so
    the report's palette recompression keeps every pixel."""
    from PIL import Image

    a = np.full((height, width, 3), shade, np.uint8)
    a[10:30, 10:40] = (0, 255, 0)
    a[40:60, 20:70] = (255, 0, 0)
    a[:, width // 2 + 2:] = 255 - shade
    out = io.BytesIO()
    Image.fromarray(a).save(out, format="PNG")
    return out.getvalue()


def prediction_grids(board: pd.DataFrame) -> dict[str, PredictionGrid]:
    """The first dataset's rows: three overlays each (one hostile case id; the second row lacks its median
    case), the hostile plugin's row stored none. The second dataset has no grid."""
    grid = PredictionGrid(DATASETS[0], rule="one per leaderboard row (4)")
    part = board[board["dataset"] == DATASETS[0]].sort_values("rank")
    for i, r in enumerate(part.itertuples(index=False)):
        if r.method == XSS:
            grid.rows.append(PredictionRow(r.method, r.variant, r.budget, "0", f"e-{i}", (), NOT_STORED))
            continue
        kinds = ("best", "worst") if i == 1 else ("best", "median", "worst")
        overlays = tuple(Overlay(k, 1, XSS_CASE if (i, k) == (0, "best") else f"case{j:02d}", 0.9 - 0.2 * j,
                                 overlay_png(40 * (i + 1) + 10 * j)) for j, k in enumerate(kinds))
        grid.rows.append(PredictionRow(r.method, r.variant, r.budget, "0", f"e-{i}", overlays))
    return {DATASETS[0]: grid}


def grid_images(data: ReportData) -> int:
    return sum(len(r.overlays) for g in data.predictions.values() for r in g.rows)
