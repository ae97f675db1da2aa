"""Per-case segmentation metrics under the metric contract (DESIGN.md, specs/metrics.md §1).

Dice and IoU without epsilon; both empty → 1, exactly one empty → 0. HD95 = MONAI's symmetric
Hausdorff at the 95th percentile (max of the two directed percentiles), in mm when spacing is
known, else px; both empty → 0, exactly one empty → the image diagonal. The empty rules are
applied before MONAI is called, so no value is ever NaN or dropped.

Public entry point for labs: ``per_case_metrics(pred, gt, spacing)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

COLUMNS = ("case_id", "class", "dice", "iou", "hd95", "hd95_unit", "gt_empty", "pred_empty", "gt_voxels", "pred_voxels")


def _as_bool(x: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x.detach().cpu()
    return t.bool()


def diagonal(shape: Sequence[int], spacing: Sequence[float] | None) -> float:
    """√Σ(n_i·s_i)²: the HD95 given to a case where exactly one mask is empty."""
    s = spacing if spacing is not None else [1.0] * len(shape)
    return math.sqrt(sum((n * si) ** 2 for n, si in zip(shape, s, strict=True)))


def hd95(pred: torch.Tensor, gt: torch.Tensor, spacing: Sequence[float] | None) -> float:
    """HD95 of two non-empty binary masks of one class (spatial dims only), via MONAI."""
    with warnings.catch_warnings():  # MONAI's own deprecation notice on an argument it passes itself
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(pred[None, None].float(), gt[None, None].float(), include_background=True,
                                           percentile=95, spacing=list(spacing) if spacing is not None else None)
    return float(value.reshape(-1)[0])


def overlap(pred: torch.Tensor, gt: torch.Tensor) -> tuple[float, float]:
    """Dice and IoU of two boolean masks, no epsilon: both empty → (1, 1), exactly one empty → (0, 0)."""
    inter, n_p, n_g = int((pred & gt).sum()), int(pred.sum()), int(gt.sum())
    if n_p + n_g == 0:
        return 1.0, 1.0
    return 2 * inter / (n_p + n_g), inter / (n_p + n_g - inter)


def per_case_metrics(pred: Any, gt: Any, spacing: Sequence[float] | None = None, case_id: str = "case",
                     class_names: Sequence[str] | None = None, channels_first: bool | None = None
                     ) -> list[dict[str, Any]]:
    """Rows (one per foreground class) for one case.

    pred, gt: numpy arrays or torch tensors of shape (C, *spatial) (C foreground channels), or
    (*spatial) for a single class; any dtype, non-zero = foreground. spacing: one value per
    spatial axis (mm) or None for pixels. ``channels_first=True`` says the first axis is always
    the class axis; left None, a 2D array, or one whose rank equals len(spacing), is one class.
    """
    p, g = _as_bool(pred), _as_bool(gt)
    if p.shape != g.shape:
        raise ValueError(f"{case_id}: prediction shape {tuple(p.shape)} != ground truth {tuple(g.shape)}")
    if not channels_first and (p.ndim == 2 or (spacing is not None and len(spacing) == p.ndim)):
        p, g = p[None], g[None]  # single class given without channel axis
    spatial = tuple(p.shape[1:])
    if spacing is not None and len(spacing) != len(spatial):
        raise ValueError(f"{case_id}: spacing {tuple(spacing)} does not match spatial shape {spatial}")
    unit = "mm" if spacing is not None else "px"
    rows = []
    for c in range(p.shape[0]):
        pc, gc = p[c], g[c]
        n_p, n_g = int(pc.sum()), int(gc.sum())
        dice, iou = overlap(pc, gc)
        if n_p == 0 and n_g == 0:
            hd = 0.0
        elif n_p == 0 or n_g == 0:
            hd = diagonal(spatial, spacing)
        else:
            hd = hd95(pc, gc, spacing)
        rows.append({"case_id": case_id, "class": class_names[c] if class_names else str(c + 1),
                     "dice": dice, "iou": iou, "hd95": hd, "hd95_unit": unit, "gt_empty": n_g == 0,
                     "pred_empty": n_p == 0, "gt_voxels": n_g, "pred_voxels": n_p})
    return rows


def aggregate(rows: Any) -> dict[str, float]:
    """Dataset scores from per-case rows: case score = mean over classes, dataset = mean over cases."""
    import pandas as pd

    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    per_case = df.groupby("case_id")[["dice", "iou", "hd95"]].mean()
    out = {k: float(per_case[k].mean()) for k in ("dice", "iou", "hd95")}
    out.update({f"{k}_median": float(per_case[k].median()) for k in ("dice", "hd95")})
    out["n_cases"] = float(len(per_case))
    return out
