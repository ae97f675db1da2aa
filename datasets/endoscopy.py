"""Colonoscopy polyp segmentation (SDSeg): Kvasir-SEG and CVC-ClinicDB in their released layouts."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, ClassVar

from segarena.datasets.cached import Source
from segarena.datasets.photos import PairedImageDataset, files_by_stem, paired_sources
from segarena.datasets.validate import require_dir
from segarena.platform.errors import DataError

ENDOSCOPY = "colonoscopy video frames (RGB)"


def _inside(root: Path, name: str) -> Path:
    """Accept the release folder itself or its parent as the root."""
    return root / name if (root / name).is_dir() else root


class KvasirSEG(PairedImageDataset):
    name: ClassVar[str] = "kvasir-seg"
    modality: ClassVar[str] = ENDOSCOPY
    licence: ClassVar[str] = "Kvasir-SEG terms: research and educational use, cite the paper"
    citation: ClassVar[str] = ("Jha D et al. Kvasir-SEG: a segmented polyp dataset. MMM 2020, LNCS 11962:451-462.")
    description: ClassVar[str] = ("1000 polyp images Kvasir-SEG/images/<id>.jpg with masks/<id>.jpg (JPEG masks, "
                                  "binarised at > 128; lossy, so no label-set check). No official split: seeded.")
    root_env: ClassVar[str | None] = "SEGARENA_KVASIR_ROOT"
    download_url: ClassVar[str] = "https://datasets.simula.no/kvasir-seg/"
    layout: ClassVar[str] = ("<root>/Kvasir-SEG/   (or images/ and masks/ directly under <root>)\n"
                             "  images/<id>.jpg\n"
                             "  masks/<id>.jpg")
    mask_values: ClassVar[tuple[int, ...] | None] = None
    mask_threshold: ClassVar[int] = 128

    def find_sources(self) -> list[Source]:
        base = _inside(self.root_dir(), "Kvasir-SEG")
        images = files_by_stem(require_dir(base / "images", self.name), (".jpg", ".jpeg", ".png"))
        masks = files_by_stem(require_dir(base / "masks", self.name), (".jpg", ".jpeg", ".png"))
        return paired_sources(images, masks, self.name)


class CVCClinicDB(PairedImageDataset):
    name: ClassVar[str] = "cvc-clinicdb"
    modality: ClassVar[str] = ENDOSCOPY
    licence: ClassVar[str] = "CVC-ClinicDB terms: research use, cite the paper"
    citation: ClassVar[str] = ("Bernal J, Sanchez FJ, Fernandez-Esparrach G, Gil D, Rodriguez C, Vilarino F. "
                               "WM-DOVA maps for accurate polyp highlighting in colonoscopy. Comput Med Imaging "
                               "Graph 43:99-111, 2015.")
    description: ClassVar[str] = ("612 frames from 29 sequences: Original/N.tif + 'Ground Truth'/N.tif, or the PNG "
                                  "re-release PNG/{Original,Ground Truth}/N.png; masks binarised at > 127. Frames of "
                                  "one sequence are near-duplicates: give sequences: <csv of frame,sequence> to "
                                  "group them; without it each frame is its own group (leaky, flagged here).")
    root_env: ClassVar[str | None] = "SEGARENA_CVC_ROOT"
    download_url: ClassVar[str] = "https://polyp.grand-challenge.org/CVCClinicDB/"
    layout: ClassVar[str] = ("<root>/CVC-ClinicDB/   (or the folders directly under <root>)\n"
                             "  Original/1.tif ...        or  PNG/Original/1.png ...\n"
                             "  Ground Truth/1.tif ...        PNG/Ground Truth/1.png ...")
    mask_values: ClassVar[tuple[int, ...] | None] = None

    def __init__(self, root: Any = None, cache_dir: Any = None, *, sequences: str | None = None,
                 **params: Any) -> None:
        super().__init__(root, cache_dir, sequences=sequences, **params)
        self.sequences = Path(sequences) if sequences else None

    def find_sources(self) -> list[Source]:
        base = _inside(self.root_dir(), "CVC-ClinicDB")
        base = base / "PNG" if (base / "PNG").is_dir() else base
        images = files_by_stem(require_dir(base / "Original", self.name), (".tif", ".tiff", ".png"))
        masks = files_by_stem(require_dir(base / "Ground Truth", self.name), (".tif", ".tiff", ".png"))
        groups = self._sequence_map()
        return [Source(s.case_id, s.files, None, groups.get(s.case_id))
                for s in paired_sources(images, masks, self.name)]

    def _sequence_map(self) -> dict[str, str]:
        if self.sequences is None:
            return {}
        if not self.sequences.is_file():
            raise DataError(f"dataset {self.name!r}: sequence map {self.sequences} does not exist")
        with open(self.sequences, newline="") as fh:
            return {row[0].strip(): f"seq{row[1].strip()}" for row in csv.reader(fh)
                    if len(row) >= 2 and row[0].strip().isdigit()}
