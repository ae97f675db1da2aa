"""Declared preprocessing: fit to the task size, normalise intensities, never interpolate masks.

Each dataset declares its defaults as data (``preprocessing`` class attribute); suite params
override them. The resolved ``Preprocess`` is part of the cache key and the content hash.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

FITS = ("resize", "pad_resize", "pad")
NORMS = ("minmax", "zscore", "zscore_nonzero", "scale", "window", "none")


@dataclass(frozen=True)
class Preprocess:
    """size: task side in px. fit: ``resize`` (stretch, as the papers do for photos), ``pad_resize``
    (centre zero-pad to a square of ``pad_to`` or the longer side, then resize: keeps aspect and
    scanner geometry) or ``pad`` (centre pad/crop to ``size``, no interpolation). norm: per image
    (or per volume for 3D sources) ``minmax`` to [0,1], ``zscore``, ``zscore_nonzero`` (over
    non-zero voxels, skull-stripped MRI), ``scale`` (divide by ``scale``), ``window`` (clip to
    ``window`` then map to [0,1], CT) or ``none``. channels: 1 grey or 3 RGB."""

    size: int = 64
    fit: str = "resize"
    pad_to: int | None = None
    norm: str = "minmax"
    scale: float = 255.0
    window: tuple[float, float] | None = None
    channels: int = 3

    def __post_init__(self) -> None:
        from segarena.platform.errors import DataError

        if self.fit not in FITS:
            raise DataError(f"preprocessing fit {self.fit!r} not in {FITS}")
        if self.norm not in NORMS:
            raise DataError(f"preprocessing norm {self.norm!r} not in {NORMS}")
        if self.norm == "window" and self.window is None:
            raise DataError("preprocessing norm 'window' needs window: [low, high]")

    @classmethod
    def resolve(cls, defaults: dict[str, Any], params: dict[str, Any]) -> Preprocess:
        names = {f.name for f in fields(cls)}
        merged = {**defaults, **{k: v for k, v in params.items() if k in names}}
        if merged.get("window") is not None:
            merged["window"] = tuple(float(v) for v in merged["window"])
        return cls(**merged)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalise(arr: np.ndarray, p: Preprocess) -> np.ndarray:
    a = arr.astype(np.float32, copy=False)
    if p.norm == "minmax":
        lo, hi = float(a.min()), float(a.max())
        return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    if p.norm in ("zscore", "zscore_nonzero"):
        sel = a[a != 0] if p.norm == "zscore_nonzero" and (a != 0).any() else a
        out = (a - sel.mean()) / (sel.std() + 1e-6)
        return np.where(a != 0, out, 0.0).astype(np.float32) if p.norm == "zscore_nonzero" else out
    if p.norm == "scale":
        return a / p.scale
    if p.norm == "window":
        lo, hi = p.window  # type: ignore[misc]
        return (np.clip(a, lo, hi) - lo) / (hi - lo)
    return a


def centre_pad(arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centre zero-pad (or centre-crop) the last two axes to ``shape``."""
    h, w = arr.shape[-2:]
    out = np.zeros(arr.shape[:-2] + tuple(shape), dtype=arr.dtype)
    th, tw = shape
    sy, sx = max(0, (h - th) // 2), max(0, (w - tw) // 2)
    dy, dx = max(0, (th - h) // 2), max(0, (tw - w) // 2)
    ch, cw = min(h, th), min(w, tw)
    out[..., dy:dy + ch, dx:dx + cw] = arr[..., sy:sy + ch, sx:sx + cw]
    return out


def fit(image: np.ndarray, mask: np.ndarray, p: Preprocess) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Image (C,H,W) float and mask (K,H,W) bool to ``size``²; returns the pixel-size factors
    (new px in old px, per row/col) so callers can scale spacing."""
    h, w = image.shape[-2:]
    if p.fit == "pad":
        return centre_pad(image, (p.size, p.size)), centre_pad(mask, (p.size, p.size)), (1.0, 1.0)
    if p.fit == "pad_resize":
        side = max(p.pad_to or 0, h, w)
        image, mask = centre_pad(image, (side, side)), centre_pad(mask, (side, side))
        h = w = side
    if (h, w) == (p.size, p.size):
        return image, mask, (1.0, 1.0)
    img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    img = F.interpolate(img, size=(p.size, p.size), mode="bilinear", align_corners=False,
                        antialias=p.size < max(h, w))[0]
    msk = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))[None]
    msk = F.interpolate(msk, size=(p.size, p.size), mode="nearest-exact")[0]
    return img.numpy(), msk.numpy().astype(bool), (h / p.size, w / p.size)


def scaled_spacing(spacing: tuple[float, ...] | None, factors: tuple[float, float]) -> tuple[float, ...] | None:
    """In-plane spacing after resizing; a third (slice) axis is kept as is."""
    if spacing is None:
        return None
    return (spacing[0] * factors[0], spacing[1] * factors[1], *spacing[2:])


def tiles(arr: np.ndarray, tile: int) -> list[tuple[int, int, np.ndarray]]:
    """Non-overlapping ``tile``² tiles of the last two axes as (row, col, tile); edges dropped."""
    h, w = arr.shape[-2:]
    return [(r, c, arr[..., r * tile:(r + 1) * tile, c * tile:(c + 1) * tile])
            for r in range(h // tile) for c in range(w // tile)]
