"""2D image + mask pairs (dermoscopy, fundus, endoscopy, ultrasound, histology): one shared reader.

A source's files are (image, mask, [more masks]); masks are read as grey values, checked against
the declared label set, decoded to (C, H, W) bool, then image and mask are fitted together
(bilinear image, nearest mask), optionally tiled first (``tile: N`` for large microscopy images).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from segarena.datasets.cached import CachedDataset, Source
from segarena.datasets.preprocess import fit, normalise, scaled_spacing, tiles
from segarena.datasets.readers import image_channels, read_image, read_mask_grey
from segarena.datasets.validate import check_finite, check_labels, check_same_size, pair_by_id
from segarena.platform.dataset import Case
from segarena.platform.plugin import Task

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def files_by_stem(folder: Path, suffixes: Iterable[str] = IMAGE_SUFFIXES, strip: str = "") -> dict[str, Path]:
    """``{id: path}`` for image files in ``folder`` (case-insensitive suffix), ``strip`` removed from
    the stem's end (e.g. ``_segmentation``); licence/attribution text files are ignored."""
    sfx = tuple(s.lower() for s in suffixes)
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in sfx and not p.name.startswith("."):
            stem = p.stem
            if strip and stem.lower().endswith(strip.lower()):
                stem = stem[:-len(strip)]
            out[stem] = p
    return out


def paired_sources(images: dict[str, Path], masks: dict[str, Path], dataset: str, subset: str | None = None,
                   prefix: str = "") -> list[Source]:
    """Sources for one image folder and one mask folder, paired by id (orphans are errors)."""
    return [Source(prefix + k, (img, msk), subset) for k, img, msk in pair_by_id(images, masks, dataset)]


class PairedImageDataset(CachedDataset):
    """``mask_values``: the declared label set (``None`` = lossy masks, e.g. JPEG, thresholded
    without a check). ``class_names``: foreground classes. Subclasses override ``decode_mask``
    for multi-class encodings."""

    mask_values: ClassVar[tuple[int, ...] | None] = (0, 255)
    mask_threshold: ClassVar[int] = 127
    class_names: ClassVar[tuple[str, ...]] = ("foreground",)
    exclusive: ClassVar[bool] = True
    pixel_spacing: tuple[float, float] | None = None  # photos: metrics in px
    preprocessing: ClassVar[dict[str, Any]] = {"size": 64, "fit": "resize", "norm": "scale", "scale": 255.0,
                                               "channels": 3}

    @classmethod
    def params_spec(cls) -> dict[str, Any]:
        """+ ``tile``: cut each image into tiles of this side (0 = whole images), read by ``to_cases``."""
        return {"tile": 0, **super().params_spec()}

    def task(self) -> Task:
        return Task(in_channels=self.prep.channels, num_classes=len(self.class_names),
                    image_size=(self.prep.size, self.prep.size), spacing=None, class_names=self.class_names,
                    exclusive=self.exclusive)

    def decode_mask(self, masks: list[np.ndarray], paths: tuple[Path, ...]) -> np.ndarray:
        """(C, H, W) bool from the grey mask arrays: default union of ``> mask_threshold``."""
        return np.any([m > self.mask_threshold for m in masks], axis=0)[None]

    def read_masks(self, paths: tuple[Path, ...], image_shape: tuple[int, int]) -> list[np.ndarray]:
        """Grey-value mask arrays, one per mask file (MoNuSeg overrides: XML polygons)."""
        return [read_mask_grey(p) for p in paths]

    def read_source(self, source: Source) -> list[Case]:
        image_path, mask_paths = source.files[0], source.files[1:]
        raw = read_image(image_path)
        masks = self.read_masks(mask_paths, raw.shape[:2])
        for mp, m in zip(mask_paths, masks):
            check_same_size(raw.shape[:2], m.shape[:2], image_path, mp)
            if self.mask_values is not None:
                check_labels(m, self.mask_values, mp)
        mask = self.decode_mask(masks, mask_paths) if masks else np.zeros((len(self.class_names), *raw.shape[:2]),
                                                                           bool)
        image = image_channels(raw, self.prep.channels, image_path)
        check_finite(image, image_path)
        return self.to_cases(source, image, mask)

    def to_cases(self, source: Source, image: np.ndarray, mask: np.ndarray) -> list[Case]:
        image = normalise(image, self.prep)  # whole-image statistics, before any tiling
        tile = int(self.params.get("tile") or 0)
        parts = [(f"{source.case_id}_r{r}_c{c}", it, mt)
                 for (r, c, it), (_, _, mt) in zip(tiles(image, tile), tiles(mask, tile))] if tile else \
            [(source.case_id, image, mask)]
        out = []
        for case_id, img, msk in parts:
            img, msk, factors = fit(img, msk, self.prep)
            out.append(Case(case_id=case_id, image=torch.from_numpy(np.ascontiguousarray(img, np.float32)),
                            mask=torch.from_numpy(np.ascontiguousarray(msk)),
                            spacing=scaled_spacing(self.pixel_spacing, factors),
                            group=source.group or source.case_id, subset=source.subset))
        return out
