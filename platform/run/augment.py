"""Training augmentation owned by the harness: the same recipe, the same draws, for every method.

A suite's ``augment:`` kind names a fixed pipeline of MONAI dictionary transforms applied to the image
and its mask together (geometry on both, intensity on the image only):

- ``none``: identity.
- ``flips``: horizontal and vertical flips (p = 0.5 each).
- ``default``: flips, a random multiple of 90° (p = 0.5; square images only, so shapes stay fixed), a
  small affine (p = 0.5: rotation ±15°, scale ±10 %, translation ±5 % of the size; bilinear on the
  image, **nearest** on the mask, zero padding), then intensity jitter on the image (p = 0.5 each:
  scale by 1 + U(−0.1, 0.1), shift by U(−0.1, 0.1)·std), an affine map of intensities per image.

Why it is seeded this way: every random draw comes from a numpy state seeded from (seed, step, row key),
never from torch's or numpy's global generators, so augmentation is reproducible for
a seed, leaves the methods' own randomness untouched, and gives one row the same transform whichever
method trains on it. Masks stay binary: flips and rotations permute pixels, the affine resamples the
mask by nearest neighbour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import (
    MapTransform,
    RandAffined,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandStdShiftIntensityd,
)

from segarena.platform.errors import SpecError

KINDS = ("none", "flips", "default")
_KEYS = ("image", "mask")


def _pipeline(kind: str, height: int, width: int) -> list[MapTransform]:
    """The transforms of ``kind`` for (height, width) inputs, in application order."""
    flips = [RandFlipd(_KEYS, prob=0.5, spatial_axis=0), RandFlipd(_KEYS, prob=0.5, spatial_axis=1)]
    if kind == "flips":
        return flips
    rot90 = [RandRotate90d(_KEYS, prob=0.5, max_k=3, spatial_axes=(0, 1))] if height == width else []
    affine = RandAffined(_KEYS, spatial_size=(height, width), prob=0.5, rotate_range=math.radians(15),
                         scale_range=(0.1, 0.1), translate_range=(0.05 * height, 0.05 * width),
                         mode=("bilinear", "nearest"), padding_mode="zeros", cache_grid=True)
    intensity = [RandScaleIntensityd("image", factors=0.1, prob=0.5),
                 RandStdShiftIntensityd("image", factors=0.1, prob=0.5)]
    return [*flips, *rot90, affine, *intensity]


def _plain(x: Any) -> torch.Tensor:
    """MONAI returns MetaTensors; methods get plain tensors."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


def worker_seed(cell_seed: int, rank: int) -> int:
    """A seed per (cell seed, worker rank), for callers that key rows by batch position."""
    return int(np.random.SeedSequence([cell_seed, rank]).generate_state(1)[0])


class Augment:
    """``Augment(kind, seed)(images (B,C,H,W), masks (B,K,H,W), step)`` → augmented (images, masks).

    Row b's transform is drawn from (seed, step, key_b) with key_b = ``ids[b]`` when given (e.g. the
    dataset indices of the batch, with ``step`` = the epoch: each case then gets the same transform for
    every method, whatever its batch size) and b otherwise. Shapes, dtypes and devices are kept.
    """

    def __init__(self, kind: str, seed: int) -> None:
        if kind not in KINDS:
            raise SpecError(f"augment: {kind!r} is not one of {', '.join(KINDS)}")
        if seed < 0:
            raise SpecError(f"augment: seed {seed} must be >= 0")
        self.kind, self.seed = kind, int(seed)
        self._pipelines: dict[tuple[int, int], list[MapTransform]] = {}

    def transforms(self, height: int, width: int) -> list[MapTransform]:
        """The pipeline for this image size (built once per size; affine grids are cached)."""
        if (height, width) not in self._pipelines:
            self._pipelines[(height, width)] = [] if self.kind == "none" else _pipeline(self.kind, height, width)
        return self._pipelines[(height, width)]

    def __call__(self, images: torch.Tensor, masks: torch.Tensor, step: int,
                 ids: Sequence[int] | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "none":
            return images, masks
        if images.dim() != 4 or masks.dim() != 4 or images.shape[0] != masks.shape[0] \
                or images.shape[-2:] != masks.shape[-2:]:
            raise ValueError(f"augment expects images (B,C,H,W) and masks (B,K,H,W), got {tuple(images.shape)} "
                             f"and {tuple(masks.shape)}")
        keys = range(images.shape[0]) if ids is None else [int(i) for i in ids]
        if len(keys) != images.shape[0] or step < 0:
            raise ValueError(f"augment: {len(keys)} ids for {images.shape[0]} rows, step {step}")
        pipeline = self.transforms(*images.shape[-2:])
        out_images, out_masks = [], []
        tracking = get_track_meta()
        set_track_meta(False)  # no MetaTensor bookkeeping (we never invert): about half the cost
        try:
            for row, key in enumerate(keys):
                # One state per row, drawn in pipeline order: the geometric draws come first and do not
                # depend on the intensity transforms after them.
                state = np.random.RandomState(np.random.MT19937(np.random.SeedSequence([self.seed, int(step), key])))
                sample: dict[str, Any] = {"image": images[row], "mask": masks[row].float()}  # bool masks too
                for transform in pipeline:
                    transform.set_random_state(state=state)
                    sample = transform(sample)
                out_images.append(_plain(sample["image"]).to(images.dtype))
                out_masks.append(_plain(sample["mask"]).to(masks.dtype))
        finally:
            set_track_meta(tracking)
        return torch.stack(out_images), torch.stack(out_masks)
