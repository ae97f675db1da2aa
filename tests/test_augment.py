"""Harness augmentation: image and mask transformed together, masks binary, seeded and reproducible."""

import numpy as np
import pytest
import torch
from monai.transforms import RandAffined, RandFlipd, RandRotate90d

from segarena.platform.conformance import synthetic_batch
from segarena.platform.errors import SpecError
from segarena.platform.plugin import Task
from segarena.platform.run.augment import KINDS, Augment, worker_seed

TASK = Task(in_channels=2, num_classes=2, image_size=(32, 32), exclusive=False)
STEPS = range(12)


def batch(seed: int = 0, rows: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A 2-channel random image; mask channel 0 = (image channel 0 > 0.5), channel 1 = discs."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(rows, 2, 32, 32, generator=g)
    masks = torch.stack([images[:, 0] > 0.5, synthetic_batch(TASK, rows, seed)["mask"][:, 1].bool()], 1).float()
    return images, masks


def keep_only(aug: Augment, kinds: tuple[type, ...], size: tuple[int, int] = (32, 32)) -> Augment:
    """The same seeded pipeline with only some of its transforms (the others' draws come after)."""
    pipeline = aug.transforms(*size)
    pipeline[:] = [t for t in pipeline if isinstance(t, kinds)]
    return aug


def dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips/rotations of (C, H, W); the last four need a rot90 (not reachable by flips alone)."""
    r = torch.rot90(x, 1, (-2, -1))
    return [x, x.flip(-1), x.flip(-2), x.flip(-1, -2), r, r.flip(-1), r.flip(-2), r.flip(-1, -2)]


def test_none_is_identity_and_bad_kinds_are_one_line_errors():
    images, masks = batch()
    out_i, out_m = Augment("none", 3)(images, masks, step=5)
    assert out_i is images and out_m is masks
    assert KINDS == ("none", "flips", "default")
    with pytest.raises(SpecError, match="augment: 'rot' is not one of none, flips, default"):
        Augment("rot", 0)


@pytest.mark.parametrize("kind", ["flips", "default"])
def test_flips_and_rot90_move_image_and_mask_identically(kind):
    """Every output row is the same dihedral transform of its image and its mask, exactly."""
    images, masks = batch()
    aug = keep_only(Augment(kind, 7), (RandFlipd, RandRotate90d))
    used = set()
    for step in STEPS:
        out_i, out_m = aug(images, masks, step)
        torch.testing.assert_close(out_m[:, 0], (out_i[:, 0] > 0.5).float(), rtol=0, atol=0)
        for row in range(len(images)):
            hits = [k for k, (ti, tm) in enumerate(zip(dihedral(images[row]), dihedral(masks[row])))
                    if torch.equal(ti, out_i[row]) and torch.equal(tm, out_m[row])]
            assert hits, f"step {step} row {row}: not one transform applied to image and mask"
            used.add(hits[0])
    assert len(used) > 2  # the draws vary
    assert (max(used) >= 4) == (kind == "default")  # odd rotations only with rot90 (default)


def test_affine_resamples_the_mask_by_nearest_where_the_image_is_not_interpolated():
    """Image channel = the mask itself (0/1), bilinear; mask nearest. Where the bilinear value is
    exactly 0 or 1, every source pixel with non-zero weight has that value, nearest picks one of them,
    so the mask must equal the image there; only the pixels interpolated across an edge may differ."""
    masks = synthetic_batch(Task(1, 1, (32, 32)), 4, seed=2)["mask"]
    images = masks.clone()
    aug = keep_only(Augment("default", 11), (RandAffined,))
    moved = 0
    for step in STEPS:
        out_i, out_m = aug(images, masks, step)
        assert set(out_m.unique().tolist()) <= {0.0, 1.0}
        exact = (out_i.abs() < 1e-6) | ((out_i - 1).abs() < 1e-6)
        assert torch.equal(out_m[exact], out_i[exact].round())
        frac = (~exact).float().mean((1, 2, 3))
        assert frac.max() < 0.1  # an edge band, not the image
        moved += int((~exact).any((1, 2, 3)).sum())
        # nearest: every mask pixel is 0/1 and disagrees with the thresholded image only in the edge band
        assert ((out_m != (out_i > 0.5).float()) & exact).sum() == 0
    assert moved >= 5  # the affine (p = 0.5) did resample rows


def test_intensity_jitter_touches_the_image_only_as_an_affine_map_per_row():
    images, masks = batch()
    for step in STEPS:
        full_i, full_m = Augment("default", 5)(images, masks, step)
        geo_i, geo_m = keep_only(Augment("default", 5), (RandFlipd, RandRotate90d, RandAffined))(images, masks, step)
        assert torch.equal(full_m, geo_m)  # the geometry draws do not depend on the jitter after them
        for row in range(len(images)):
            x, y = geo_i[row].flatten().double(), full_i[row].flatten().double()
            a, b = np.polyfit(x.numpy(), y.numpy(), 1)
            assert 0.9 - 1e-6 <= a <= 1.1 + 1e-6
            assert (y - (a * x + b)).abs().max() < 1e-4
    changed = [not torch.equal(Augment("default", 5)(images, masks, s)[0],
                               keep_only(Augment("default", 5), (RandFlipd, RandRotate90d, RandAffined))(
                                   images, masks, s)[0]) for s in STEPS]
    assert any(changed)


def test_deterministic_per_seed_and_step_different_across_seeds_and_steps():
    images, masks = batch()
    a = Augment("default", 1)(images, masks, 3)
    b = Augment("default", 1)(images, masks, 3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    other_seed = [Augment("default", 2)(images, masks, s) for s in STEPS]
    same_seed = [Augment("default", 1)(images, masks, s) for s in STEPS]
    assert any(not torch.equal(x[0], y[0]) for x, y in zip(other_seed, same_seed))
    assert len({same_seed[s][0].sum().item() for s in STEPS}) > 1  # steps differ


def test_rows_keyed_by_id_get_the_same_transform_whatever_the_batch():
    images, masks = batch(rows=4)
    aug = Augment("default", 4)
    full = aug(images, masks, 2, ids=[10, 11, 12, 13])
    pair = aug(images[[2, 0]], masks[[2, 0]], 2, ids=[12, 10])
    assert torch.equal(pair[0], full[0][[2, 0]]) and torch.equal(pair[1], full[1][[2, 0]])
    with pytest.raises(ValueError, match="ids"):
        aug(images, masks, 2, ids=[1, 2])
    assert worker_seed(0, 0) != worker_seed(0, 1)


def test_global_random_state_untouched_and_types_kept():
    images, masks = batch()
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    out_i, out_m = Augment("default", 9)(images, masks.bool(), 1)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(x, y) for x, y in zip(np.random.get_state(), np_state))
    assert type(out_i) is torch.Tensor and type(out_m) is torch.Tensor
    assert out_i.shape == images.shape and out_i.dtype == images.dtype and out_m.dtype == torch.bool


def test_non_square_images_keep_their_shape():
    images, masks = torch.rand(3, 1, 16, 24), (torch.rand(3, 1, 16, 24) > 0.5).float()
    aug = Augment("default", 0)
    assert not any(isinstance(t, RandRotate90d) for t in aug.transforms(16, 24))
    for step in range(4):
        out_i, out_m = aug(images, masks, step)
        assert out_i.shape == images.shape and out_m.shape == masks.shape


def test_built_in_methods_declare_their_papers_recipe_as_a_kind():
    from segarena.platform.plugins.registry import discover

    registry = discover(use_env=False)
    declared = {info.name: registry.method(info.name).paper_augment for info in registry.infos("method")}
    assert set(declared.values()) <= set(KINDS), declared
    # cDAL (MoNuSeg: flips + affine + colour jitter) and TransUNet (rot90/flip/rotation); MedSegDiff: none
    assert declared["cdal"] == declared["transunet"] == "default" and declared["medsegdiff"] == "none"
