"""BTCV / Synapse multi-organ abdominal CT (TransUNet, SDSeg): RawData NIfTI, HU window, organ subset,
the Synapse 18/12 case lists as the official split, volumes scored with header spacing."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np

from segarena.datasets.cached import Source
from segarena.datasets.photos import files_by_stem
from segarena.datasets.validate import pair_by_id, require_dir
from segarena.datasets.volumes import SlicedVolumeDataset
from segarena.platform.errors import DataError

ORGANS = {"spleen": 1, "right_kidney": 2, "left_kidney": 3, "gallbladder": 4, "esophagus": 5, "liver": 6,
          "stomach": 7, "aorta": 8, "inferior_vena_cava": 9, "portal_splenic_veins": 10, "pancreas": 11,
          "right_adrenal": 12, "left_adrenal": 13}
SYNAPSE8 = ("aorta", "gallbladder", "left_kidney", "right_kidney", "liver", "pancreas", "spleen", "stomach")
SYNAPSE_TEST = {1, 2, 3, 4, 8, 22, 25, 29, 32, 35, 36, 38}  # TransUNet lists/lists_Synapse/test_vol.txt
SYNAPSE_TRAIN = {5, 6, 7, 9, 10, 21, 23, 24, 26, 27, 28, 30, 31, 33, 34, 37, 39, 40}  # train.txt cases


class BTCV(SlicedVolumeDataset):
    name: ClassVar[str] = "btcv"
    modality: ClassVar[str] = "abdominal CT (portal venous), 512x512xZ"
    licence: ClassVar[str] = "MICCAI 2015 Multi-Atlas Labeling Beyond the Cranial Vault terms (Synapse registration)"
    citation: ClassVar[str] = ("Landman B, Xu Z, Iglesias JE, Styner M, Langerak T, Klein A. MICCAI Multi-Atlas "
                               "Labeling Beyond the Cranial Vault - Workshop and Challenge, 2015; Chen J et al. "
                               "TransUNet, arXiv:2102.04306, 2021 (Synapse split).")
    description: ClassVar[str] = ("BTCV RawData/Training/{img/imgNNNN.nii.gz, label/labelNNNN.nii.gz}, labels "
                                  "0-13; organs 'synapse8' (TransUNet's 8), 'all' (13) or a list of names; HU "
                                  "window [-125, 275] -> [0, 1]; Synapse train/test case lists as the official "
                                  "split. Axial slices re-assembled per case before scoring.")
    root_env: ClassVar[str | None] = "SEGARENA_BTCV_ROOT"
    download_url: ClassVar[str] = "https://www.synapse.org/#!Synapse:syn3193805"
    layout: ClassVar[str] = ("<root>/RawData/   (or Training/ directly under <root>)\n"
                             "  Training/\n"
                             "    img/img0001.nii.gz ...\n"
                             "    label/label0001.nii.gz ...")
    label_values: ClassVar[tuple[int, ...]] = tuple(range(14))
    preprocessing: ClassVar[dict[str, Any]] = {"size": 64, "fit": "resize", "norm": "window",
                                               "window": (-125.0, 275.0), "channels": 1}

    def __init__(self, root: Any = None, cache_dir: Any = None, *, organs: str | list[str] = "synapse8",
                 **params: Any) -> None:
        names = SYNAPSE8 if organs == "synapse8" else tuple(ORGANS) if organs == "all" else tuple(organs)
        unknown = [n for n in names if n not in ORGANS]
        if unknown:
            raise DataError(f"dataset 'btcv': unknown organ(s) {unknown}; known: {sorted(ORGANS)}")
        super().__init__(root, cache_dir, organs=list(names), **params)
        self.organs = names

    def names(self) -> tuple[str, ...]:
        return self.organs

    def labels_to_masks(self, labels: np.ndarray) -> np.ndarray:
        return np.stack([labels == ORGANS[n] for n in self.organs])

    def find_sources(self) -> list[Source]:
        root = self.root_dir()
        raw = root / "RawData" if (root / "RawData").is_dir() else root
        train = require_dir(raw / "Training", self.name)
        images = {k.removeprefix("img"): p for k, p in _nii(require_dir(train / "img", self.name)).items()}
        labels = {k.removeprefix("label"): p for k, p in _nii(require_dir(train / "label", self.name)).items()}
        out = []
        for key, img, lab in pair_by_id(images, labels, self.name):
            number = int(re.sub(r"\D", "", key) or -1)
            subset = "test" if number in SYNAPSE_TEST else "train" if number in SYNAPSE_TRAIN else None
            out.append(Source(f"case{key}", (img, lab), subset, group=f"case{key}"))
        return out


def _nii(folder) -> dict:
    return {p.name[:-len(".nii.gz")]: p for p in files_by_stem(folder, (".gz",)).values()
            if p.name.endswith(".nii.gz")}
