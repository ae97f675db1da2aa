"""Dataset scores from per-case rows (docs/contracts.md, "Metrics"): the one rule the worker, the
leaderboard and the report share. Torch-free, so reading the store never loads torch."""

from __future__ import annotations

from typing import Any

import pandas as pd

from segarena.platform.scoring.catalog import names

# The diffusion-aware per-case columns summarised beside Dice/IoU/HD95 when present (scoring/catalog.py)
SUMMARY_METRICS = names(aggregated=True, headline=False)


def aggregate(rows: Any) -> dict[str, float]:
    """Case score = mean over classes, dataset score = mean over cases; for Dice/IoU/HD95 and for every
    diffusion-aware column the rows carry."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    columns = [*names(aggregated=True, headline=True), *(k for k in names(aggregated=True, headline=False)
                                                         if k in df.columns)]
    per_case = df.groupby("case_id")[columns].mean()
    out = {k: float(per_case[k].mean()) for k in columns}
    out.update({f"{k}_median": float(per_case[k].median()) for k in names(median=True)})
    out["n_cases"] = float(len(per_case))
    return out
