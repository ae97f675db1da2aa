"""REFUGE / REFUGE2 optic disc and cup segmentation (fundus photographs).

Official BMP masks encode 0 cup, 128 disc rim, 255 background (disc = <= 150, cup = <= 100, as
bob.ip.binseg reads them); SDSeg's disc-centred crops use the inverted convention (255 cup, G
channel). ``encoding`` and ``target`` (disc | cup | both) are parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segarena.datasets.cached import Source
from segarena.datasets.photos import PairedImageDataset, files_by_stem, paired_sources
from segarena.datasets.readers import read_mask_grey
from segarena.datasets.validate import require_dir
from segarena.platform.errors import DataError
from segarena.platform.plugin import Task

ENCODINGS = ("refuge_official", "inverted")
TARGETS = {"disc": ("disc",), "cup": ("cup",), "both": ("disc", "cup")}
# (image folder, mask folder, subset) of the official release
OFFICIAL = (("Training400", "Annotation-Training400/Disc_Cup_Masks", "train"),
            ("REFUGE-Validation400", "REFUGE-Validation400-GT/Disc_Cup_Masks", "val"),
            ("REFUGE-Test400", "REFUGE-Test-GT/Disc_Cup_Masks", "test"))


def _recursive(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """``{stem: path}`` over a folder and its class subfolders (Glaucoma/Non-Glaucoma, G/N)."""
    out: dict[str, Path] = {}
    for sub in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
        out.update(files_by_stem(sub, suffixes))
    return out


class REFUGE(PairedImageDataset):
    name: ClassVar[str] = "refuge"
    modality: ClassVar[str] = "colour fundus photography"
    licence: ClassVar[str] = "REFUGE challenge terms (research use; register and cite)"
    citation: ClassVar[str] = ("Orlando JI et al. REFUGE Challenge: a unified framework for evaluating automated "
                               "methods for glaucoma assessment from fundus photographs. Med Image Anal 59:101570, "
                               "2020.")
    description: ClassVar[str] = ("Optic disc / cup on REFUGE (400 train, 400 validation, 400 test as released; "
                                  "merge_val: true gives REFUGE2's 800/400). Also reads SDSeg's Train_crop/"
                                  "{images,masks} crops (test = names starting with T) with encoding: inverted.")
    root_env: ClassVar[str | None] = "SEGARENA_REFUGE_ROOT"
    download_url: ClassVar[str] = "https://refuge.grand-challenge.org/"
    layout: ClassVar[str] = ("<root>/\n"
                             "  Training400/{Glaucoma,Non-Glaucoma}/g0001.jpg\n"
                             "  Annotation-Training400/Disc_Cup_Masks/{Glaucoma,Non-Glaucoma}/g0001.bmp\n"
                             "  REFUGE-Validation400/V0001.jpg + REFUGE-Validation400-GT/Disc_Cup_Masks/V0001.bmp\n"
                             "  REFUGE-Test400/T0001.jpg + REFUGE-Test-GT/Disc_Cup_Masks/.../T0001.bmp\n"
                             "or SDSeg's crops: Train_crop/{images,masks}/")
    mask_values: ClassVar[tuple[int, ...] | None] = (0, 128, 255)

    def __init__(self, root: Any = None, cache_dir: Any = None, *, encoding: str = "refuge_official",
                 target: str = "both", merge_val: bool = False, **params: Any) -> None:
        super().__init__(root, cache_dir, encoding=encoding, target=target, merge_val=merge_val, **params)
        if encoding not in ENCODINGS:
            raise DataError(f"dataset {self.name!r}: encoding {encoding!r} not in {ENCODINGS}")
        if target not in TARGETS:
            raise DataError(f"dataset {self.name!r}: target {target!r} not in {sorted(TARGETS)}")
        self.encoding, self.target, self.merge_val = encoding, target, bool(merge_val)
        if encoding == "inverted":  # 255 cup, rim 127 or 128 depending on the export
            self.mask_values = (0, 127, 128, 255)

    def task(self) -> Task:
        names = TARGETS[self.target]
        return Task(in_channels=self.prep.channels, num_classes=len(names), image_size=(self.prep.size,) * 2,
                    class_names=names, exclusive=False)  # the cup lies inside the disc

    def find_sources(self) -> list[Source]:
        root = self.root_dir()
        crops = root / "Train_crop"
        if crops.is_dir():
            images = files_by_stem(require_dir(crops / "images", self.name))
            masks = files_by_stem(require_dir(crops / "masks", self.name))
            return [Source(s.case_id, s.files, "test" if s.case_id.startswith("T") else "train")
                    for s in paired_sources(images, masks, self.name)]
        out: list[Source] = []
        for image_dir, mask_dir, subset in OFFICIAL:
            if not (root / image_dir).is_dir():
                if subset == "train":
                    raise DataError(f"dataset {self.name!r}: expected folder {root / image_dir} (or Train_crop/)")
                continue
            images = _recursive(root / image_dir, (".jpg", ".jpeg", ".png"))
            masks = _recursive(require_dir(root / mask_dir, self.name), (".bmp", ".png"))
            if subset == "val" and self.merge_val:
                subset = "train"
            out += paired_sources(images, masks, self.name, subset)
        return out

    def read_masks(self, paths: tuple[Path, ...], image_shape: tuple[int, int]) -> list[np.ndarray]:
        return [read_mask_grey(p, channel=1 if self.encoding == "inverted" else None) for p in paths]

    def decode_mask(self, masks: list[np.ndarray], paths: tuple[Path, ...]) -> np.ndarray:
        m = masks[0].astype(np.int32)
        if self.encoding == "inverted":
            m = 255 - m
        regions = {"disc": m <= 150, "cup": m <= 100}
        return np.stack([regions[n] for n in TARGETS[self.target]])
