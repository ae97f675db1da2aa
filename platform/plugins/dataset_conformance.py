"""The shared conformance checks every dataset plugin passes (the dataset twin of ``conformance.py``).

Built-in datasets' tests subclass ``DatasetConformance`` and set ``dataset_cls`` and ``params``
(override ``dataset_params()`` when params need a generated fixture). ``run_dataset_checks``
runs the same checks outside pytest. Each check is a plain method using ``assert``.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch

from segarena.platform.dataset import Case, DatasetPlugin, Split
from segarena.platform.plugin import API_VERSION, Task
from segarena.platform.plugins.conformance import CheckResult, run_check_class, skip_check


class DatasetConformance:
    """Subclass and set ``dataset_cls`` and ``params`` (constructor kwargs, e.g. ``root``, ``size``)."""

    dataset_cls: ClassVar[type[DatasetPlugin]]
    params: ClassVar[dict[str, Any]] = {}
    seed: ClassVar[int] = 0
    min_gap: ClassVar[int] = 5  # block splits: positions left out between parts (slices)

    # helpers -------------------------------------------------------------------------
    def dataset_params(self) -> dict[str, Any]:
        return dict(self.params)

    def cache_dir(self) -> Path:
        """One temporary cache per test class, so cases are built once and read from cache after."""
        cls = type(self)
        if "_cache_dir" not in vars(cls):
            cls._cache_dir = Path(tempfile.mkdtemp(prefix=f"segarena-dsconf-{self.dataset_cls.__name__}-"))
        return cls._cache_dir

    def make(self, cache_dir: Path | None = None, **overrides: Any) -> DatasetPlugin:
        return self.dataset_cls(cache_dir=cache_dir or self.cache_dir(), **{**self.dataset_params(), **overrides})

    def loaded(self) -> tuple[DatasetPlugin, list[Case]]:
        cls = type(self)
        if "_loaded" not in vars(cls):
            ds = self.make()
            cls._loaded = (ds, ds.cases())
        return cls._loaded

    # checks --------------------------------------------------------------------------
    def test_metadata(self) -> None:
        cls = self.dataset_cls
        for attr in ("name", "version", "modality", "licence", "citation", "description"):
            value = getattr(cls, attr, None)
            assert isinstance(value, str) and value.strip(), f"{attr} missing"
        assert cls.api_version == API_VERSION, f"api_version {cls.api_version} != {API_VERSION}"
        card = cls.card()
        assert card["name"] == cls.name and card["licence"], "card() incomplete"

    def test_task_matches_cases(self) -> None:
        ds, cases = self.loaded()
        task = ds.task()
        assert isinstance(task, Task)
        assert task.num_classes >= 1 and task.in_channels >= 1
        assert len(task.class_names) in (0, task.num_classes), "class_names do not match num_classes"
        h, w = task.image_size
        for c in cases:
            assert tuple(c.image.shape) == (task.in_channels, h, w), f"{c.case_id}: image {tuple(c.image.shape)}"
            assert tuple(c.mask.shape) == (task.num_classes, h, w), f"{c.case_id}: mask {tuple(c.mask.shape)}"
        if task.exclusive and task.num_classes > 1:
            overlap = [c.case_id for c in cases if int(c.mask.sum(0).max()) > 1]
            assert not overlap, f"exclusive task but classes overlap in {overlap[:3]}"

    def test_masks_bool_and_images_finite(self) -> None:
        _, cases = self.loaded()
        for c in cases:
            assert c.mask.dtype == torch.bool, f"{c.case_id}: mask dtype {c.mask.dtype}"
            assert c.image.dtype == torch.float32, f"{c.case_id}: image dtype {c.image.dtype}"
            assert torch.isfinite(c.image).all(), f"{c.case_id}: NaN/inf in image"
        assert any(bool(c.mask.any()) for c in cases), "no case has any foreground"

    def test_case_ids_unique_and_spacing_valid(self) -> None:
        _, cases = self.loaded()
        ids = [c.case_id for c in cases]
        assert len(set(ids)) == len(ids), "case ids repeat"
        for c in cases:
            if c.spacing is not None:
                assert len(c.spacing) in (2, 3) and all(math.isfinite(s) and s > 0 for s in c.spacing), \
                    f"{c.case_id}: spacing {c.spacing}"
            if c.volume is not None:
                assert c.slice_index is not None, f"{c.case_id}: slice of {c.volume} without slice_index"
                assert c.spacing is not None and len(c.spacing) == 3, f"{c.case_id}: slice needs (row, col, slice)"
        by_volume: dict[str, list[Case]] = {}
        for c in cases:
            if c.volume is not None:
                by_volume.setdefault(c.volume, []).append(c)
        for vol, slices in by_volume.items():
            idx = [c.slice_index for c in slices]
            assert len(set(idx)) == len(idx), f"volume {vol}: slice indices repeat"
            assert len({c.spacing for c in slices}) == 1, f"volume {vol}: slices disagree on spacing"

    def test_split_deterministic(self) -> None:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            first, second = self.make(Path(a)).split(self.seed), self.make(Path(b)).split(self.seed)
        assert first == second, "same seed, different split"

    def test_split_disjoint_and_complete(self) -> None:
        ds, cases = self.loaded()
        split = ds.split(self.seed)
        assert isinstance(split, Split) and split.kind in ("seeded", "blocks", "official"), split.kind
        parts = [set(split.train), set(split.val), set(split.test)]
        assert split.train and split.test, "train or test is empty"
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2]), "splits overlap"
        ids = {c.case_id for c in cases}
        used = parts[0] | parts[1] | parts[2]
        assert used <= ids, f"split names unknown cases {sorted(used - ids)[:3]}"
        if split.kind != "blocks":  # block splits leave the gap out on purpose
            assert used == ids, f"{len(ids - used)} cases in no split"

    def test_split_saved_and_reused(self) -> None:
        ds, _ = self.loaded()
        split = ds.split(self.seed)
        files = list((ds.cache_dir / "splits").glob(f"{ds.name}-*-seed{self.seed}.json"))
        assert len(files) == 1, f"expected one saved split file, found {files}"
        saved = json.loads(files[0].read_text())
        assert Split.from_dict(saved) == split, "saved split differs from the returned one"
        edited = {**saved, "val": [], "train": saved["train"] + saved["val"]}  # edit the file: it must be reused
        files[0].write_text(json.dumps(edited))
        try:
            assert self.make().split(self.seed) == Split.from_dict(edited), "saved split file not reused"
        finally:
            files[0].write_text(json.dumps(saved))

    def test_groups_do_not_straddle_splits(self) -> None:
        ds, cases = self.loaded()
        split = ds.split(self.seed)
        if split.kind == "blocks":  # one volume/image on purpose: its parts are separated by the gap instead
            skip_check("block split: one source, its parts are kept apart by the gap (test_block_split_gap)")
        # an official test set is the release's choice; only what we carve (train/val) must respect groups
        parts = (split.train, split.val) if split.kind == "official" else (split.train, split.val, split.test)
        where = {cid: i for i, part in enumerate(parts) for cid in part}
        seen: dict[str, int] = {}
        for c in cases:
            if c.case_id not in where:
                continue
            key = c.group or c.volume or c.case_id
            assert seen.setdefault(key, where[c.case_id]) == where[c.case_id], f"group {key} straddles splits"

    def test_block_split_gap(self) -> None:
        ds, cases = self.loaded()
        split = ds.split(self.seed)
        if split.kind != "blocks":
            skip_check(f"{split.kind} split: no blocks, no gap to check")
        pos = {c.case_id: getattr(ds, "block_position", lambda c: c.slice_index)(c) for c in cases}
        parts = [[pos[i] for i in part] for part in (split.train, split.val, split.test)]
        for a in range(3):
            for b in range(a + 1, 3):
                if parts[a] and parts[b]:
                    gap = min(abs(p - q) for p in parts[a] for q in parts[b]) - 1
                    assert gap >= self.min_gap, f"only {gap} positions between split parts {a} and {b}"

    def test_content_hash_stable_and_sensitive(self) -> None:
        ds, _ = self.loaded()
        h = ds.content_hash()
        assert isinstance(h, str) and len(h) >= 16
        assert self.make().content_hash() == h, "content hash changes between instances"
        params = self.dataset_params()
        size = params.get("size", getattr(getattr(ds, "prep", None), "size", 64))
        assert self.make(size=int(size) // 2).content_hash() != h, "content hash ignores the preprocessing config"

    def test_cache_reads_back_identical_cases(self) -> None:
        _, cases = self.loaded()
        again = self.make().cases()
        assert [c.case_id for c in again] == [c.case_id for c in cases], "case order differs on reload"
        for a, b in zip(cases, again):
            assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask), f"{a.case_id} differs on reload"
            assert (a.spacing, a.group, a.volume, a.slice_index) == (b.spacing, b.group, b.volume, b.slice_index)


def run_dataset_checks(dataset_cls: type[DatasetPlugin], on_result: Callable[[CheckResult], None] | None = None,
                       **attrs: Any) -> list[CheckResult]:
    """Run every dataset conformance check outside pytest (``segarena plugins check NAME``)."""
    suite_cls = type(f"Check{dataset_cls.__name__}", (DatasetConformance,), {"dataset_cls": dataset_cls, **attrs})
    return run_check_class(suite_cls, on_result)
