"""Checks on source files, each failing with a ``DataError`` that names the file at fault."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from segarena.platform.errors import DataError


def require_root(root: Path | None, dataset: str, env: str | None) -> Path:
    if root is None:
        how = f" or set ${env}" if env else ""
        raise DataError(f"dataset {dataset!r} needs its folder: give `path:` in the suite{how}")
    if not root.is_dir():
        raise DataError(f"dataset {dataset!r}: root folder {root} does not exist")
    return root


def require_dir(path: Path, dataset: str) -> Path:
    if not path.is_dir():
        raise DataError(f"dataset {dataset!r}: expected folder {path} is missing")
    return path


def pair_by_id(images: dict[str, Path], masks: dict[str, Path], dataset: str) -> list[tuple[str, Path, Path]]:
    """Pair by identical id (never by sorted order); any orphan on either side is an error."""
    orphans = sorted(set(images) - set(masks))
    if orphans:
        raise DataError(f"dataset {dataset!r}: image {images[orphans[0]]} has no mask"
                        + (f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""))
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise DataError(f"dataset {dataset!r}: mask {masks[orphans[0]]} has no image"
                        + (f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""))
    return [(k, images[k], masks[k]) for k in sorted(images)]


def check_finite(arr: np.ndarray, path: Path) -> None:
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise DataError(f"{path}: {bad} NaN/inf intensities")


def check_labels(mask: np.ndarray, allowed: Iterable[int], path: Path) -> None:
    """Mask values must lie in the declared label set (e.g. {0, 255} for a binary PNG)."""
    allowed = set(int(a) for a in allowed)
    values = set(np.unique(mask).tolist())
    extra = sorted(values - allowed)
    if extra:
        shown = ", ".join(str(int(v)) for v in extra[:8])
        raise DataError(f"{path}: mask values {{{shown}}} outside the declared label set {sorted(allowed)}")


def check_same_size(image_shape: tuple[int, ...], mask_shape: tuple[int, ...], image: Path, mask: Path) -> None:
    if tuple(image_shape) != tuple(mask_shape):
        raise DataError(f"{mask}: mask size {tuple(mask_shape)} differs from image {image.name} "
                        f"size {tuple(image_shape)}")
