"""DDTI thyroid nodules (MedSegDiff) in its image/mask re-releases (TN-SCUI style and TUD re-split)."""

from __future__ import annotations

from typing import Any, ClassVar

from segarena.datasets.cached import Source
from segarena.datasets.photos import PairedImageDataset, files_by_stem, paired_sources
from segarena.datasets.validate import require_dir
from segarena.platform.errors import DataError


class DDTI(PairedImageDataset):
    name: ClassVar[str] = "ddti"
    modality: ClassVar[str] = "thyroid ultrasound (B-mode)"
    licence: ClassVar[str] = "DDTI terms (Universidad Nacional de Colombia; research use, cite)"
    citation: ClassVar[str] = ("Pedraza L, Vargas C, Narvaez F, Duran O, Munoz E, Romero E. An open access thyroid "
                               "ultrasound image database. Proc SPIE 9287, 2015.")
    description: ClassVar[str] = ("DDTI thyroid nodules from the image/mask re-releases: TN-SCUI style image/*.PNG + "
                                  "mask/*.PNG, or the TUD re-split DDTI/images/{training,test} + DDTI/annotations/"
                                  "{training,test} (labels 0/1, official). Folder names are parameters (image_dir, "
                                  "mask_dir). Masks 0/1 or 0/255, binarised > 0. The original XML-polygon release "
                                  "is not read.")
    root_env: ClassVar[str | None] = "SEGARENA_DDTI_ROOT"
    download_url: ClassVar[str] = "http://cimalab.unal.edu.co/applications/thyroid/"
    layout: ClassVar[str] = ("<root>/[DDTI/]   either\n"
                             "  image/<id>.PNG + mask/<id>.PNG                        (TN-SCUI style)\n"
                             "or\n"
                             "  images/{training,test}/<id>.* + annotations/{training,test}/<id>.*   (TUD re-split)")
    mask_values: ClassVar[tuple[int, ...] | None] = (0, 1, 255)
    mask_threshold: ClassVar[int] = 0
    preprocessing: ClassVar[dict[str, Any]] = {"size": 64, "fit": "resize", "norm": "scale", "scale": 255.0,
                                               "channels": 1}

    def __init__(self, root: Any = None, cache_dir: Any = None, *, image_dir: str | None = None,
                 mask_dir: str | None = None, **params: Any) -> None:
        super().__init__(root, cache_dir, image_dir=image_dir, mask_dir=mask_dir, **params)
        self.image_dir, self.mask_dir = image_dir, mask_dir

    def find_sources(self) -> list[Source]:
        root = self.root_dir()
        base = root / "DDTI" if (root / "DDTI").is_dir() else root
        image_dir = self.image_dir or ("images" if (base / "images").is_dir() else "image")
        mask_dir = self.mask_dir or ("annotations" if (base / "annotations").is_dir() else "mask")
        images, masks = require_dir(base / image_dir, self.name), require_dir(base / mask_dir, self.name)
        splits = [(sub, subset) for sub, subset in (("training", "train"), ("test", "test")) if (images / sub).is_dir()]
        if not splits:
            return paired_sources(files_by_stem(images), files_by_stem(masks), self.name)
        out = []
        for sub, subset in splits:
            out += paired_sources(files_by_stem(images / sub), files_by_stem(require_dir(masks / sub, self.name)),
                                  self.name, subset)
        if not out:
            raise DataError(f"dataset {self.name!r}: no images under {images}")
        return out
