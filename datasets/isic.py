"""ISIC 2016 (MedSegDiff) and ISIC 2018 Task 1 (SDSeg) skin-lesion segmentation, official layouts.

Both mask spellings are accepted (``_Segmentation.png`` in 2016, ``_segmentation.png`` in 2018);
licence/attribution text files in the input folders are ignored (only ``*.jpg`` are images).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import ClassVar

from segarena.datasets.cached import Source
from segarena.datasets.photos import IMAGE_SUFFIXES, PairedImageDataset, files_by_stem, paired_sources
from segarena.datasets.validate import require_dir
from segarena.platform.errors import DataError

MASK_SUFFIX = "_segmentation"  # matched case-insensitively: both spellings
ISIC_LICENCE = "CC-BY-NC 4.0 (ISIC Archive); cite the challenge"
ISIC_MODALITY = "dermoscopy (RGB photographs)"


def _isic_pairs(images_dir: Path, masks_dir: Path, dataset: str, subset: str) -> list[Source]:
    images = files_by_stem(require_dir(images_dir, dataset), (".jpg", ".jpeg"))
    masks = files_by_stem(require_dir(masks_dir, dataset), (".png",), strip=MASK_SUFFIX)
    return paired_sources(images, masks, dataset, subset)


class ISIC2016(PairedImageDataset):
    name: ClassVar[str] = "isic2016"
    modality: ClassVar[str] = ISIC_MODALITY
    licence: ClassVar[str] = ISIC_LICENCE
    citation: ClassVar[str] = ("Gutman D et al. Skin lesion analysis toward melanoma detection: a challenge at the "
                               "ISBI 2016, hosted by the ISIC. arXiv:1605.01397, 2016.")
    description: ClassVar[str] = ("ISIC 2016 Part 1 lesion segmentation (900 train / 379 test, official split). "
                                  "Reads the official Part 1 folders, MedSegDiff's CSV layout "
                                  "(ISBI2016_ISIC_Part3B_<Training|Test>_GroundTruth.csv with index, image path, mask "
                                  "path) or the Part 3B folders with masks next to the images.")
    root_env: ClassVar[str | None] = "SEGARENA_ISIC2016_ROOT"
    download_url: ClassVar[str] = "https://challenge.isic-archive.com/landing/2016/37/"
    layout: ClassVar[str] = ("<root>/\n"
                             "  ISBI2016_ISIC_Part1_Training_Data/ISIC_0000000.jpg\n"
                             "  ISBI2016_ISIC_Part1_Training_GroundTruth/ISIC_0000000_Segmentation.png\n"
                             "  ISBI2016_ISIC_Part1_Test_Data/, ISBI2016_ISIC_Part1_Test_GroundTruth/\n"
                             "or MedSegDiff's ISBI2016_ISIC_Part3B_{Training,Test}_GroundTruth.csv + _Data/ folders")

    def find_sources(self) -> list[Source]:
        root = self.root_dir()
        out: list[Source] = []
        for mode, subset in (("Training", "train"), ("Test", "test")):
            part1 = root / f"ISBI2016_ISIC_Part1_{mode}_Data"
            table = root / f"ISBI2016_ISIC_Part3B_{mode}_GroundTruth.csv"
            part3b = root / f"ISBI2016_ISIC_Part3B_{mode}_Data"
            if part1.is_dir():
                out += _isic_pairs(part1, root / f"ISBI2016_ISIC_Part1_{mode}_GroundTruth", self.name, subset)
            elif table.is_file():
                out += self._csv_sources(table, part3b, subset)
            elif part3b.is_dir():
                out += _isic_pairs(part3b, part3b, self.name, subset)
            elif mode == "Training":
                raise DataError(f"dataset {self.name!r}: expected folder {part1} (or {table.name} / {part3b.name}) "
                                f"under {root}")
        return out

    def _csv_sources(self, table: Path, part3b: Path, subset: str) -> list[Source]:
        """MedSegDiff rows (index, image path, mask path) relative to the root, or official Part 3B
        rows (id, benign/malignant) with ``<id>_Segmentation.png`` beside ``<id>.jpg``."""
        out = []
        with open(table, newline="", encoding="utf-8", errors="replace") as fh:
            for n, row in enumerate(csv.reader(fh), 1):
                if len(row) >= 3 and row[1].lower().endswith(IMAGE_SUFFIXES):
                    image, mask = self.root_dir() / row[1], self.root_dir() / row[2]
                elif len(row) == 2 and row[0].startswith("ISIC_"):
                    image, mask = part3b / f"{row[0]}.jpg", part3b / f"{row[0]}_Segmentation.png"
                else:
                    continue  # header row
                for f, what in ((image, "image"), (mask, "mask")):
                    if not f.is_file():
                        raise DataError(f"{table}: row {n} names {what} {f}, which does not exist")
                out.append(Source(image.stem, (image, mask), subset))
        return out


class ISIC2018(PairedImageDataset):
    name: ClassVar[str] = "isic2018"
    modality: ClassVar[str] = ISIC_MODALITY
    licence: ClassVar[str] = ISIC_LICENCE
    citation: ClassVar[str] = ("Codella N et al. Skin lesion analysis toward melanoma detection 2018: a challenge "
                               "hosted by the ISIC. arXiv:1902.03368, 2019; Tschandl P et al., Sci Data 5:180161, "
                               "2018 (HAM10000).")
    description: ClassVar[str] = ("ISIC 2018 Task 1 lesion boundary segmentation: Training (2594), Validation (100) "
                                  "and Test (1000) as released (official split; a seeded val is carved from "
                                  "training when Validation is absent).")
    root_env: ClassVar[str | None] = "SEGARENA_ISIC2018_ROOT"
    download_url: ClassVar[str] = "https://challenge.isic-archive.com/data/#2018"
    layout: ClassVar[str] = ("<root>/\n"
                             "  ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg\n"
                             "  ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png\n"
                             "  ISIC2018_Task1-2_Validation_Input/, ISIC2018_Task1_Validation_GroundTruth/ (optional)\n"
                             "  ISIC2018_Task1-2_Test_Input/, ISIC2018_Task1_Test_GroundTruth/ (optional)")

    def find_sources(self) -> list[Source]:
        root = self.root_dir()
        out: list[Source] = []
        for mode, subset in (("Training", "train"), ("Validation", "val"), ("Test", "test")):
            inputs = root / f"ISIC2018_Task1-2_{mode}_Input"
            if not inputs.is_dir():
                inputs = root / f"ISIC2018_Task1_{mode}_Input"  # SDSeg's renamed copy
            if inputs.is_dir():
                out += _isic_pairs(inputs, root / f"ISIC2018_Task1_{mode}_GroundTruth", self.name, subset)
            elif mode == "Training":
                raise DataError(f"dataset {self.name!r}: expected folder {root / 'ISIC2018_Task1-2_Training_Input'}")
        return out
