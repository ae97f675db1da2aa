"""DSB 2018 nuclei: the one real fluorescence image + instance labels that the stardist wheel ships,
read as plain files (stardist itself is never imported: it needs TensorFlow)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, ClassVar

from segarena.datasets.cached import Source
from segarena.datasets.photos import PairedImageDataset
from segarena.platform.dataset import Case
from segarena.platform.errors import DataError

FILES = ("img2d.tif", "mask2d.tif")


def stardist_images_folder() -> Path | None:
    spec = importlib.util.find_spec("stardist")
    return Path(spec.origin).parent / "data" / "images" if spec and spec.origin else None


class DSB2018Nuclei(PairedImageDataset):
    name: ClassVar[str] = "dsb2018-nuclei"
    version: ClassVar[str] = "0.1.0"
    modality: ClassVar[str] = "fluorescence microscopy (nuclei), 512x512 uint16"
    licence: ClassVar[str] = "image and labels CC0 (BBBC038 / Kaggle DSB 2018); stardist package BSD-3-Clause"
    notice: ClassVar[str] = ("Image from the 2018 Data Science Bowl (BBBC038v1, Broad Bioimage Benchmark Collection), "
                             "CC0; file shipped by the stardist package (BSD-3-Clause, Schmidt & Weigert et al.).")
    citation: ClassVar[str] = ("Caicedo JC et al. Nucleus segmentation across imaging experiments: the 2018 Data "
                               "Science Bowl. Nature Methods 16:1247-1253, 2019; Ljosa V, Sokolnicki KL, Carpenter "
                               "AE, Nature Methods 9:637, 2012 (BBBC).")
    description: ClassVar[str] = ("Binary nuclei foreground (instance ids > 0, 125 nuclei) on the one DSB 2018 image "
                                  "in the stardist 0.9.2 wheel, cut into non-overlapping tiles (default 64 px, "
                                  "64 tiles). One image: tiles are correlated, so the split is by columns of tiles "
                                  "with one tile column left out between parts. A microscopy sanity check, too "
                                  "small to rank methods; not a measure of generalisation.")
    root_env: ClassVar[str | None] = "SEGARENA_DSB2018_ROOT"
    download_url: ClassVar[str] = "https://bbbc.broadinstitute.org/BBBC038"
    layout: ClassVar[str] = ("<root>/   (default: the stardist 0.9.2 wheel's stardist/data/images/)\n"
                             "  img2d.tif    512x512 nuclei image\n"
                             "  mask2d.tif   instance labels")
    mask_values: ClassVar[tuple[int, ...] | None] = None  # instance ids: any non-negative integer
    mask_threshold: ClassVar[int] = 0
    class_names: ClassVar[tuple[str, ...]] = ("nucleus",)
    split_mode: ClassVar[str] = "blocks"
    block_gap: ClassVar[int] = 1  # tile columns
    preprocessing: ClassVar[dict[str, Any]] = {"size": 64, "fit": "resize", "norm": "minmax", "channels": 1}

    def __init__(self, root: Any = None, cache_dir: Any = None, *, tile: int = 64, **params: Any) -> None:
        super().__init__(root, cache_dir, tile=tile, **params)

    def find_sources(self) -> list[Source]:
        folder = self.root or stardist_images_folder()
        if folder is None:
            raise DataError(f"dataset {self.name!r} reads img2d.tif/mask2d.tif from the stardist wheel, which is not "
                            f"installed: run `pip install --no-deps stardist==0.9.2` (TensorFlow is not needed), "
                            f"or give `path:` a folder holding both files")
        for f in FILES:
            if not (folder / f).is_file():
                raise DataError(f"dataset {self.name!r}: {folder / f} is missing")
        return [Source("dsb2018", tuple(folder / f for f in FILES))]

    def block_position(self, case: Case) -> int:
        match = re.search(r"_c(\d+)$", case.case_id)
        return int(match.group(1)) if match else 0
