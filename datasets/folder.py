"""The generic layout for real-data exports: ``images/`` + ``masks/`` (optionally under train/val/test),
paired by identical id, with an optional ``dataset.json`` card (classes, spacing, modality, ...)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np

from segarena.datasets.cached import Source
from segarena.datasets.photos import PairedImageDataset, files_by_stem, paired_sources
from segarena.datasets.validate import require_dir
from segarena.platform.errors import DataError
from segarena.platform.plugin import Task

SUBSETS = ("train", "val", "test")


class ImageFolder(PairedImageDataset):
    name: ClassVar[str] = "folder"
    modality: ClassVar[str] = "any 2D images (declared in dataset.json)"
    licence: ClassVar[str] = "the data owner's (declared in dataset.json)"
    citation: ClassVar[str] = "the data owner's (declared in dataset.json)"
    description: ClassVar[str] = ("Generic layout: <root>/[train|val|test/]images/<id>.png and masks/<id>.png (0 "
                                  "background, 255 binary or class ids 1..K), paired by id, never by order; optional "
                                  "dataset.json {name, classes, spacing, modality, licence, citation, channels}. "
                                  "train/val/test folders are used as the official split.")
    root_env: ClassVar[str | None] = "SEGARENA_FOLDER_ROOT"
    layout: ClassVar[str] = ("<root>/\n"
                             "  dataset.json      optional: name, classes, spacing, modality, licence, citation\n"
                             "  images/<id>.png   or train/, val/, test/ each holding images/ and masks/\n"
                             "  masks/<id>.png    0 background, 255 (binary) or class ids 1..K")

    def __init__(self, root: Any = None, cache_dir: Any = None, **params: Any) -> None:
        super().__init__(root, cache_dir, **params)
        self.meta = self._read_meta()
        classes = self.meta.get("classes") or ["foreground"]
        self.class_names = tuple(str(c) for c in classes)
        binary = len(self.class_names) == 1
        self.mask_values = (0, 1, 255) if binary else tuple(range(len(self.class_names) + 1))
        if self.meta.get("spacing"):
            self.pixel_spacing = tuple(float(s) for s in self.meta["spacing"])[:2]
        if "channels" in self.meta and "channels" not in params:
            self.prep = type(self.prep)(**{**self.prep.as_dict(), "channels": int(self.meta["channels"])})

    def _read_meta(self) -> dict[str, Any]:
        path = self.root / "dataset.json" if self.root is not None else None
        if path is None or not path.is_file():
            return {}
        try:
            meta = json.loads(path.read_text())
        except ValueError as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(meta, dict):
            raise DataError(f"{path}: expected a JSON object")
        return meta

    def config(self) -> dict[str, Any]:
        return {**super().config(), "meta": self.meta}

    def task(self) -> Task:
        return Task(in_channels=self.prep.channels, num_classes=len(self.class_names),
                    image_size=(self.prep.size, self.prep.size), spacing=self.pixel_spacing,
                    class_names=self.class_names, exclusive=True)

    def decode_mask(self, masks: list, paths: tuple) -> np.ndarray:
        m = masks[0]
        if len(self.class_names) == 1:
            return (m > 0)[None]
        return np.stack([m == k for k in range(1, len(self.class_names) + 1)])

    def find_sources(self) -> list[Source]:
        root = self.root_dir()
        subsets = [s for s in SUBSETS if (root / s).is_dir()]
        if not subsets:
            return self._pairs(root, None)
        return [src for s in subsets for src in self._pairs(root / s, s)]

    def _pairs(self, base, subset: str | None) -> list[Source]:
        images = files_by_stem(require_dir(base / "images", self.name))
        masks = files_by_stem(require_dir(base / "masks", self.name))
        return paired_sources(images, masks, self.name, subset, prefix=f"{subset}_" if subset else "")
