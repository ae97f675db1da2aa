"""Saved predictions of one cell × budget, so masks can be looked at and re-scored after the run.

``predictions.npz`` (compressed): every test case's hard mask (bool) and fused foreground probabilities
(float16, enough to redraw and re-bin them) with case ids and volume/slice indices to re-assemble volumes.
``overlays/*.png``: the best, median and worst three cases by Dice, each panel = image with the truth
(green) and predicted (red) contours, beside the member-disagreement map 4·v·(1 − v) (v = share of
members voting foreground: 0 where all agree, 1 where they split evenly; all zero for one member).
The evaluation writes them into a directory the caller logs as artifacts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segarena.platform.scoring.mask_files import write_masks

__all__ = ["CasePrediction", "load_npz", "overlay_panel", "pick_cases", "save_npz", "save_predictions", "write_masks"]

PREDICTIONS_FILE = "predictions.npz"
OVERLAY_DIR = "overlays"
NPZ_MAX_CASES = 500  # "overlays" mode writes the npz only below this many test cases
MODES = ("all", "overlays", "none")
_PANEL_MIN = 256  # px: small images are enlarged (nearest) to at least this size


@dataclass(frozen=True)
class CasePrediction:
    """One test image's prediction, on CPU: mask/truth (C, H, W) bool, probs (C, H, W), vote (C, H, W) =
    share of members predicting foreground (the fused mask as 0/1 for one member)."""

    case_id: str
    image: torch.Tensor
    truth: torch.Tensor
    mask: torch.Tensor
    probs: torch.Tensor
    vote: torch.Tensor
    volume: str | None = None
    slice_index: int | None = None


def save_npz(path: str | Path, preds: Sequence[CasePrediction], class_names: Sequence[str], budget: str) -> Path:
    """One compressed file: ``case_ids``, ``masks`` (N, C, H, W) bool, ``probs`` float16, ``volume``
    ('' for 2D cases), ``slice_index`` (−1 for 2D cases), ``class_names``, ``budget``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path, case_ids=np.array([p.case_id for p in preds]),
        masks=np.stack([p.mask.numpy().astype(bool) for p in preds]),
        probs=np.stack([p.probs.float().numpy().astype(np.float16) for p in preds]),
        volume=np.array([p.volume or "" for p in preds]),
        slice_index=np.array([-1 if p.slice_index is None else p.slice_index for p in preds], dtype=np.int64),
        class_names=np.array(list(class_names)), budget=np.array(budget))
    return path


def load_npz(path: str | Path) -> dict[str, Any]:
    """The arrays of a saved ``predictions.npz`` (plain numpy; strings as Python lists)."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    for k in ("case_ids", "volume", "class_names"):
        out[k] = out[k].tolist()
    out["budget"] = str(out["budget"])
    return out


def pick_cases(case_dice: dict[str, float], k: int = 3) -> list[tuple[str, int, str]]:
    """(kind, rank, case id) of the best, worst and median ``k`` cases by Dice (ties by id); a case is
    shown once, so fewer than 3·k cases give fewer panels."""
    order = sorted(case_dice, key=lambda c: (-case_dice[c], c))
    n = len(order)
    mid = max(0, (n - k) // 2)
    chosen: list[tuple[str, int, str]] = []
    seen: set[str] = set()
    for kind, ids in (("best", order[:k]), ("worst", order[::-1][:k]), ("median", order[mid:mid + k])):
        for rank, cid in enumerate(ids, 1):
            if cid not in seen:
                seen.add(cid)
                chosen.append((kind, rank, cid))
    return chosen


def _grey(image: torch.Tensor) -> np.ndarray:
    """(Cin, H, W) → (H, W, 3) uint8: RGB for three channels, else the first channel; min–max scaled."""
    x = image.float().numpy()
    x = np.moveaxis(x[:3], 0, -1) if x.shape[0] == 3 else np.repeat(x[0][..., None], 3, -1)
    lo, hi = float(x.min()), float(x.max())
    return ((x - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(x)).astype(np.uint8)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (image border counts as outside)."""
    pad = np.pad(mask, 1)
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    return mask & ~inner


def _heat(v: np.ndarray) -> np.ndarray:
    """[0, 1] → black → red → yellow → white (H, W, 3) uint8."""
    v = np.clip(v, 0, 1)[..., None]
    ramp = np.concatenate([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], -1)
    return (ramp * 255).astype(np.uint8)


def overlay_panel(pred: CasePrediction, title: str) -> Any:
    """A PIL image: [image + truth (green) / prediction (red) contours | member disagreement], titled."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = pred.mask.shape[-2:]
    scale = max(1, math.ceil(_PANEL_MIN / max(1, min(h, w))))

    def up(a: np.ndarray) -> np.ndarray:
        return np.kron(a, np.ones((scale, scale) + (1,) * (a.ndim - 2), dtype=a.dtype))

    left = up(_grey(pred.image))
    for masks, colour in ((pred.truth, (0, 255, 0)), (pred.mask, (255, 0, 0))):
        for c in range(masks.shape[0]):
            left[_boundary(up(masks[c].numpy().astype(bool)))] = colour
    vote = pred.vote.float().numpy()
    right = up(_heat((4 * vote * (1 - vote)).max(0)))
    font = ImageFont.load_default(size=max(11, 5 * scale))
    bar = max(18, 7 * scale)
    canvas = Image.new("RGB", (2 * left.shape[1] + 4, left.shape[0] + 2 * bar), (255, 255, 255))
    canvas.paste(Image.fromarray(left), (0, bar))
    canvas.paste(Image.fromarray(right), (left.shape[1] + 4, bar))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 1), title, fill=(0, 0, 0), font=font)
    draw.text((2, left.shape[0] + bar + 1), "truth green · prediction red", fill=(0, 0, 0), font=font)
    draw.text((left.shape[1] + 6, left.shape[0] + bar + 1), "disagreement 4v(1-v)", fill=(0, 0, 0),
              font=font)
    return canvas


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80]


def save_predictions(out_dir: str | Path, preds: Sequence[CasePrediction], case_dice: dict[str, float],
                     mode: str, class_names: Sequence[str], budget: str) -> list[str]:
    """Write what ``mode`` asks for into ``out_dir``; returns the written paths relative to ``out_dir``.

    ``all``: npz + overlays; ``overlays``: overlays, + npz when there are fewer than 500 scored cases;
    ``none``: nothing. ``case_dice`` = per-case Dice (class mean) keyed by scored case (a volume's id for
    slices of a volume, whose panel shows its slice with the most truth + predicted foreground).
    """
    if mode not in MODES:
        raise ValueError(f"save_predictions {mode!r} not in {MODES}")
    out_dir = Path(out_dir)
    written: list[str] = []
    if mode == "none" or not preds:
        return written
    if mode == "all" or len(case_dice) < NPZ_MAX_CASES:
        written.append(save_npz(out_dir / PREDICTIONS_FILE, preds, class_names, budget).relative_to(out_dir).as_posix())
    by_case: dict[str, CasePrediction] = {}
    for p in preds:
        key = p.volume if p.volume is not None else p.case_id
        best = by_case.get(key)
        if best is None or int(p.truth.sum() + p.mask.sum()) > int(best.truth.sum() + best.mask.sum()):
            by_case[key] = p
    (out_dir / OVERLAY_DIR).mkdir(parents=True, exist_ok=True)
    for kind, rank, cid in pick_cases(case_dice):
        p = by_case[cid]
        where = f" (slice {p.slice_index})" if p.volume is not None else ""
        panel = overlay_panel(p, f"{budget} · {kind} {rank}: {cid}{where} · Dice {case_dice[cid]:.3f}")
        path = out_dir / OVERLAY_DIR / f"{kind}{rank}_{_slug(cid)}.png"
        panel.save(path)
        written.append(path.relative_to(out_dir).as_posix())
    return written
