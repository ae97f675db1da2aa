"""3D volumes served as 2D slices that the harness re-assembles (by ``volume``) before scoring.

Intensities are normalised per volume and channel (not per slice, so slices stay comparable);
each slice is fitted like a photo, and carries the volume's (row, col, slice) spacing in mm
after resizing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch

from segarena.datasets.cached import CachedDataset, Source
from segarena.datasets.preprocess import Preprocess, fit, normalise, scaled_spacing
from segarena.datasets.readers import read_nifti
from segarena.datasets.validate import check_finite, check_labels, check_same_size
from segarena.platform.dataset import Case
from segarena.platform.errors import DataError
from segarena.platform.plugin import Task

PLANES = {"sagittal": 0, "coronal": 1, "axial": 2}


def plane_axis(plane: str) -> int:
    if plane not in PLANES:
        raise DataError(f"plane {plane!r} not in {sorted(PLANES)}")
    return PLANES[plane]


def volume_slices(source: Source, image: np.ndarray, mask: np.ndarray, zooms: tuple[float, ...], prep: Preprocess,
                  axis: int = 2, keep: Callable[[int], bool] | None = None, score_as_volume: bool = True) -> list[Case]:
    """image (C, X, Y, Z) and mask (K, X, Y, Z) bool → one case per slice along ``axis``
    (``keep(index)`` filters). Case ids are ``<case>_<plane-axis><index:03d>``.

    ``score_as_volume=False`` makes each slice its own 2D case (in-plane spacing only): for a
    single-subject template whose block split leaves one volume's worth of test slices.
    """
    image = np.stack([normalise(ch, prep) for ch in image])
    image, mask = np.moveaxis(image, axis + 1, -1), np.moveaxis(mask, axis + 1, -1)
    in_plane = [a for a in range(3) if a != axis]
    spacing = (zooms[in_plane[0]], zooms[in_plane[1]], zooms[axis])
    out = []
    for z in range(image.shape[-1]):
        if keep is not None and not keep(z):
            continue
        img, msk, factors = fit(image[..., z], mask[..., z], prep)
        scaled = scaled_spacing(spacing, factors)
        out.append(Case(case_id=f"{source.case_id}_{'xyz'[axis]}{z:03d}",
                        image=torch.from_numpy(np.ascontiguousarray(img, np.float32)),
                        mask=torch.from_numpy(np.ascontiguousarray(msk)),
                        spacing=scaled if score_as_volume else scaled[:2], group=source.group or source.case_id,
                        volume=source.case_id if score_as_volume else None, slice_index=z, subset=source.subset))
    return out


class SlicedVolumeDataset(CachedDataset):
    """NIfTI image volume(s) + one label volume per source (files: images..., labels last); the
    labels are checked against ``label_values`` and mapped to masks by ``labels_to_masks``."""

    label_values: ClassVar[tuple[int, ...]]
    class_names: ClassVar[tuple[str, ...]]
    exclusive: ClassVar[bool] = True

    def task(self) -> Task:
        return Task(in_channels=self.prep.channels, num_classes=len(self.names()),
                    image_size=(self.prep.size, self.prep.size), spacing=None, class_names=self.names(),
                    exclusive=self.exclusive)

    def names(self) -> tuple[str, ...]:
        return self.class_names

    def labels_to_masks(self, labels: np.ndarray) -> np.ndarray:
        """(K, X, Y, Z) bool from the integer label volume."""
        raise NotImplementedError

    def read_source(self, source: Source) -> list[Case]:
        *image_paths, label_path = source.files
        labels, zooms = read_nifti(label_path)
        check_labels(labels, self.label_values, label_path)
        channels = []
        for path in image_paths:
            data, _ = read_nifti(path)
            check_same_size(data.shape, labels.shape, path, label_path)
            check_finite(data, path)
            channels.append(data)
        masks = self.labels_to_masks(np.rint(labels).astype(np.int32))
        return volume_slices(source, np.stack(channels), masks, zooms, self.prep)
