"""H&E histology: MoNuSeg 2018 nuclei (cDAL; Aperio XML polygons) and GlaS glands (flat BMP folder)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segarena.datasets.cached import Source
from segarena.datasets.photos import PairedImageDataset, files_by_stem, paired_sources
from segarena.datasets.readers import rasterise, read_aperio_polygons, read_mask_grey
from segarena.datasets.validate import require_dir
from segarena.platform.errors import DataError

HISTOLOGY = "H&E-stained histology (RGB)"
MONUSEG_TRAIN = "MoNuSeg 2018 Training Data"
MONUSEG_TEST = "MoNuSegTestData"


class MoNuSeg(PairedImageDataset):
    name: ClassVar[str] = "monuseg"
    modality: ClassVar[str] = HISTOLOGY
    licence: ClassVar[str] = "CC BY-NC-SA 4.0 (MoNuSeg challenge)"
    citation: ClassVar[str] = ("Kumar N et al. A multi-organ nucleus segmentation challenge. IEEE TMI 39(5):1380-"
                               "1391, 2020; Kumar N et al., IEEE TMI 36(7):1550-1560, 2017.")
    description: ClassVar[str] = ("MoNuSeg 2018: 30 training images ('MoNuSeg 2018 Training Data/Tissue Images/*.tif' "
                                  "+ 'Annotations/*.xml') and 14 test images (MoNuSegTestData/*.tif + *.xml), "
                                  "official split; Aperio polygons rasterised to a binary union. Also reads cDAL's "
                                  "MonuSeg/{Training,Test}/{img,mask}. tile: N cuts 1000 px images into tiles "
                                  "(grouped by image).")
    root_env: ClassVar[str | None] = "SEGARENA_MONUSEG_ROOT"
    download_url: ClassVar[str] = "https://monuseg.grand-challenge.org/Data/"
    layout: ClassVar[str] = ("<root>/\n"
                             "  MoNuSeg 2018 Training Data/\n"
                             "    Tissue Images/TCGA-...-01Z-00-DX1.tif\n"
                             "    Annotations/TCGA-...-01Z-00-DX1.xml\n"
                             "  MoNuSegTestData/TCGA-....tif + TCGA-....xml\n"
                             "or cDAL's conversion: MonuSeg/{Training,Test}/{img,mask}/")
    mask_values: ClassVar[tuple[int, ...] | None] = None  # XML polygons or cDAL's PNG (> 0)
    mask_threshold: ClassVar[int] = 0

    def find_sources(self) -> list[Source]:
        root = self.root_dir()
        if (root / "MonuSeg").is_dir() or (root / "Training" / "img").is_dir():  # cDAL conversion
            base = root / "MonuSeg" if (root / "MonuSeg").is_dir() else root
            return [s for sub, subset in (("Training", "train"), ("Test", "test")) if (base / sub).is_dir()
                    for s in paired_sources(files_by_stem(require_dir(base / sub / "img", self.name)),
                                            files_by_stem(require_dir(base / sub / "mask", self.name)),
                                            self.name, subset)]
        train = require_dir(root / MONUSEG_TRAIN, self.name)
        out = paired_sources(files_by_stem(require_dir(train / "Tissue Images", self.name), (".tif", ".tiff")),
                             files_by_stem(require_dir(train / "Annotations", self.name), (".xml",)), self.name,
                             "train")
        if (root / MONUSEG_TEST).is_dir():
            out += paired_sources(files_by_stem(root / MONUSEG_TEST, (".tif", ".tiff")),
                                  files_by_stem(root / MONUSEG_TEST, (".xml",)), self.name, "test")
        return out

    def read_masks(self, paths: tuple[Path, ...], image_shape: tuple[int, int]) -> list[np.ndarray]:
        return [rasterise(read_aperio_polygons(p), image_shape).astype(np.uint8) if p.suffix.lower() == ".xml"
                else read_mask_grey(p) for p in paths]


class GlaS(PairedImageDataset):
    name: ClassVar[str] = "glas"
    modality: ClassVar[str] = HISTOLOGY
    licence: ClassVar[str] = "GlaS@MICCAI 2015 challenge terms (research use, cite)"
    citation: ClassVar[str] = ("Sirinukunwattana K et al. Gland segmentation in colon histology images: the GlaS "
                               "challenge contest. Med Image Anal 35:489-502, 2017.")
    description: ClassVar[str] = ("GlaS flat folder: train_N.bmp (85), testA_N.bmp (60), testB_N.bmp (20), each with "
                                  "<name>_anno.bmp (gland instances, > 0) and Grade.csv (patient ids group the "
                                  "images); official split, test_set A, B or AB (default).")
    root_env: ClassVar[str | None] = "SEGARENA_GLAS_ROOT"
    download_url: ClassVar[str] = "https://warwick.ac.uk/fac/cross_fac/tia/data/glascontest/"
    layout: ClassVar[str] = ("<root>/   (or one sub-folder holding Grade.csv)\n"
                             "  Grade.csv\n"
                             "  train_1.bmp, train_1_anno.bmp ... train_85\n"
                             "  testA_1.bmp, testA_1_anno.bmp ... testA_60\n"
                             "  testB_1.bmp, testB_1_anno.bmp ... testB_20")
    mask_values: ClassVar[tuple[int, ...] | None] = None  # instance ids
    mask_threshold: ClassVar[int] = 0

    def __init__(self, root: Any = None, cache_dir: Any = None, *, test_set: str = "AB", **params: Any) -> None:
        if test_set not in ("A", "B", "AB"):
            raise DataError(f"dataset 'glas': test_set {test_set!r} not in A, B, AB")
        super().__init__(root, cache_dir, test_set=test_set, **params)
        self.test_set = test_set

    def find_sources(self) -> list[Source]:
        root = self.root_dir()
        nested = [p for p in root.iterdir() if p.is_dir() and (p / "Grade.csv").is_file()]
        base = nested[0] if nested and not (root / "Grade.csv").is_file() else root
        files = files_by_stem(base, (".bmp",))
        images = {k: p for k, p in files.items() if not k.endswith("_anno")}
        masks = {k.removesuffix("_anno"): p for k, p in files.items() if k.endswith("_anno")}
        patients = self._patients(base / "Grade.csv")
        keep = ("train", *(f"test{s}" for s in self.test_set))
        out = []
        for s in paired_sources(images, masks, self.name):
            prefix = s.case_id.split("_")[0]
            if prefix in keep:
                out.append(Source(s.case_id, s.files, "train" if prefix == "train" else "test",
                                  patients.get(s.case_id)))
        return out

    @staticmethod
    def _patients(grades: Path) -> dict[str, str]:
        """Image name -> patient from Grade.csv (name, patient ID, grades...), so a patient's images stay
        together when val is carved from train."""
        if not grades.is_file():
            return {}
        with open(grades, newline="", encoding="utf-8", errors="replace") as fh:
            return {row[0].strip(): f"patient{row[1].strip()}" for row in csv.reader(fh)
                    if len(row) >= 2 and row[1].strip().isdigit()}
