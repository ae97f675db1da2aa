"""BraTS 2021 glioma segmentation: NIfTI volumes, labels 0/1/2/4, served as slices and scored as volumes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segarena.datasets.cached import Source
from segarena.datasets.volumes import SlicedVolumeDataset
from segarena.platform.errors import DataError

MODALITIES = ("flair", "t1", "t1ce", "t2")
# target -> (class names, labels of each class); WT/TC/ET are nested regions
TARGETS: dict[str, tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]] = {
    "wt": (("whole_tumour",), ((1, 2, 4),)),
    "tc": (("tumour_core",), ((1, 4),)),
    "et": (("enhancing_tumour",), ((4,),)),
    "regions": (("whole_tumour", "tumour_core", "enhancing_tumour"), ((1, 2, 4), (1, 4), (4,))),
}
NII = ".nii.gz"


def modality_of(path: Path) -> str:
    """The last ``_`` token before ``.nii.gz``: works for 2021 (``BraTS2021_00000_flair``) and 2020 names."""
    return path.name[:-len(NII)].rsplit("_", 1)[-1].lower()


class BraTS2021(SlicedVolumeDataset):
    name: ClassVar[str] = "brats2021"
    modality: ClassVar[str] = "MRI (FLAIR, T1, T1ce, T2), skull-stripped, 1 mm, 240x240x155"
    licence: ClassVar[str] = "BraTS 2021 data use agreement (Synapse registration; cite the papers)"
    citation: ClassVar[str] = ("Baid U et al. The RSNA-ASNR-MICCAI BraTS 2021 benchmark on brain tumor segmentation "
                               "and radiogenomic classification. arXiv:2107.02314, 2021; Menze BH et al., IEEE TMI "
                               "34(10):1993-2024, 2015; Bakas S et al., Sci Data 4:170117, 2017.")
    description: ClassVar[str] = ("BraTS 2021 training cases (BraTS2021_Training_Data/BraTS2021_NNNNN/"
                                  "BraTS2021_NNNNN_{flair,t1,t1ce,t2,seg}.nii.gz); seg 0 / 1 NCR / 2 ED / 4 ET (a 3 "
                                  "is rejected: BraTS 2023 numbering). target wt (MedSegDiff), tc, et or regions "
                                  "(WT, TC, ET). Axial slices, re-assembled per case before scoring; seeded split "
                                  "by patient (validation cases have no seg).")
    root_env: ClassVar[str | None] = "SEGARENA_BRATS2021_ROOT"
    download_url: ClassVar[str] = "https://www.synapse.org/#!Synapse:syn25829067"
    layout: ClassVar[str] = ("<root>/BraTS2021_Training_Data/   (or the case folders directly under <root>)\n"
                             "  BraTS2021_00000/\n"
                             "    BraTS2021_00000_flair.nii.gz\n"
                             "    BraTS2021_00000_t1.nii.gz\n"
                             "    BraTS2021_00000_t1ce.nii.gz\n"
                             "    BraTS2021_00000_t2.nii.gz\n"
                             "    BraTS2021_00000_seg.nii.gz")
    label_values: ClassVar[tuple[int, ...]] = (0, 1, 2, 4)
    exclusive: ClassVar[bool] = False
    preprocessing: ClassVar[dict[str, Any]] = {"size": 64, "fit": "resize", "norm": "zscore_nonzero", "channels": 4}

    def __init__(self, root: Any = None, cache_dir: Any = None, *, target: str = "wt",
                 modalities: tuple[str, ...] | list[str] = MODALITIES, **params: Any) -> None:
        modalities = tuple(m.lower() for m in modalities)
        super().__init__(root, cache_dir, target=target, modalities=modalities, channels=len(modalities), **params)
        if target not in TARGETS:
            raise DataError(f"dataset {self.name!r}: target {target!r} not in {sorted(TARGETS)}")
        self.target, self.modalities = target, modalities

    def names(self) -> tuple[str, ...]:
        return TARGETS[self.target][0]

    def labels_to_masks(self, labels: np.ndarray) -> np.ndarray:
        return np.stack([np.isin(labels, region) for region in TARGETS[self.target][1]])

    def find_sources(self) -> list[Source]:
        root = self.root_dir()
        base = root / "BraTS2021_Training_Data" if (root / "BraTS2021_Training_Data").is_dir() else root
        cases = sorted(p for p in base.iterdir() if p.is_dir() and re.match(r"BraTS\d*_", p.name))
        out = []
        for case in cases:
            files = {modality_of(p): p for p in case.glob(f"*{NII}")}
            seg = files.get("seg")
            present = [m for m in self.modalities if m in files]
            if seg is None:
                shown = files[present[0]] if present else case
                raise DataError(f"dataset {self.name!r}: image {shown} has no mask ({case.name}_seg{NII} missing)")
            if len(present) < len(self.modalities):
                missing = next(m for m in self.modalities if m not in files)
                if not present:
                    raise DataError(f"dataset {self.name!r}: mask {seg} has no image ({case.name}_{missing}{NII} "
                                    f"missing)")
                raise DataError(f"dataset {self.name!r}: {case / f'{case.name}_{missing}{NII}'} is missing")
            out.append(Source(case.name, (*(files[m] for m in self.modalities), seg), group=case.name))
        if not out:
            raise DataError(f"dataset {self.name!r}: no BraTS case folders (BraTS2021_NNNNN/) under {base}")
        return out
