"""The dataset plugin contract: cases, the task they define, and a saved, seeded split."""

from __future__ import annotations

import inspect
import json
import os
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from segarena.platform.errors import DataError
from segarena.platform.paths import cache_root, inside
from segarena.platform.plugin import API_VERSION, Task
from segarena.platform.records import stable_hash


@dataclass(frozen=True)
class Case:
    """One scored unit: a 2D image, or one slice of a volume (``volume`` + ``slice_index``).

    image: (Cin, H, W) float32, already preprocessed. mask: (C, H, W) bool, one channel per
    foreground class. spacing: per-axis size in mm, (row, col) for 2D; a slice of a volume
    carries the volume's (row, col, slice) spacing. group: patient id, never split apart.
    """

    case_id: str
    image: torch.Tensor
    mask: torch.Tensor
    spacing: tuple[float, ...] | None = None
    group: str | None = None
    volume: str | None = None
    slice_index: int | None = None
    subset: str | None = None  # official split membership (train | val | test) where the release defines one


@dataclass(frozen=True)
class Split:
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    kind: str = "seeded"  # seeded | blocks | official

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "train": list(self.train), "val": list(self.val), "test": list(self.test)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Split:
        return cls(tuple(d["train"]), tuple(d["val"]), tuple(d["test"]), d.get("kind", "seeded"))


class DatasetPlugin(ABC):
    """Base class of every data source. Subclasses implement ``task`` and ``load``.

    ``params`` come from the suite (e.g. ``size: 64``, ``path: /data/isic``); a split is
    written once per (dataset fingerprint, seed) under ``cache_dir`` and reused after.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "0.1.0"
    modality: ClassVar[str] = ""
    licence: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""  # shown by `plugins list`; defaults to the citation
    notice: ClassVar[str] = ""  # the attribution the licence requires to be shown
    api_version: ClassVar[int] = API_VERSION
    root_env: ClassVar[str | None] = None  # environment variable giving the root folder
    download_url: ClassVar[str] = ""  # the official page to get the data from (`segarena datasets show`)
    layout: ClassVar[str] = ""  # the folder tree the loader expects under the root, as a short text tree

    def __init__(self, root: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 **params: Any) -> None:
        if root is None and params.get("path") is not None:  # a suite's `path:` is the root
            root = params.pop("path")
        params.pop("path", None)
        if root is None and self.root_env:
            root = os.environ.get(self.root_env)
        self.root = Path(root) if root is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
        self.params = params
        self._cases: list[Case] | None = None

    @abstractmethod
    def task(self) -> Task:
        """The task every case of this dataset poses."""

    @abstractmethod
    def load(self) -> list[Case]:
        """All cases, preprocessed; raise ``DataError`` naming the file on bad data."""

    def cases(self) -> list[Case]:
        if self._cases is None:
            self._cases = self.load()
            if not self._cases:
                raise DataError(f"dataset {self.name!r}: no cases found (root={self.root})")
        return self._cases

    @classmethod
    def params_spec(cls) -> dict[str, Any]:
        """The ``params`` a suite may give, with their defaults (``inspect.Parameter.empty`` = required):
        ``path`` and the keyword parameters of ``__init__`` along the class chain, down to the first
        ``__init__`` without ``**params``. A suite param not listed here is refused before anything runs;
        override (extending ``super().params_spec()``) to declare params read from ``self.params``."""
        spec: dict[str, Any] = {}
        for klass in cls.__mro__:
            if klass is object:
                break
            init = vars(klass).get("__init__")
            if init is None:
                continue
            parameters = list(inspect.signature(init).parameters.values())[1:]
            for p in parameters:
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in ("root", "cache_dir"):
                    spec.setdefault(p.name, p.default)
            if not any(p.kind is p.VAR_KEYWORD for p in parameters):
                break
        return {"path": None, **spec}

    @classmethod
    def card(cls) -> dict[str, str]:
        """What `segarena datasets show` prints: the dataset card."""
        return {"name": cls.name, "version": cls.version, "modality": cls.modality, "licence": cls.licence,
                "notice": cls.notice, "citation": cls.citation, "description": cls.description}

    def cache_status(self) -> str:
        """Whether preprocessed cases are cached; generated datasets are never cached."""
        return "not cached (generated in memory)"

    def content_hash(self) -> str:
        """Identity of the data actually served: override to hash source files."""
        return stable_hash({"name": self.name, "version": self.version, "params": self.params,
                            "root": str(self.root) if self.root else None})

    def make_split(self, cases: Sequence[Case], seed: int) -> Split:
        """Default: seeded 70/10/20 split over groups (patients), so no group straddles splits."""
        return grouped_random_split(cases, seed)

    def split(self, seed: int) -> Split:
        # checked like every path built from a name: it stays inside the cache, whatever the plugin calls itself
        path = inside(self.cache_dir / "splits", f"{self.name}-{self.content_hash()[:12]}-seed{seed}.json")
        if path.exists():
            return Split.from_dict(json.loads(path.read_text()))
        split = self.make_split(self.cases(), seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # unique: concurrent writers never collide
        tmp.write_text(json.dumps(split.as_dict(), indent=1))
        tmp.replace(path)
        return split


def grouped_random_split(cases: Sequence[Case], seed: int, fractions: tuple[float, float] = (0.7, 0.1)) -> Split:
    groups = sorted({c.group or c.volume or c.case_id for c in cases})
    random.Random(seed).shuffle(groups)
    n_train = max(1, round(fractions[0] * len(groups)))
    n_val = round(fractions[1] * len(groups)) if len(groups) > 2 else 0
    part = {g: 0 for g in groups[:n_train]} | {g: 1 for g in groups[n_train:n_train + n_val]}
    out: list[list[str]] = [[], [], []]
    for c in cases:
        out[part.get(c.group or c.volume or c.case_id, 2)].append(c.case_id)
    return Split(tuple(out[0]), tuple(out[1]), tuple(out[2]), "seeded")


def official_split(cases: Sequence[Case], seed: int, val_fraction: float = 0.1) -> Split:
    """The release's own train/test (and val, when it has one); a seeded, grouped val is carved
    out of train otherwise. Cases without ``subset`` fall back to ``grouped_random_split``."""
    if not any(c.subset == "test" for c in cases):
        return grouped_random_split(cases, seed)
    train = [c for c in cases if c.subset not in ("val", "test")]
    val = [c for c in cases if c.subset == "val"]
    if not val:
        inner = grouped_random_split(train, seed, (1 - val_fraction, 0.0))
        val_ids = set(inner.test)
        val = [c for c in train if c.case_id in val_ids]
        train = [c for c in train if c.case_id not in val_ids]
    test = [c for c in cases if c.subset == "test"]
    return Split(*(tuple(c.case_id for c in part) for part in (train, val, test)), "official")


def block_split(cases: Sequence[Case], seed: int, gap: int = 5, fractions: tuple[float, float] = (0.7, 0.1),
                key: Callable[[Case], int] | None = None) -> Split:
    """Contiguous blocks along one axis for a single volume/image: a seeded test block, a val block
    beside it, train elsewhere, and at least ``gap`` positions left out between any two parts, so
    neighbouring (near-identical) slices never sit on both sides. ``key`` gives a case's position
    (default: ``slice_index``)."""
    pos_of = key or (lambda c: int(c.slice_index if c.slice_index is not None else 0))
    positions = sorted({pos_of(c) for c in cases})
    n = len(positions)
    n_test = max(1, round((1 - sum(fractions)) * n))
    n_val = max(1, round(fractions[1] * n)) if fractions[1] > 0 else 0
    if n_test + n_val + 1 + 2 * (gap + 1) > n:
        raise DataError(f"block split: {n} positions cannot hold test {n_test} + val {n_val} + train with "
                        f"gaps of {gap}")
    rng = random.Random(seed)
    t0 = rng.randint(0, n - n_test)
    test = positions[t0:t0 + n_test]
    if t0 >= n - t0 - n_test:  # more room on the left: val goes there
        val = positions[max(0, t0 - gap - 1 - n_val):max(0, t0 - gap - 1)]
    else:
        val = positions[t0 + n_test + gap + 1:t0 + n_test + gap + 1 + n_val]

    def clear_of(p: int, block: list[int]) -> bool:
        return all(abs(p - q) > gap for q in block)

    val = [p for p in val if clear_of(p, test)]
    parts: dict[int, int] = {p: 2 for p in test} | {p: 1 for p in val}
    out: list[list[str]] = [[], [], []]
    for c in cases:
        p = pos_of(c)
        if p in parts:
            out[parts[p]].append(c.case_id)
        elif clear_of(p, test + val):
            out[0].append(c.case_id)
    return Split(tuple(out[0]), tuple(out[1]), tuple(out[2]), "blocks")

