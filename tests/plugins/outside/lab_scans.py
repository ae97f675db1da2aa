"""A lab's dataset plugin exactly as the README's "Writing a dataset plugin" showed it before the platform
was split into stage folders (commit 4a8f956): tests/test_outside_plugin.py runs it unchanged from a
``--plugins`` folder. Do not edit it to follow the platform: it stands for code outside this repository."""

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from segarena.platform.dataset import Case, DatasetPlugin
from segarena.platform.errors import DataError
from segarena.platform.plugin import Task


class LabScans(DatasetPlugin):
    name, version = "lab-scans", "0.1.0"                    # name: ^[a-z0-9][a-z0-9_.-]*$
    modality, licence = "CT, axial slices", "internal (not redistributable)"
    citation = "Doe et al., Lab CT cohort, 2026"           # shown by `plugins list`, `datasets show`
    description = "Axial CT slices with a binary lesion mask, one folder per slice."
    root_env = "LAB_SCANS_ROOT"                             # the root when a suite gives no `path:`
    layout = ("<root>/\n"
              "  <patient>_<slice>/image.npy   (H, W) float\n"
              "  <patient>_<slice>/mask.npy    (H, W) 0/1")

    # keyword arguments = the suite's `params:` (anything else is refused, with a did-you-mean)
    def __init__(self, root=None, cache_dir=None, *, size: int = 64, **params):
        super().__init__(root, cache_dir, size=size, **params)
        self.size = int(size)

    def task(self) -> Task:                # cheap and data-free: the driver builds it to validate a suite
        return Task(in_channels=1, num_classes=1, image_size=(self.size, self.size), spacing=None,
                    class_names=("lesion",))

    def load(self) -> list[Case]:          # every case, preprocessed; DataError names what is wrong
        if self.root is None or not self.root.is_dir():
            raise DataError(f"dataset {self.name!r}: no folder {self.root} (give `path:` or {self.root_env})")
        cases = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if not (folder / "image.npy").is_file() or not (folder / "mask.npy").is_file():
                raise DataError(f"dataset {self.name!r}: {folder} lacks image.npy or mask.npy")
            image = torch.from_numpy(np.load(folder / "image.npy")).float()[None, None]
            mask = torch.from_numpy(np.load(folder / "mask.npy")).float()[None, None]
            image = F.interpolate(image, size=(self.size, self.size), mode="bilinear", antialias=True)[0]
            mask = F.interpolate(mask, size=(self.size, self.size), mode="nearest")[0] > 0.5
            image = (image - image.mean()) / (image.std() + 1e-6)
            cases.append(Case(case_id=folder.name, image=image, mask=mask,   # image (1,H,W), mask (C,H,W) bool
                              group=folder.name.split("_")[0]))               # a patient never straddles splits
        return cases

    def content_hash(self) -> str:         # identity of the data served: params + every file's bytes
        digest = hashlib.sha256(super().content_hash().encode())
        for f in sorted(self.root.glob("*/*.npy")) if self.root else []:
            digest.update(f.relative_to(self.root).as_posix().encode() + f.read_bytes())
        return digest.hexdigest()
