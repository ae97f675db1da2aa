"""Real brain MRI that installs offline: the MNI152 2009 template (nilearn wheel) and Colin27
(Debian mricron-data). One subject each, served as slices of one volume with a block split.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segarena.datasets.cached import CachedDataset, Source
from segarena.datasets.readers import read_nifti
from segarena.datasets.validate import check_finite
from segarena.datasets.volumes import plane_axis, volume_slices
from segarena.platform.dataset import Case
from segarena.platform.errors import DataError
from segarena.platform.plugin import Task

ONE_SUBJECT = ("One volume of one (average) subject: neighbouring slices are strongly correlated, so the "
               "split is by contiguous slice blocks with >= 5 slices left out between train, val and test. "
               "A smoke and regression benchmark on real anatomy, not a measure of generalisation.")
MNI_NOTICE = ("MNI ICBM 2009a template: Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, "
              "Montreal Neurological Institute, McGill University. Permission to use, copy, modify, and distribute "
              "this software and its documentation for any purpose and without fee is hereby granted, provided that "
              "the above copyright notice appear in all copies. The authors and McGill University make no "
              "representations about the suitability of this software for any purpose. It is provided \"as is\" "
              "without express or implied warranty.")
BRAIN_PREPROCESSING: dict[str, Any] = {"size": 64, "fit": "pad_resize", "pad_to": 256, "norm": "minmax", "channels": 1}


class _SingleVolume(CachedDataset):
    """Shared by the template datasets: slices along ``plane`` whose brain covers >= ``min_brain``
    of the native slice (MNI152: 136 axial, 170 coronal, 137 sagittal; Colin27: 134 axial)."""

    split_mode: ClassVar[str] = "blocks"
    preprocessing: ClassVar[dict[str, Any]] = BRAIN_PREPROCESSING
    files: ClassVar[tuple[str, ...]]
    class_names: ClassVar[tuple[str, ...]]
    exclusive: ClassVar[bool] = True

    def __init__(self, root: Any = None, cache_dir: Any = None, *, plane: str = "axial", min_brain: float = 0.05,
                 **params: Any) -> None:
        super().__init__(root, cache_dir, plane=plane, min_brain=min_brain, **params)
        self.axis, self.min_brain = plane_axis(plane), float(min_brain)

    def task(self) -> Task:
        return Task(in_channels=1, num_classes=len(self.class_names), image_size=(self.prep.size, self.prep.size),
                    spacing=(256 / self.prep.size, 256 / self.prep.size), class_names=self.class_names,
                    exclusive=self.exclusive)

    def default_folder(self) -> Path | None:
        """Where the installed package keeps the files (None when it is not installed)."""
        return None

    def missing_message(self) -> str:
        raise NotImplementedError

    def find_sources(self) -> list[Source]:
        folder = self.root or self.default_folder()
        if folder is None or not all((folder / f).is_file() for f in self.files):
            if self.root is None:
                raise DataError(self.missing_message())
            missing = next(folder / f for f in self.files if not (folder / f).is_file())
            raise DataError(f"dataset {self.name!r}: {missing} is missing")
        return [Source(self.volume_id, tuple(folder / f for f in self.files))]

    volume_id: ClassVar[str]

    def read_volumes(self, source: Source) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, ...]]:
        """(image (1,X,Y,Z), mask (K,X,Y,Z) bool, brain (X,Y,Z) bool, zooms)."""
        raise NotImplementedError

    def read_source(self, source: Source) -> list[Case]:
        image, mask, brain, zooms = self.read_volumes(source)
        brain_frac = brain.mean(axis=tuple(a for a in range(3) if a != self.axis))
        return volume_slices(source, image, mask, zooms, self.prep, axis=self.axis,
                             keep=lambda z: bool(brain_frac[z] >= self.min_brain), score_as_volume=False)


def _read_checked(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    data, zooms = read_nifti(path)
    check_finite(data, path)
    return data, zooms


def nilearn_data_folder() -> Path | None:
    """nilearn's bundled data folder, located without importing nilearn (it pulls scikit-learn)."""
    spec = importlib.util.find_spec("nilearn")
    return Path(spec.origin).parent / "datasets" / "data" if spec and spec.origin else None


class MNI152GreyMatter(_SingleVolume):
    name: ClassVar[str] = "mni152-gm"
    version: ClassVar[str] = "0.3.0"
    modality: ClassVar[str] = "MRI T1 (skull-stripped template), 1 mm"
    licence: ClassVar[str] = "nilearn BSD-3-Clause; MNI ICBM 2009 template notice (permissive, attribution)"
    notice: ClassVar[str] = MNI_NOTICE
    citation: ClassVar[str] = ("Fonov V, Evans AC, Botteron K, et al. Unbiased average age-appropriate atlases for "
                               "pediatric studies. NeuroImage 54(1):313-327, 2011; Fonov et al., NeuroImage 47:S102, "
                               "2009 (MNI ICBM152 2009a nonlinear symmetric).")
    description: ClassVar[str] = ("Grey matter on axial slices of the MNI ICBM152 2009a symmetric T1 template shipped "
                                  "in the nilearn wheel: mask = GM probability > gm_threshold (default 0.5). The "
                                  "masks are a 152-subject average, not manual labels. " + ONE_SUBJECT)
    files: ClassVar[tuple[str, ...]] = tuple(f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz"
                                             for k in ("t1", "gm", "wm"))
    class_names: ClassVar[tuple[str, ...]] = ("grey_matter",)
    volume_id: ClassVar[str] = "mni152"
    root_env: ClassVar[str | None] = "SEGARENA_MNI152_ROOT"
    download_url: ClassVar[str] = "https://nist.mni.mcgill.ca/icbm-152-nonlinear-atlases-2009/"
    layout: ClassVar[str] = ("<root>/   (default: the nilearn wheel's nilearn/datasets/data/)\n"
                             "  mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz\n"
                             "  mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz\n"
                             "  mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")

    def __init__(self, root: Any = None, cache_dir: Any = None, *, gm_threshold: float = 0.5, **params: Any) -> None:
        super().__init__(root, cache_dir, gm_threshold=gm_threshold, **params)
        self.gm_threshold = float(gm_threshold)

    def default_folder(self) -> Path | None:
        return nilearn_data_folder()

    def missing_message(self) -> str:
        return (f"dataset {self.name!r} reads the MNI152 template bundled in the nilearn wheel, which is not "
                f"installed: run `pip install nilearn==0.14.1`, or give `path:` a folder holding {self.files}")

    def tissue_masks(self, gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
        return (gm > self.gm_threshold)[None]

    def read_volumes(self, source: Source) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, ...]]:
        (t1, zooms), (gm, _), (wm, _) = (_read_checked(f) for f in source.files)
        if not (t1.shape == gm.shape == wm.shape):
            raise DataError(f"{source.files[1]}: grid {gm.shape} differs from {source.files[0].name} {t1.shape}")
        brain = t1 / max(float(t1.max()), 1e-6) > 0.2  # nilearn's brain-mask rule
        return t1[None], self.tissue_masks(gm / 255.0, wm / 255.0), brain, zooms


class MNI152Tissue(MNI152GreyMatter):
    name: ClassVar[str] = "mni152-tissue"
    description: ClassVar[str] = ("Grey and white matter (3 classes with background) on axial slices of the MNI "
                                  "ICBM152 2009a template from the nilearn wheel: GM where gm >= wm and gm > 0.2, WM "
                                  "where wm > gm and wm > 0.2. Average-subject probability maps, not manual "
                                  "labels. " + ONE_SUBJECT)
    class_names: ClassVar[tuple[str, ...]] = ("grey_matter", "white_matter")

    def __init__(self, root: Any = None, cache_dir: Any = None, *, tissue_threshold: float = 0.2,
                 **params: Any) -> None:
        super().__init__(root, cache_dir, tissue_threshold=tissue_threshold, **params)
        self.tissue_threshold = float(tissue_threshold)

    def tissue_masks(self, gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
        t = self.tissue_threshold
        return np.stack([(gm >= wm) & (gm > t), (wm > gm) & (wm > t)])


MRICRON_TEMPLATES = Path("/usr/share/mricron/templates")


class Colin27Brain(_SingleVolume):
    name: ClassVar[str] = "colin27-brain"
    version: ClassVar[str] = "0.2.0"
    modality: ClassVar[str] = "MRI T1 with skull (Colin27, 27-scan average), 1 mm"
    licence: ClassVar[str] = ("BSD-3-Clause (Debian mricron-data, C. Rorden); Colin27 under the MNI permissive "
                              "notice")
    notice: ClassVar[str] = MNI_NOTICE.replace("MNI ICBM 2009a template", "Colin27 (ch2) template")
    citation: ClassVar[str] = ("Holmes CJ, Hoge R, Collins L, Woods R, Toga AW, Evans AC. Enhancement of MR images "
                               "using registration for signal averaging. J Comput Assist Tomogr 22(2):324-333, "
                               "1998; brain mask by BET: Smith SM, Hum Brain Mapp 17(3):143-155, 2002.")
    description: ClassVar[str] = ("Brain extraction: the Colin27 T1 head scan with skull (ch2.nii.gz) as image, its "
                                  "skull-stripped twin (ch2bet.nii.gz, identical inside the brain) > 0 as mask; "
                                  "axial slices with brain >= 5%. The mask is BET output (automatic, curated), not "
                                  "a manual label. " + ONE_SUBJECT)
    files: ClassVar[tuple[str, ...]] = ("ch2.nii.gz", "ch2bet.nii.gz")
    class_names: ClassVar[tuple[str, ...]] = ("brain",)
    volume_id: ClassVar[str] = "colin27"
    root_env: ClassVar[str | None] = "SEGARENA_COLIN27_ROOT"
    download_url: ClassVar[str] = "https://packages.debian.org/bookworm/mricron-data"
    layout: ClassVar[str] = ("<root>/   (default: /usr/share/mricron/templates/ from `apt-get install mricron-data`)\n"
                             "  ch2.nii.gz       T1 with skull (image)\n"
                             "  ch2bet.nii.gz    skull-stripped twin (mask = > 0)")

    def default_folder(self) -> Path | None:
        return MRICRON_TEMPLATES

    def missing_message(self) -> str:
        return (f"dataset {self.name!r} needs ch2.nii.gz and ch2bet.nii.gz from the Debian package mricron-data, "
                f"not found in {MRICRON_TEMPLATES}: install it with `sudo apt-get install -y mricron-data` "
                f"(Debian/Ubuntu), or give `path:` (or ${self.root_env}) a folder holding both files")

    def read_volumes(self, source: Source) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, ...]]:
        (head, zooms), (bet, _) = (_read_checked(f) for f in source.files)
        if head.shape != bet.shape:
            raise DataError(f"{source.files[1]}: grid {bet.shape} differs from {source.files[0].name} {head.shape}")
        brain = bet > 0
        return head[None], brain[None], brain, zooms
