"""Preprocessed cases cached as Parquet shards keyed by a content hash, and memoised file digests.

A cache entry is a folder ``<cache_dir>/cases/<name>-<key16>/`` with ``part-*.parquet`` and a
``manifest.json`` written last; it is built in a temporary sibling folder and renamed into place,
so a failure (or a kill) never leaves a partial entry that a later run would read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from segarena.platform.dataset import Case
from segarena.platform.paths import inside

SHARD_CASES = 256
SCHEMA = pa.schema([
    ("case_id", pa.string()), ("image", pa.binary()), ("image_shape", pa.list_(pa.int32())),
    ("mask", pa.binary()), ("mask_shape", pa.list_(pa.int32())), ("spacing", pa.list_(pa.float64())),
    ("group", pa.string()), ("volume", pa.string()), ("slice_index", pa.int32()), ("subset", pa.string()),
])


class CaseStore:
    """Read and atomically write preprocessed cases for (dataset name, content hash)."""

    def __init__(self, cache_dir: Path) -> None:
        self.root = Path(cache_dir) / "cases"

    def path(self, name: str, key: str) -> Path:
        return inside(self.root, f"{name}-{key[:16]}")  # a plugin's name never climbs out of the cache

    def has(self, name: str, key: str) -> bool:
        return (self.path(name, key) / "manifest.json").is_file()

    def read(self, name: str, key: str) -> list[Case] | None:
        folder = self.path(name, key)
        if not self.has(name, key):
            return None
        manifest = json.loads((folder / "manifest.json").read_text())
        cases = [c for shard in manifest["shards"] for c in _rows_to_cases(pq.read_table(folder / shard))]
        return cases if len(cases) == manifest["n_cases"] else None

    def write(self, name: str, key: str, cases: Sequence[Case], meta: dict | None = None) -> Path:
        final = self.path(name, key)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            shards = []
            for i in range(0, len(cases), SHARD_CASES):
                shard = f"part-{i // SHARD_CASES:05d}.parquet"
                pq.write_table(_cases_to_table(cases[i:i + SHARD_CASES]), tmp / shard, compression="zstd")
                shards.append(shard)
            manifest = {"name": name, "key": key, "n_cases": len(cases), "shards": shards, **(meta or {})}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
            try:
                os.rename(tmp, final)
            except OSError:  # another process finished the same entry first: keep theirs
                if not self.has(name, key):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final


def _cases_to_table(cases: Sequence[Case]) -> pa.Table:
    cols: dict[str, list] = {f.name: [] for f in SCHEMA}
    for c in cases:
        image = c.image.detach().cpu().numpy().astype(np.float32, copy=False)
        mask = c.mask.detach().cpu().numpy().astype(bool, copy=False)
        cols["case_id"].append(c.case_id)
        cols["image"].append(image.tobytes())
        cols["image_shape"].append(list(image.shape))
        cols["mask"].append(np.packbits(mask.ravel()).tobytes())
        cols["mask_shape"].append(list(mask.shape))
        cols["spacing"].append(list(c.spacing) if c.spacing is not None else None)
        cols["group"].append(c.group)
        cols["volume"].append(c.volume)
        cols["slice_index"].append(c.slice_index)
        cols["subset"].append(c.subset)
    return pa.table(cols, schema=SCHEMA)


def _rows_to_cases(table: pa.Table) -> list[Case]:
    out = []
    for row in table.to_pylist():
        ishape, mshape = tuple(row["image_shape"]), tuple(row["mask_shape"])
        image = np.frombuffer(row["image"], dtype=np.float32).reshape(ishape).copy()
        mask = np.unpackbits(np.frombuffer(row["mask"], dtype=np.uint8), count=int(np.prod(mshape)))
        out.append(Case(case_id=row["case_id"], image=torch.from_numpy(image),
                        mask=torch.from_numpy(mask.reshape(mshape).astype(bool)),
                        spacing=tuple(row["spacing"]) if row["spacing"] is not None else None,
                        group=row["group"], volume=row["volume"], slice_index=row["slice_index"],
                        subset=row["subset"]))
    return out


class FileDigests:
    """SHA-256 of file contents, memoised by (path, size, mtime) in ``<cache_dir>/file-digests.json``
    (git-index style): the first run reads every source file once, later runs only stat them, and
    the hash stays identical across machines holding identical files."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = Path(cache_dir) / "file-digests.json"
        try:
            self._memo: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._memo = {}
        self._dirty = False

    def digest(self, file: Path) -> str:
        st = file.stat()
        key = str(file.resolve())
        hit = self._memo.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        h = hashlib.sha256()
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        self._memo[key] = [st.st_size, st.st_mtime_ns, h.hexdigest()]
        self._dirty = True
        return h.hexdigest()

    def save(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps(self._memo))
        tmp.replace(self.path)
        self._dirty = False
