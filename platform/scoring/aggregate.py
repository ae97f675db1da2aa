"""Dataset scores from per-case rows (docs/contracts.md, "Metrics"): the one rule the worker, the
leaderboard and the report share. Torch-free, so reading the store never loads torch."""

from __future__ import annotations

from typing import Any

import pandas as pd

# The diffusion-aware per-case columns whose means are reported beside Dice/IoU/HD95 when present
SUMMARY_METRICS = ("nsd", "ged", "diversity", "entropy", "ece", "brier", "nll", "dice_repeat_std")


def aggregate(rows: Any) -> dict[str, float]:
    """Case score = mean over classes, dataset score = mean over cases; for Dice/IoU/HD95 and for every
    diffusion-aware column the rows carry."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    extra = [k for k in SUMMARY_METRICS if k in df.columns]
    per_case = df.groupby("case_id")[["dice", "iou", "hd95", *extra]].mean()
    out = {k: float(per_case[k].mean()) for k in ("dice", "iou", "hd95", *extra)}
    out.update({f"{k}_median": float(per_case[k].median()) for k in ("dice", "hd95")})
    out["n_cases"] = float(len(per_case))
    return out
