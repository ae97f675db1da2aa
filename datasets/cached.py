"""Base class of file-backed datasets: discover sources, hash them, preprocess once, cache, split.

A subclass says where its files are (``find_sources``) and how one source becomes cases
(``read_source``); this class owns the content hash (file digests + preprocessing config),
the Parquet cache and the choice of split (official, blocks or seeded by patient).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from segarena.datasets.cache import CaseStore, FileDigests
from segarena.datasets.preprocess import Preprocess
from segarena.datasets.validate import require_root
from segarena.platform.dataset import (
    Case,
    DatasetPlugin,
    Split,
    block_split,
    grouped_random_split,
    official_split,
    stable_hash,
)
from segarena.platform.errors import DataError


@dataclass(frozen=True)
class Source:
    """One unit on disk: every file read for it (image first), its official subset and patient."""

    case_id: str
    files: tuple[Path, ...]
    subset: str | None = None
    group: str | None = None


class CachedDataset(DatasetPlugin):
    """``preprocessing``: the declared defaults (``Preprocess`` fields), overridable by params.
    ``split_mode``: ``official`` (release subsets, seeded grouped otherwise) or ``blocks``
    (single volume/image: contiguous blocks with ``block_gap`` left out)."""

    preprocessing: ClassVar[dict[str, Any]] = {}
    split_mode: ClassVar[str] = "official"
    block_gap: ClassVar[int] = 5
    needs_root: ClassVar[bool] = True

    def __init__(self, root: Any = None, cache_dir: Any = None, **params: Any) -> None:
        super().__init__(root, cache_dir, **params)
        self.prep = Preprocess.resolve(self.preprocessing, self.params)
        self._sources: list[Source] | None = None
        self._hash: str | None = None

    @classmethod
    def params_spec(cls) -> dict[str, Any]:
        """The constructor's params plus every ``Preprocess`` field (``size``, ``fit``, ``norm``, ...)."""
        prep = {f.name: cls.preprocessing.get(f.name, f.default) for f in fields(Preprocess)}
        return {**super().params_spec(), **prep}

    # what a subclass implements ------------------------------------------------------
    @abstractmethod
    def find_sources(self) -> list[Source]:
        """Every source unit, paired and validated for presence; ``DataError`` names what is missing."""

    @abstractmethod
    def read_source(self, source: Source) -> list[Case]:
        """Read, validate and preprocess one source into cases (one image, or slices/tiles)."""

    def block_position(self, case: Case) -> int:
        """Position along the blocked axis (``split_mode = "blocks"``)."""
        return int(case.slice_index or 0)

    # machinery -------------------------------------------------------------------------
    def root_dir(self) -> Path:
        """The dataset root, or a ``DataError`` saying how to give it."""
        return require_root(self.root, self.name, self.root_env)

    def sources(self) -> list[Source]:
        if self._sources is None:
            found = self.find_sources()
            if not found:
                raise DataError(f"dataset {self.name!r}: no image files found under {self.root}")
            self._sources = found
        return self._sources

    def config(self) -> dict[str, Any]:
        prep_keys = {f.name for f in fields(Preprocess)}
        return {"preprocess": self.prep.as_dict(),
                "params": {k: v for k, v in sorted(self.params.items()) if k not in prep_keys}}

    def content_hash(self) -> str:
        if self._hash is None:
            digests = FileDigests(self.cache_dir)
            files = sorted({f for s in self.sources() for f in s.files})
            entries = [(self._relative(f), digests.digest(f)) for f in files]
            digests.save()
            self._hash = stable_hash({"name": self.name, "version": self.version, "config": self.config(),
                                      "files": entries})
        return self._hash

    def _relative(self, file: Path) -> str:
        if self.root is not None:
            try:
                return file.resolve().relative_to(self.root.resolve()).as_posix()
            except ValueError:
                pass
        return file.name

    def load(self) -> list[Case]:
        store, key = CaseStore(self.cache_dir), self.content_hash()
        cached = store.read(self.name, key)
        if cached is not None:
            return cached
        cases = [c for s in self.sources() for c in self.read_source(s)]
        if not cases:
            raise DataError(f"dataset {self.name!r}: no cases left after filtering {len(self.sources())} "
                            f"source(s) under {self.root} with {self.config()}")
        ids = [c.case_id for c in cases]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise DataError(f"dataset {self.name!r}: case id {dup!r} occurs twice under {self.root}")
        store.write(self.name, key, cases, meta={"config": self.config(), "version": self.version})
        return cases

    def cache_status(self) -> str:
        try:
            key = self.content_hash()
        except DataError as exc:
            return f"unavailable: {exc}"
        store = CaseStore(self.cache_dir)
        return f"cached ({store.path(self.name, key)})" if store.has(self.name, key) else "not cached"

    def make_split(self, cases: Sequence[Case], seed: int) -> Split:
        if self.split_mode == "blocks":
            return block_split(cases, seed, gap=self.block_gap, key=self.block_position)
        if self.split_mode == "official":
            return official_split(cases, seed)
        return grouped_random_split(cases, seed)
