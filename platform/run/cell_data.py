"""A cell's data: the dataset plugin instance, its task, split and cases, ready for training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from segarena.platform.dataset import Case, DatasetPlugin, Split
from segarena.platform.errors import DataError
from segarena.platform.plugin import Task
from segarena.platform.plugins.registry import Registry


@dataclass
class CellData:
    dataset: DatasetPlugin
    task: Task
    split: Split
    by_id: dict[str, Case]

    def cases(self, part: str) -> list[Case]:
        return [self.by_id[i] for i in getattr(self.split, part)]

    def train_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        cases = self.cases("train")
        return torch.stack([c.image for c in cases]), torch.stack([c.mask.float() for c in cases])


def open_dataset(registry: Registry, name: str, path: str | None, params: dict, cache_dir: Path) -> DatasetPlugin:
    cls = registry.dataset(name)
    try:
        return cls(root=path, cache_dir=cache_dir, **params)
    except TypeError as exc:
        raise DataError(f"dataset {name!r}: bad parameters {params}: {exc}") from exc


def load_cell_data(registry: Registry, name: str, path: str | None, params: dict, cache_dir: Path,
                   seed: int) -> CellData:
    dataset = open_dataset(registry, name, path, params, cache_dir)
    cases = dataset.cases()
    split = dataset.split(seed)
    by_id = {c.case_id: c for c in cases}
    missing = [i for part in (split.train, split.val, split.test) for i in part if i not in by_id]
    if missing:
        raise DataError(f"dataset {name!r}: split file lists unknown case ids, e.g. {missing[:3]}")
    if not split.train or not split.test:
        raise DataError(f"dataset {name!r}: split has {len(split.train)} train / {len(split.test)} test cases")
    return CellData(dataset, dataset.task(), split, by_id)
