"""File readers shared by every loader: each turns any failure into a ``DataError`` naming the file.

Photos (PNG, JPEG, BMP, TIFF incl. 16-bit) go through Pillow, volumes through nibabel, MoNuSeg's
Aperio XML through the standard library; polygons are rasterised with Pillow. No tifffile needed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from segarena.platform.errors import DataError


def read_image(path: Path, mode: str | None = None) -> np.ndarray:
    """(H, W) or (H, W, C) array; ``mode`` converts first ("L" grey, "RGB")."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later
            if mode is not None and im.mode != mode:
                im = im.convert(mode)
            return np.asarray(im).copy()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except Exception as exc:
        raise DataError(f"{path}: unreadable or truncated image ({type(exc).__name__}: {exc})") from exc


def read_mask_grey(path: Path, channel: int | None = None) -> np.ndarray:
    """A mask as (H, W) integers: one channel of an RGB mask, or the grey value of an L/P/I mask."""
    arr = read_image(path)
    if arr.ndim == 3:
        if channel is not None:
            return arr[..., channel]
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])):
            raise DataError(f"{path}: colour mask where a grey (single-valued) mask is expected")
        return arr[..., 0]
    return arr


def image_channels(arr: np.ndarray, channels: int, path: Path) -> np.ndarray:
    """(C, H, W) float32 with ``channels`` 1 (grey; RGB is averaged) or 3 (grey is repeated)."""
    a = arr.astype(np.float32)
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 3:
        a = np.moveaxis(a[..., :3], -1, 0)
    else:
        raise DataError(f"{path}: image has shape {arr.shape}, expected (H, W) or (H, W, C)")
    if channels == 1 and a.shape[0] != 1:
        a = a.mean(0, keepdims=True)
    elif channels == 3 and a.shape[0] == 1:
        a = np.repeat(a, 3, 0)
    return a


def read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Voxel data as float32 and the voxel size in mm from the header."""
    import nibabel as nib

    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:data.ndim])
    except Exception as exc:
        raise DataError(f"{path}: unreadable or truncated NIfTI ({type(exc).__name__}: {exc})") from exc
    return data, zooms


def read_aperio_polygons(path: Path) -> list[np.ndarray]:
    """Polygons (N, 2) in (x, y) pixels from an Aperio ImageScope XML (``Region/Vertices/Vertex``)."""
    try:
        root = ET.parse(path).getroot()
        polygons = []
        for region in root.iter("Region"):
            pts = [(float(v.get("X")), float(v.get("Y"))) for v in region.iter("Vertex")]
            if len(pts) >= 3:
                polygons.append(np.asarray(pts, dtype=np.float64))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (ET.ParseError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: unreadable annotation XML ({type(exc).__name__}: {exc})") from exc
    return polygons


def rasterise(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Union of filled polygons as an (H, W) bool mask."""
    canvas = Image.new("1", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        draw.polygon([tuple(p) for p in poly], fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)
