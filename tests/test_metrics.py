"""The metric contract on hand-made masks, and MONAI's HD95 pinned to an independent reference."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from segarena.platform.scoring.metrics import aggregate, per_case_metrics


def square(shape=(40, 40), y=10, x=10, size=10):
    m = np.zeros(shape, bool)
    m[y:y + size, x:x + size] = True
    return m


def reference_hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """Independent HD95: boundary = mask XOR erosion; EDT distances; max of directed 95th percentiles."""
    def border(m):
        return m ^ ndimage.binary_erosion(m, border_value=0)

    ba, bb = border(a), border(b)
    d_to_b = ndimage.distance_transform_edt(~bb, sampling=spacing)
    d_to_a = ndimage.distance_transform_edt(~ba, sampling=spacing)
    return max(np.percentile(d_to_b[ba], 95), np.percentile(d_to_a[bb], 95))


def test_both_empty():
    (row,) = per_case_metrics(np.zeros((8, 8)), np.zeros((8, 8)))
    assert (row["dice"], row["iou"], row["hd95"]) == (1.0, 1.0, 0.0)
    assert row["gt_empty"] and row["pred_empty"]


@pytest.mark.parametrize("pred_empty", [True, False])
def test_exactly_one_empty_scores_zero_and_diagonal(pred_empty):
    full, empty = square(), np.zeros((40, 40), bool)
    pred, gt = (empty, full) if pred_empty else (full, empty)
    (row,) = per_case_metrics(pred, gt)
    assert (row["dice"], row["iou"]) == (0.0, 0.0)
    assert row["hd95"] == pytest.approx(math.hypot(40, 40))
    (mm,) = per_case_metrics(pred, gt, spacing=(2.0, 0.5))
    assert mm["hd95"] == pytest.approx(math.hypot(80, 20)) and mm["hd95_unit"] == "mm"


def test_brats_volume_diagonal():
    gt = np.zeros((1, 240, 240, 155), bool)
    gt[0, 100:110, 100:110, 50:60] = True
    (row,) = per_case_metrics(np.zeros_like(gt), gt, spacing=(1.0, 1.0, 1.0))
    assert row["hd95"] == pytest.approx(373.13, abs=0.01)


def test_both_non_empty_formula_and_known_hd95():
    (row,) = per_case_metrics(square(y=10), square(y=12))
    assert row["dice"] == pytest.approx(2 * 80 / 200) and row["iou"] == pytest.approx(80 / 120)
    assert row["hd95"] == pytest.approx(2.0)
    assert not row["gt_empty"] and row["gt_voxels"] == 100


def test_anisotropic_spacing_scales_hd95_along_its_axis():
    (rows,) = per_case_metrics(square(y=10), square(y=12), spacing=(2.0, 0.5))
    assert rows["hd95"] == pytest.approx(4.0)  # shifted 2 rows × 2 mm
    (cols,) = per_case_metrics(square(x=10), square(x=12), spacing=(2.0, 0.5))
    assert cols["hd95"] == pytest.approx(1.0)  # shifted 2 columns × 0.5 mm


def test_far_blob_matches_reference_max_of_directed():
    gt = square((64, 64), 10, 10, 20)
    pred = gt.copy()
    pred[50:56, 50:56] = True
    (row,) = per_case_metrics(pred, gt)
    assert row["hd95"] == pytest.approx(reference_hd95(pred, gt, (1.0, 1.0)), rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_shapes_match_reference(seed):
    rng = np.random.default_rng(seed)
    a = ndimage.binary_dilation(rng.random((48, 40)) > 0.97, iterations=3)
    b = ndimage.binary_dilation(rng.random((48, 40)) > 0.97, iterations=2)
    spacing = (1.5, 0.7)
    (row,) = per_case_metrics(torch.from_numpy(a), torch.from_numpy(b), spacing=spacing)
    assert row["hd95"] == pytest.approx(reference_hd95(a, b, spacing), rel=1e-5)


def test_multiclass_rows_and_3d():
    pred = np.zeros((2, 8, 8, 4), bool)
    gt = np.zeros((2, 8, 8, 4), bool)
    pred[0, 2:4, 2:4, 1:3] = gt[0, 2:4, 2:4, 1:3] = True
    gt[1, 5:7, 5:7, 2] = True
    rows = per_case_metrics(pred, gt, spacing=(1.0, 1.0, 3.0), case_id="v", class_names=["a", "b"])
    assert [r["class"] for r in rows] == ["a", "b"]
    assert rows[0]["dice"] == 1.0 and rows[0]["hd95"] == 0.0
    assert rows[1]["dice"] == 0.0 and rows[1]["hd95"] == pytest.approx(math.sqrt(8**2 + 8**2 + 12**2))


def test_never_nan_and_aggregation_is_cases_of_class_means():
    rows = per_case_metrics(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)), case_id="a")
    rows += per_case_metrics(np.stack([square((8, 8), 0, 0, 4), np.zeros((8, 8))]),
                             np.stack([square((8, 8), 0, 0, 4), square((8, 8), 4, 4, 2)]), case_id="b")
    df = pd.DataFrame(rows)
    assert not df[["dice", "iou", "hd95"]].isna().any().any()
    agg = aggregate(df)
    assert agg["dice"] == pytest.approx((1.0 + (1.0 + 0.0) / 2) / 2)
    assert agg["n_cases"] == 2


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        per_case_metrics(np.zeros((4, 4)), np.zeros((4, 5)))


def monai_hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """MONAI's own HD95 (what segarena called per case before computing the boundaries itself)."""
    import warnings

    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = compute_hausdorff_distance(torch.as_tensor(a)[None, None].float(), torch.as_tensor(b)[None, None].float(),
                                       include_background=True, percentile=95,
                                       spacing=list(spacing) if spacing is not None else None)
    return float(v.reshape(-1)[0])


@pytest.mark.parametrize("seed", range(8))
def test_hd95_is_bit_identical_to_monai(seed):
    """Same value, not approximately: border-touching shapes, far-apart specks, 2D and 3D, anisotropic
    spacing, single voxels; and NSD from the shared boundary distances equals NSD computed alone."""
    from segarena.platform.scoring.metrics import hd95, nsd, surfaces

    rng = np.random.default_rng(seed)
    shape = (64, 64) if seed < 3 else (40, 36) if seed < 6 else (16, 14, 9)
    a = ndimage.binary_opening(rng.random(shape) > 0.5) if seed % 2 else rng.random(shape) > 0.985
    b = ndimage.binary_dilation(rng.random(shape) > 0.97, iterations=1 + seed % 3)
    a.flat[0] = b.flat[-1] = True  # corners: objects touch the image border
    if seed == 5:
        a[:], a.flat[7] = False, True  # a single voxel
    spacing = None if seed in (0, 6) else tuple(float(s) for s in rng.uniform(0.3, 3.0, len(shape)))
    assert hd95(a, b, spacing) == monai_hd95(a, b, spacing)
    (row,) = per_case_metrics(a[None], b[None], spacing=spacing, channels_first=True)
    assert row["hd95"] == monai_hd95(a, b, spacing)
    shared = surfaces(a, b, spacing)
    for tol in (0.5, 1.0, 2.5):
        assert nsd(a, b, tol, spacing, shared) == nsd(a, b, tol, spacing)


def test_quantile95_is_torch_quantile_bit_for_bit():
    """Both branches: tied order statistics (grid distances) and interpolated ones (continuous values)."""
    from segarena.platform.scoring.metrics import quantile95

    rng = np.random.default_rng(0)
    tied = 0
    for n in [*range(1, 60), 97, 200, 1001, 4096]:
        for d in (np.sqrt(rng.integers(0, 40, n)).astype(np.float32) * np.float32(4.0),
                  rng.random(n).astype(np.float32) * np.float32(30.0)):
            expected = float(torch.quantile(torch.from_numpy(d), 0.95))
            assert quantile95(d) == expected, (n, d)
            s = np.sort(d)
            rank = np.float32(0.95) * np.float32(n - 1)
            tied += int(s[int(rank)] == s[int(np.ceil(rank))])
    assert 10 < tied < 120  # both branches ran

