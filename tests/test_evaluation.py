"""Harness-side evaluation without Ray: per-case tables, volume re-assembly, nfe and NaN checks."""

from __future__ import annotations

import pytest
import torch
from segarena_test_fakes import UntrainedMethod

from segarena.platform.dataset import Case
from segarena.platform.plugin import Budget, Prediction, Task
from segarena.platform.scoring.evaluation import EvaluationError, evaluate

TASK = Task(in_channels=1, num_classes=1, image_size=(8, 8))
CFG = {"batch_size": 2, "timing_repeats": 2, "timing_warmup": 0, "throughput_batch": 2}


class Thresholder(UntrainedMethod):
    """Predicts image > 0.5; ``passes`` sets the reported nfe multiple, ``nan`` poisons probs."""

    name = "thresholder"

    def __init__(self, passes: int = 1, nan: bool = False) -> None:
        super().__init__({}, TASK)
        self.passes, self.nan = passes, nan

    def predict(self, images, budget, generator=None):
        for _ in range(budget.nfe * self.passes):
            images = self.net(images)
        probs = (images > 0.5).float()
        if self.nan:
            probs = probs * float("nan")
        return Prediction(probs=probs, mask=probs > 0.5, nfe=budget.nfe * self.passes)


def case(i: int, fg: bool, volume: str | None = None) -> Case:
    img = torch.zeros(1, 8, 8)
    if fg:
        img[0, 2:5, 2:5] = 1
    spacing = (1.0, 1.0, 2.0) if volume else None
    return Case(f"c{i}", img, img.bool(), spacing=spacing, volume=volume, slice_index=i if volume else None)


def test_per_case_rows_for_every_budget():
    cases = [case(0, True), case(1, False), case(2, True)]
    budgets = [Budget(), Budget(steps=2, sampler="x")]
    table, results = evaluate(Thresholder(), cases, budgets, TASK, torch.device("cpu"), 0, CFG)
    assert sorted(table["budget"].unique()) == sorted(b.name for b in budgets)
    assert len(table) == 6 and (table["dice"] == 1.0).all()  # empty-vs-empty scores 1
    assert results["x2-e1"].metrics["nfe"] == 2
    assert {"latency_ms", "throughput_ips", "peak_mem_mb", "dice", "hd95"} <= set(results["direct-e1"].metrics)


def test_slices_of_a_volume_are_scored_as_one_case():
    cases = [case(i, i % 2 == 0, volume="vol") for i in range(4)] + [case(9, True)]
    table, _ = evaluate(Thresholder(), cases, [Budget()], TASK, torch.device("cpu"), 0, CFG)
    assert sorted(table["case_id"]) == ["c9", "vol"]
    vol = table[table["case_id"] == "vol"].iloc[0]
    assert vol["gt_voxels"] == 2 * 9 and vol["hd95_unit"] == "mm"


def test_nfe_must_be_the_budget_or_a_whole_multiple():
    cases = [case(0, True)]
    evaluate(Thresholder(passes=3), cases, [Budget(steps=2)], TASK, torch.device("cpu"), 0, CFG)

    class Liar(Thresholder):
        def predict(self, images, budget, generator=None):  # one pass, honestly counted, for 2 steps
            return Prediction(probs=self.net(images).clamp(0, 1), mask=images > 0.5, nfe=1)

    with pytest.raises(EvaluationError, match="reported nfe 1"):
        evaluate(Liar(), cases, [Budget(steps=2)], TASK, torch.device("cpu"), 0, CFG)


def test_nan_predictions_fail_the_cell():
    with pytest.raises(EvaluationError, match="NaN"):
        evaluate(Thresholder(nan=True), [case(0, True)], [Budget()], TASK, torch.device("cpu"), 0, CFG)
