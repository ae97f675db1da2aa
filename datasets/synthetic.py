"""Synthetic shapes: seeded discs, ellipses and squares of known geometry on noisy backgrounds.

The default for conformance tests and ``tiny`` runs: deterministic by ``seed``, no files. Shapes
come from MONAI's ``create_test_image_2d`` (ellipses) plus squares, with a textured background so
the task is not a plain threshold.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from monai.data.synthetic import create_test_image_2d

from segarena.platform.dataset import Case, DatasetPlugin
from segarena.platform.plugin import Task


class SyntheticShapes(DatasetPlugin):
    name: ClassVar[str] = "synthetic"
    version: ClassVar[str] = "0.1.0"
    modality: ClassVar[str] = "synthetic"
    licence: ClassVar[str] = "generated (no licence needed)"
    citation: ClassVar[str] = "MONAI create_test_image_2d (Cardoso et al., MONAI, arXiv 2211.02701)"
    description: ClassVar[str] = "Seeded bright ellipses and squares on smooth noise; binary foreground."

    def __init__(self, root: Any = None, cache_dir: Any = None, *, size: int = 64, n_cases: int = 48,
                 seed: int = 0, noise: float = 0.35, **params: Any) -> None:
        super().__init__(root, cache_dir, size=size, n_cases=n_cases, seed=seed, noise=noise, **params)
        self.size, self.n_cases, self.seed, self.noise = int(size), int(n_cases), int(seed), float(noise)

    def task(self) -> Task:
        return Task(in_channels=1, num_classes=1, image_size=(self.size, self.size), spacing=None,
                    class_names=("shape",))

    def load(self) -> list[Case]:
        rs = np.random.RandomState(self.seed)
        cases = []
        for i in range(self.n_cases):
            _img, seg = create_test_image_2d(self.size, self.size, num_objs=int(rs.randint(1, 4)),
                                            rad_max=max(4, self.size // 6), rad_min=max(2, self.size // 16),
                                            noise_max=0.0, num_seg_classes=1, random_state=rs)
            seg = seg > 0
            if rs.rand() < 0.5:  # add a square so shapes differ in curvature
                s = int(rs.randint(self.size // 10, self.size // 5))
                y, x = rs.randint(0, self.size - s, size=2)
                seg[y:y + s, x:x + s] = True
            contrast = 0.5 + 0.5 * rs.rand()
            image = contrast * seg + self.noise * rs.randn(self.size, self.size)
            image = (image - image.mean()) / (image.std() + 1e-6)
            cases.append(Case(case_id=f"synthetic_{i:03d}", image=torch.from_numpy(image[None].astype(np.float32)),
                              mask=torch.from_numpy(seg[None].copy())))
        return cases
