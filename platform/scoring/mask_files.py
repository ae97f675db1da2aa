"""Mask files on disk: PNG and NIfTI readers and writers, and prediction/truth folders paired by file name.

Layout: one class → ``DIR/<name>.png`` (or ``.nii``, ``.nii.gz``); several classes → one sub-folder per
class, ``DIR/<class>/<name>.<ext>``. A file holds one binary mask: values {0, 1}, or {0, 255} for PNG.
Shared by ``segarena evaluate`` (reads) and ``segarena predict`` (writes, ``write_masks``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segarena.platform.errors import DataError

SUFFIXES = (".nii.gz", ".nii", ".png")
FORMATS = {"png": ".png", "nifti": ".nii.gz"}
SINGLE_CLASS = "1"  # the class name of a flat folder (the harness's name for an unnamed single class)


@dataclass(frozen=True)
class MaskFile:
    """One mask read from disk: boolean array (spatial axes only), spacing in mm when the file has one."""

    path: Path
    array: np.ndarray
    spacing: tuple[float, ...] | None = None


def mask_name(path: Path) -> str | None:
    """The pairing key of a mask file: its name without the mask suffix; None for other files."""
    for suffix in SUFFIXES:
        if path.name.lower().endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def _binary(path: Path, data: np.ndarray) -> np.ndarray:
    values = np.unique(data)
    if set(values.tolist()) <= {0, 1} or (path.suffix.lower() == ".png" and set(values.tolist()) <= {0, 255}):
        return data > 0
    shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
    raise DataError(f"{path}: not a binary mask (values {shown}; expected 0/1, or 0/255 in a PNG)")


def read_mask(path: str | Path) -> MaskFile:
    """A binary mask from a PNG (grey, palette, or RGB with equal channels) or NIfTI file.

    NIfTI spacing comes from the header zooms; trailing axes of size 1 beyond two are dropped, so a
    2D slice stored as (H, W, 1) scores as 2D. PNG has no spacing (pixels).
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as img:
                data = np.asarray(img)
            spacing = None
            if data.ndim == 3:  # RGB(A) masks: one grey level repeated over the colour channels
                colour = data[..., :3]
                if not (colour == colour[..., :1]).all():
                    raise DataError(f"{path}: a colour image, not a mask (channels differ)")
                data = colour[..., 0]
        else:
            import nibabel as nib

            img = nib.load(str(path))
            data = np.asanyarray(img.dataobj)
            spacing = tuple(float(z) for z in img.header.get_zooms()[: data.ndim])
            while data.ndim > 2 and data.shape[-1] == 1:
                data, spacing = data[..., 0], spacing[:-1]
    except DataError:
        raise
    except Exception as exc:  # unreadable or truncated file: name it
        raise DataError(f"{path}: cannot read mask: {exc}") from exc
    return MaskFile(path, _binary(path, np.asarray(data)), spacing)


def _masks_in(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        name = mask_name(p) if p.is_file() else None
        if name is None:
            continue
        if name in out:
            raise DataError(f"{p}: two masks named {name!r} in {folder} ({out[name].name}, {p.name})")
        out[name] = p
    return out


def list_masks(folder: str | Path) -> dict[str, dict[str, Path]]:
    """{class: {name: path}}: a flat folder is the single class ``"1"``; else one sub-folder per class."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    flat = _masks_in(folder)
    if flat:
        return {SINGLE_CLASS: flat}
    classes = {d.name: _masks_in(d) for d in sorted(folder.iterdir()) if d.is_dir()}
    classes = {k: v for k, v in classes.items() if v}
    if not classes:
        raise DataError(f"{folder}: no mask files ({', '.join(SUFFIXES)}) in it or in class sub-folders")
    return classes


Pairs = dict[str, dict[str, tuple[Path, Path]]]


def pair_folders(pred_dir: str | Path, truth_dir: str | Path) -> tuple[list[str], Pairs]:
    """(class names, {name: {class: (prediction path, truth path)}}), names sorted; a file without its
    partner, or class folders that differ, is an error naming it."""
    pred, truth = list_masks(pred_dir), list_masks(truth_dir)
    if set(pred) != set(truth):
        raise DataError(f"{pred_dir}: classes {sorted(pred)} differ from {truth_dir}'s {sorted(truth)}")
    pairs: Pairs = {}
    for cls in sorted(pred):
        for name, path in pred[cls].items():
            if name not in truth[cls]:
                raise DataError(f"{path}: no truth mask named {name!r} in {truth_dir}")
            pairs.setdefault(name, {})[cls] = (path, truth[cls][name])
        for name, path in truth[cls].items():
            if name not in pred[cls]:
                raise DataError(f"{path}: no predicted mask named {name!r} in {pred_dir}")
    return sorted(pred), dict(sorted(pairs.items()))


_SAFE = re.compile(r"^[^/\\\x00]+$")


def write_masks(masks: Sequence[Any], names: Sequence[str], out_dir: str | Path, fmt: str = "png",
                class_names: Sequence[str] | None = None, spacing: Sequence[float] | None = None,
                affines: Sequence[np.ndarray] | None = None) -> list[Path]:
    """Write channel-first binary masks (C, *spatial), one per name, in the layout ``list_masks`` reads.

    fmt ``png`` (2D only; 0/255 grey) or ``nifti`` (``.nii.gz``, uint8 0/1, the given affine per mask or
    diag(spacing)). One class → files in ``out_dir``; several → ``out_dir/<class>/``. Returns the paths.
    """
    if fmt not in FORMATS:
        raise DataError(f"mask format {fmt!r} not in {sorted(FORMATS)}")
    if len(masks) != len(names):
        raise ValueError(f"{len(masks)} masks for {len(names)} names")
    out_dir = Path(out_dir)
    written = []
    for i, (mask, name) in enumerate(zip(masks, names, strict=True)):
        if not _SAFE.match(name) or name in (".", ".."):
            raise DataError(f"{name!r}: not usable as a file name")
        m = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask).astype(bool)
        if m.ndim < 3:
            raise ValueError(f"{name}: masks are channel-first (C, *spatial), got shape {m.shape}")
        names_c = list(class_names) if class_names else [str(c + 1) for c in range(m.shape[0])]
        if len(names_c) != m.shape[0]:
            raise ValueError(f"{name}: {m.shape[0]} channels for class names {names_c}")
        for c in range(m.shape[0]):
            folder = out_dir if m.shape[0] == 1 else out_dir / names_c[c]
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{name}{FORMATS[fmt]}"
            if fmt == "png":
                if m.ndim != 3:
                    raise DataError(f"{path}: PNG holds 2D masks, got spatial shape {m.shape[1:]}")
                from PIL import Image

                Image.fromarray(m[c].astype(np.uint8) * 255, mode="L").save(path)
            else:
                import nibabel as nib

                zooms = [*(spacing or [1.0] * (m.ndim - 1)), 1.0, 1.0][:3]  # a NIfTI affine is 4×4, also for 2D
                affine = affines[i] if affines is not None else np.diag([*zooms, 1.0])
                nib.save(nib.Nifti1Image(m[c].astype(np.uint8), affine), str(path))
            written.append(path)
    return written
