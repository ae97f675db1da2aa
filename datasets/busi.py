"""BUSI breast ultrasound: class folders, names with spaces and parentheses, extra masks ``_mask_1``."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from segarena.datasets.cached import Source
from segarena.datasets.photos import PairedImageDataset, files_by_stem
from segarena.datasets.validate import pair_by_id, require_dir
from segarena.platform.errors import DataError

CLASSES = ("benign", "malignant", "normal")
MASK = re.compile(r"^(?P<id>.+)_mask(?:_\d+)?$")


class BUSI(PairedImageDataset):
    name: ClassVar[str] = "busi"
    modality: ClassVar[str] = "breast ultrasound (B-mode)"
    licence: ClassVar[str] = "CC0 1.0 (Dataset_BUSI_with_GT); cite the paper"
    citation: ClassVar[str] = ("Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset of breast ultrasound images. "
                               "Data in Brief 28:104863, 2020.")
    description: ClassVar[str] = ("780 images in Dataset_BUSI_with_GT/{benign,malignant,normal}/ ('benign (1).png' "
                                  "+ 'benign (1)_mask.png' [+ '_mask_1.png', united]); normal images have empty "
                                  "masks; 3-channel grey is read as grey. include_normal: false drops them. Seeded "
                                  "split (no official one).")
    root_env: ClassVar[str | None] = "SEGARENA_BUSI_ROOT"
    download_url: ClassVar[str] = "https://scholar.cu.edu.eg/?q=afahmy/pages/dataset"
    layout: ClassVar[str] = ("<root>/Dataset_BUSI_with_GT/   (or the class folders directly under <root>)\n"
                             "  benign/     'benign (1).png', 'benign (1)_mask.png' [, 'benign (1)_mask_1.png']\n"
                             "  malignant/  'malignant (1).png', 'malignant (1)_mask.png'\n"
                             "  normal/     'normal (1).png', 'normal (1)_mask.png'")
    preprocessing: ClassVar[dict[str, Any]] = {"size": 64, "fit": "resize", "norm": "scale", "scale": 255.0,
                                               "channels": 1}

    def __init__(self, root: Any = None, cache_dir: Any = None, *, include_normal: bool = True,
                 **params: Any) -> None:
        super().__init__(root, cache_dir, include_normal=include_normal, **params)
        self.include_normal = bool(include_normal)

    def find_sources(self) -> list[Source]:
        root = self.root_dir()
        base = root / "Dataset_BUSI_with_GT" if (root / "Dataset_BUSI_with_GT").is_dir() else root
        if not any((base / c).is_dir() for c in CLASSES):
            raise DataError(f"dataset {self.name!r}: expected folders {CLASSES} under {base}")
        out = []
        for cls in CLASSES:
            if not (cls != "normal" or self.include_normal) or not (base / cls).is_dir():
                continue
            files = files_by_stem(require_dir(base / cls, self.name), (".png",))
            images = {k: p for k, p in files.items() if not MASK.match(k)}
            masks: dict[str, list] = {}
            for k, p in files.items():
                if m := MASK.match(k):
                    masks.setdefault(m["id"], []).append(p)
            first = {k: v[0] for k, v in masks.items()}
            for key, img, _ in pair_by_id(images, first, self.name):
                case_id = key.replace(" (", "_").replace(")", "").replace(" ", "_")
                out.append(Source(case_id, (img, *sorted(masks[key])), None))
        return out
