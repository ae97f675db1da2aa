"""``segarena evaluate``: a folder of masks written by ``write_masks`` re-scores to the evaluation's own per-case
table exactly; NIfTI spacing, class sub-folders, and bad input as one line naming the file (exit 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from segarena_test_fakes import UntrainedMethod

from segarena.platform.cli import main
from segarena.platform.dataset import Case
from segarena.platform.plugin import Budget, Prediction, Task
from segarena.platform.scoring.evaluation import evaluate
from segarena.platform.scoring.mask_files import read_mask, write_masks
from segarena.platform.scoring.metrics import nsd, per_case_metrics
from segarena.platform.scoring.predictions import load_npz

MASK_COLUMNS = ["case_id", "class", "dice", "iou", "hd95", "hd95_unit", "gt_empty", "pred_empty", "gt_voxels",
                "pred_voxels", "nsd", "nsd_tolerance"]


class Blobs(UntrainedMethod):
    """Thresholds a smoothed copy of the image: imperfect masks, empty ones included."""

    name = "blobs"

    def predict(self, images, budget, generator=None):
        for _ in range(budget.nfe):
            images = self.net(images)
        probs = torch.nn.functional.avg_pool2d(images, 3, 1, 1).repeat(1, self.task.num_classes, 1, 1)
        return Prediction(probs=probs, mask=probs > 0.4, nfe=budget.nfe)


def make_cases(n: int, size: int, classes: int, spacing) -> list[Case]:
    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        img = torch.zeros(1, size, size)
        if i != 2:  # case 2: empty truth
            y, x = rng.integers(2, size - 12, 2)
            img[0, y:y + 8, x:x + rng.integers(4, 10)] = 1
        mask = torch.cat([img > 0.5] * classes)
        cases.append(Case(f"case{i}", img, mask, spacing=spacing))
    return cases


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["evaluate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("classes,suffix", [(1, ".parquet"), (2, ".csv")])
def test_evaluate_reproduces_the_per_case_table_of_saved_masks(tmp_path: Path, capsys, classes: int, suffix: str):
    task = Task(in_channels=1, num_classes=classes, image_size=(24, 24), spacing=(0.5, 2.0),
                class_names=tuple(f"k{c}" for c in range(classes)), exclusive=False)
    cases = make_cases(6, 24, classes, (0.5, 2.0))
    table, results = evaluate(Blobs({}, task), cases, [Budget()], task, torch.device("cpu"), 0,
                              {"timing_repeats": 1, "timing_warmup": 0, "throughput_batch": 1},
                              predictions_dir=tmp_path / "preds")
    saved = load_npz(tmp_path / "preds" / "direct-e1" / "predictions.npz")
    write_masks(saved["masks"], saved["case_ids"], tmp_path / "pred", "png", saved["class_names"])
    write_masks([c.mask for c in cases], [c.case_id for c in cases], tmp_path / "truth", "png", saved["class_names"])
    out_file = tmp_path / f"table{suffix}"
    code, out, err = run_cli(capsys, "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"),
                             "--spacing", "0.5", "2.0", "--output", str(out_file),
                             *(["--class-name", "k0"] if classes == 1 else []))
    assert code == 0, err
    assert "6 cases" in out and f"dice {results['direct-e1'].metrics['dice']:.4f}" in out
    got = pd.read_csv(out_file, dtype={"class": str}) if suffix == ".csv" else pd.read_parquet(out_file)
    want = table[MASK_COLUMNS].sort_values(["case_id", "class"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[MASK_COLUMNS].sort_values(["case_id", "class"]).reset_index(drop=True), want,
                                  check_dtype=False, rtol=0, atol=0)


def test_nifti_volumes_take_spacing_from_the_header(tmp_path: Path, capsys):
    rng = np.random.default_rng(1)
    truth = np.zeros((1, 16, 16, 6), bool)
    truth[0, 4:11, 3:9, 1:5] = True
    pred = truth & (rng.random(truth.shape) > 0.1)
    write_masks([pred], ["vol"], tmp_path / "p", "nifti", spacing=(1.0, 1.0, 3.0))
    write_masks([truth], ["vol"], tmp_path / "t", "nifti", spacing=(1.0, 1.0, 3.0))
    assert read_mask(tmp_path / "t" / "vol.nii.gz").spacing == (1.0, 1.0, 3.0)
    code, _, err = run_cli(capsys, "--pred", str(tmp_path / "p"), "--truth", str(tmp_path / "t"),
                           "--output", str(tmp_path / "o.parquet"))
    assert code == 0, err
    row = pd.read_parquet(tmp_path / "o.parquet").iloc[0]
    (want,) = per_case_metrics(pred, truth, (1.0, 1.0, 3.0), "vol", channels_first=True)
    assert row["hd95_unit"] == "mm" and row["hd95"] == want["hd95"] and row["dice"] == want["dice"]
    assert row["nsd"] == nsd(pred[0], truth[0], 1.0, (1.0, 1.0, 3.0))


def test_rgb_png_with_equal_channels_is_a_mask(tmp_path: Path):
    m = np.zeros((8, 8), np.uint8)
    m[2:5, 2:5] = 255
    Image.fromarray(np.stack([m] * 3, -1)).save(tmp_path / "a.png")
    assert read_mask(tmp_path / "a.png").array.sum() == 9


def _pngs(folder: Path, masks: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, m in masks.items():
        Image.fromarray(m.astype(np.uint8)).save(folder / f"{name}.png")


@pytest.mark.parametrize("problem", ["shape", "non_binary", "missing_truth", "missing_pred", "colour", "output"])
def test_bad_input_is_one_line_naming_the_file(tmp_path: Path, capsys, problem: str):
    ok = np.zeros((8, 8), np.uint8)
    ok[2:4, 2:4] = 255
    pred, truth = {"a": ok, "b": ok}, {"a": ok, "b": ok}
    bad = {"shape": ("b", np.zeros((9, 8), np.uint8)), "non_binary": ("b", ok // 2 + (ok > 0) * 3)}
    if problem in bad:
        name, value = bad[problem]
        pred[name] = value
    if problem == "missing_truth":
        del truth["b"]
    if problem == "missing_pred":
        del pred["b"]
    _pngs(tmp_path / "p", pred)
    _pngs(tmp_path / "t", truth)
    if problem == "colour":
        Image.fromarray(np.stack([ok, ok * 0, ok], -1)).save(tmp_path / "p" / "b.png")
    output = ["--output", str(tmp_path / "x.txt")] if problem == "output" else []
    code, _, err = run_cli(capsys, "--pred", str(tmp_path / "p"), "--truth", str(tmp_path / "t"), *output)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    expect = {"shape": "p/b.png: shape (9, 8)", "non_binary": "p/b.png: not a binary mask",
              "missing_truth": "p/b.png: no truth mask", "missing_pred": "t/b.png: no predicted mask",
              "colour": "p/b.png: a colour image", "output": "x.txt: the per-case table"}[problem]
    assert expect in err


def test_empty_folder_and_unknown_format(tmp_path: Path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "t").mkdir()
    code, _, err = run_cli(capsys, "--pred", str(tmp_path / "p"), "--truth", str(tmp_path / "t"))
    assert code == 2 and "no mask files" in err
    from segarena.platform.errors import DataError

    with pytest.raises(DataError, match="mask format"):
        write_masks([np.zeros((1, 4, 4), bool)], ["a"], tmp_path / "w", "jpeg")
