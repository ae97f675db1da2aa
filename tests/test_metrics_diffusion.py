"""The diffusion-aware metrics on fixtures with known answers, NSD pinned to an independent reference, and
every empty-mask / single-sample rule (no metric can be NaN)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from segarena.platform.scoring.metrics import (
    NLL_EPS,
    aggregate,
    brier,
    calibration,
    distribution_metrics,
    diversity,
    ece,
    ged,
    nll,
    nsd,
    overlap,
    predictive_entropy,
)


def square(shape=(32, 32), y=8, x=8, size=10) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y:y + size, x:x + size] = True
    return m


def reference_nsd(a: np.ndarray, b: np.ndarray, tol: float, spacing=None) -> float:
    """Independent NSD: boundary = mask XOR erosion; EDT distances boundary → other boundary; share ≤ tol."""
    def border(m):
        return m ^ ndimage.binary_erosion(m, border_value=0)

    ba, bb = border(a), border(b)
    d_ab = ndimage.distance_transform_edt(~bb, sampling=spacing)[ba]
    d_ba = ndimage.distance_transform_edt(~ba, sampling=spacing)[bb]
    return float(((d_ab <= tol).sum() + (d_ba <= tol).sum()) / (len(d_ab) + len(d_ba)))


# NSD ----------------------------------------------------------------------------------------------------------

def test_nsd_empty_rules_and_identity():
    empty, sq = np.zeros((16, 16), bool), square((16, 16), 4, 4, 6)
    assert nsd(empty, empty, 1.0) == 1.0
    assert nsd(sq, empty, 1.0) == 0.0 and nsd(empty, sq, 1.0) == 0.0
    assert nsd(sq, sq, 1.0) == 1.0


def test_nsd_one_pixel_shift_is_within_one_pixel_but_not_half():
    a, b = square(), square(x=9)
    assert nsd(a, b, 1.0) == pytest.approx(1.0)
    assert nsd(a, b, 0.5) == pytest.approx(reference_nsd(a, b, 0.5)) and nsd(a, b, 0.5) < 1.0


@pytest.mark.parametrize("seed", range(4))
def test_nsd_matches_reference_on_random_shapes_and_spacing(seed):
    rng = np.random.default_rng(seed)
    a = ndimage.binary_opening(rng.random((40, 40)) > 0.55)
    b = ndimage.binary_opening(rng.random((40, 40)) > 0.55)
    spacing = (1.0, 1.0) if seed % 2 else (2.0, 0.5)
    for tol in (0.5, 1.0, 2.0, 4.0):
        assert nsd(a, b, tol, spacing) == pytest.approx(reference_nsd(a, b, tol, spacing), abs=1e-6)


def monai_nsd(a: np.ndarray, b: np.ndarray, tol: float, spacing=None) -> float:
    import warnings

    from monai.metrics import compute_surface_dice

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = compute_surface_dice(torch.as_tensor(a)[None, None].float(), torch.as_tensor(b)[None, None].float(),
                                 class_thresholds=[tol], include_background=True,
                                 spacing=list(spacing) if spacing is not None else None)
    return float(v.reshape(-1)[0])


@pytest.mark.parametrize("seed", range(6))
def test_nsd_is_pinned_to_monai_compute_surface_dice(seed):
    """Border-touching random shapes, small objects far apart, 2D and 3D, anisotropic spacing."""
    rng = np.random.default_rng(seed)
    shape = (30, 34) if seed < 4 else (14, 12, 9)
    a = ndimage.binary_opening(rng.random(shape) > 0.5) if seed % 2 else rng.random(shape) > 0.97
    b = ndimage.binary_opening(rng.random(shape) > 0.6)
    a.flat[0] = b.flat[-1] = True  # corners: objects touch the image border
    spacing = None if seed in (0, 4) else tuple(rng.uniform(0.3, 3.0, len(shape)))
    for tol in (0.5, 1.0, 2.5, 6.0):
        assert nsd(a, b, tol, spacing) == pytest.approx(monai_nsd(a, b, tol, spacing), rel=1e-6)  # MONAI: float32


def test_nsd_3d_with_spacing():
    a = np.zeros((12, 12, 6), bool)
    a[3:9, 3:9, 1:5] = True
    b = np.roll(a, 1, axis=0)
    assert nsd(a, b, 1.0, (1.0, 1.0, 2.0)) == pytest.approx(reference_nsd(a, b, 1.0, (1.0, 1.0, 2.0)), abs=1e-6)


# GED and diversity ---------------------------------------------------------------------------------------------

def iou_d(a, b) -> float:
    return 1.0 - overlap(torch.as_tensor(a), torch.as_tensor(b))[1]


def test_ged_of_identical_members_is_twice_their_distance_to_truth():
    truth, member = square(), square(x=11)
    members = np.stack([member] * 4)
    assert ged(members, truth) == pytest.approx(2 * iou_d(member, truth))
    assert ged(member[None], truth) == pytest.approx(2 * iou_d(member, truth))  # one sample: point mass


def test_ged_known_answer_and_brute_force():
    truth, empty = square(), np.zeros((32, 32), bool)
    # members {truth, empty}: E d(S,Y) = 1/2, E d(S,S') = 1 → 2·½ − 1 = 0
    assert ged(np.stack([truth, empty]), truth) == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    members = rng.random((5, 16, 16)) > 0.6
    gt = rng.random((16, 16)) > 0.5
    to_gt = np.mean([iou_d(m, gt) for m in members])
    between = np.mean([iou_d(members[i], members[j]) for i, j in itertools.permutations(range(5), 2)])
    assert ged(members, gt) == pytest.approx(2 * to_gt - between)


def test_ged_empty_rules():
    empty = np.zeros((8, 8), bool)
    assert ged(np.stack([empty, empty]), empty) == 0.0  # all empty: every distance 0
    full = np.ones((8, 8), bool)
    assert ged(np.stack([full, full]), empty) == pytest.approx(2.0)  # hallucination on an empty truth
    assert ged(np.stack([empty, empty]), full) == pytest.approx(2.0)  # missed structure


def test_diversity_known_answers_and_rules():
    a, empty = square(), np.zeros((32, 32), bool)
    assert diversity(np.stack([a, a, a])) == 0.0
    assert diversity(np.stack([a, empty])) == 1.0
    assert diversity(a[None]) == 0.0  # one member: nothing to disagree
    assert diversity(np.stack([empty, empty])) == 0.0  # two empty members agree (Dice 1)
    rng = np.random.default_rng(1)
    m = rng.random((4, 12, 12)) > 0.5
    brute = np.mean([1 - overlap(torch.as_tensor(m[i]), torch.as_tensor(m[j]))[0]
                     for i, j in itertools.combinations(range(4), 2)])
    assert diversity(m) == pytest.approx(brute)


# entropy and calibration ------------------------------------------------------------------------------------------

def test_entropy_known_values():
    assert predictive_entropy(np.full((8, 8), 0.5)) == pytest.approx(math.log(2))
    assert predictive_entropy(np.array([0.0, 1.0, 1.0])) == 0.0  # 0·log 0 = 0
    assert predictive_entropy(np.zeros((0,))) == 0.0
    p = 0.2
    assert predictive_entropy(np.full(5, p)) == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)))


def test_ece_of_perfectly_calibrated_probabilities_is_near_zero():
    rng = np.random.default_rng(0)
    p = rng.random(400_000)
    y = rng.random(p.size) < p  # y ~ Bernoulli(p)
    assert ece(p, y) < 0.01
    assert ece(np.full(1000, 0.9), np.arange(1000) % 2 == 0) == pytest.approx(0.4)  # over-confident by 0.4
    assert ece(np.array([0.0, 1.0]), np.array([False, True])) == 0.0


def test_brier_and_nll_known_values():
    y = np.arange(100) % 2 == 0
    assert brier(np.full(100, 0.5), y) == pytest.approx(0.25)
    assert nll(np.full(100, 0.5), y) == pytest.approx(math.log(2))
    assert brier(y.astype(float), y) == 0.0
    assert nll(y.astype(float), y) == pytest.approx(-math.log(1 - NLL_EPS))
    assert nll(1 - y.astype(float), y) == pytest.approx(-math.log(NLL_EPS))  # confidently wrong: finite
    assert brier(np.zeros(0), np.zeros(0, bool)) == 0.0 and nll(np.zeros(0), np.zeros(0, bool)) == 0.0


def test_calibration_samples_at_most_max_pixels_with_a_fixed_seed():
    rng = np.random.default_rng(2)
    p = rng.random(50_000)
    y = rng.random(p.size) < p ** 2
    full = calibration(p, y, max_pixels=10**6)
    sub1, sub2 = calibration(p, y, max_pixels=20_000), calibration(p, y, max_pixels=20_000)
    assert sub1 == sub2  # fixed seed
    assert sub1 != full and sub1["brier"] == pytest.approx(full["brier"], abs=0.01)
    assert full == {"ece": ece(p, y), "brier": brier(p, y), "nll": nll(p, y)}


# per-case rows -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pred_fg,gt_fg", [(False, False), (True, False), (False, True), (True, True)])
def test_distribution_metrics_never_nan_on_empty_combinations(pred_fg, gt_fg):
    sq = torch.as_tensor(square((16, 16), 4, 4, 6))[None]
    empty = torch.zeros_like(sq)
    mask, gt = (sq if pred_fg else empty), (sq if gt_fg else empty)
    probs = mask.float() * 0.8 + 0.1
    for samples, sample_probs in ((None, None), (torch.stack([mask, empty]), torch.stack([probs, probs * 0]))):
        (row,) = distribution_metrics(mask, gt, probs, samples, sample_probs)
        assert all(math.isfinite(v) for k, v in row.items() if k != "members"), row
    (row,) = distribution_metrics(mask, gt, probs)
    assert row["members"] == 1 and row["diversity"] == 0.0
    assert row["ged"] == pytest.approx(2 * iou_d(mask[0].numpy(), gt[0].numpy()))
    assert row["nsd"] == (1.0 if pred_fg == gt_fg else 0.0)


def test_distribution_metrics_per_class_and_entropy_of_member_mean():
    gt = torch.zeros(2, 8, 8, dtype=torch.bool)
    gt[0, :4] = True
    mask = gt.clone()
    probs = gt.float()
    member_probs = torch.stack([gt.float(), 1 - gt.float()])  # members disagree everywhere: mean 0.5
    rows = distribution_metrics(mask, gt, probs, member_probs > 0.5, member_probs)
    assert len(rows) == 2 and all(r["members"] == 2 for r in rows)
    assert rows[0]["entropy"] == pytest.approx(math.log(2)) and rows[0]["diversity"] == 1.0
    assert rows[0]["ece"] == 0.0 and rows[0]["brier"] == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        distribution_metrics(mask, gt[:1], probs)


def test_aggregate_extra_is_mean_of_class_means():
    rows = [{"case_id": "a", "nsd": 1.0, "ged": 0.0}, {"case_id": "a", "nsd": 0.0, "ged": 1.0},
            {"case_id": "b", "nsd": 1.0, "ged": 1.0}]
    rows = [{**r, "dice": 1.0, "iou": 1.0, "hd95": 0.0} for r in rows]
    out = aggregate(rows)
    assert (out["nsd"], out["ged"]) == (0.75, 0.75) and "ece" not in out


@pytest.mark.parametrize("with_members", [False, True])
def test_distribution_metrics_equal_the_public_functions_exactly(with_members):
    """The per-case path (pixels converted once, boundaries shared with HD95) gives the same values, bit
    for bit, as each public function called on its own."""
    from segarena.platform.scoring.metrics import class_surfaces

    rng = np.random.default_rng(3)
    gt = np.stack([ndimage.binary_opening(rng.random((48, 40)) > 0.5) for _ in range(2)])
    probs = torch.from_numpy(np.clip(gt + rng.normal(0, 0.4, gt.shape), 0, 1)).float()
    mask = probs > 0.5
    member_probs = torch.from_numpy(rng.random((3, *gt.shape))).float() if with_members else None
    samples = member_probs > 0.5 if with_members else None
    spacing = (1.3, 0.6)
    for surface in (None, class_surfaces(mask, gt, spacing)):
        rows = distribution_metrics(mask, gt, probs, samples, member_probs, spacing, 1.5, max_pixels=1000,
                                    surface=surface)
        for c, row in enumerate(rows):
            s = samples[:, c] if with_members else mask[c][None]
            mean_p = member_probs[:, c].mean(0) if with_members else probs[c]
            assert row == {"nsd": nsd(mask[c], gt[c], 1.5, spacing), "nsd_tolerance": 1.5, "ged": ged(s, gt[c]),
                           "diversity": diversity(s), "entropy": predictive_entropy(mean_p),
                           **calibration(probs[c], gt[c], 1000), "members": 3 if with_members else 1}
            assert calibration(probs[c], gt[c], 10**6) == {"ece": ece(probs[c], gt[c]), "brier": brier(probs[c], gt[c]),
                                                           "nll": nll(probs[c], gt[c])}
