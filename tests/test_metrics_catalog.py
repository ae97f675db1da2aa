"""The metric catalogue is the one place facts about a metric live: every row matches what the evaluation
produces, and a new row alone puts its metric on the board (aggregated, with a CI, shown with its direction)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import segarena_test_report_fixtures as fx
import torch
from segarena_test_fakes import UntrainedMethod

from segarena.platform.board.formats import display_frame, footer, latex
from segarena.platform.board.statistics import board_statistics
from segarena.platform.dataset import Case
from segarena.platform.plugin import Budget, Prediction, Task
from segarena.platform.scoring import catalog
from segarena.platform.scoring.aggregate import aggregate
from segarena.platform.scoring.catalog import METRICS, Metric, lookup, mode, names
from segarena.platform.scoring.evaluation import evaluate

TASK = Task(in_channels=1, num_classes=1, image_size=(8, 8))




class Sigmoid(UntrainedMethod):
    """Probabilities = sigmoid(4·(image − ½)) after nfe identity passes of the denoiser."""

    name = "sigmoid"

    def predict(self, images, budget, generator=None):
        for _ in range(budget.nfe):
            images = self.net(images)
        probs = torch.sigmoid(4 * (images - 0.5))
        return Prediction(probs=probs, mask=probs > 0.5, nfe=budget.nfe)


def test_every_row_is_what_the_evaluation_produces():
    cases = [Case(f"c{i}", torch.rand(1, 8, 8), torch.rand(1, 8, 8) > 0.5) for i in range(3)]
    table, results = evaluate(Sigmoid({}, TASK), cases, [Budget()], TASK, torch.device("cpu"), 0,
                              {"batch_size": 2, "timing_repeats": 1, "timing_warmup": 0, "throughput_batch": 1})
    logged = results["direct-e1"].metrics
    for m in METRICS.values():
        assert (m.name in table.columns) == m.aggregated, m.name  # a per-case column, or a logged run metric
        assert m.name in logged, m.name  # every metric is logged on the eval run
        if m.median:
            assert f"{m.name}_median" in logged
        if m.unit_column:
            assert m.unit_column in table.columns


def test_rows_are_consistent():
    for m in METRICS.values():
        assert not (m.has_ci and not m.aggregated), m.name  # CIs resample per-case scores
        assert m.lower_is_better is not None or not (m.headline or m.has_ci), m.name  # ranked columns have a side
        assert m.headline or not m.shown or m.note, m.name  # a shown extra is defined in the footer
    assert names(headline=True) == ("dice", "iou", "hd95", "latency_ms", "nfe")
    assert catalog.RANK_BY[0] == "dice" and all(METRICS[k].aggregated for k in catalog.RANK_BY)


def test_search_objectives_read_their_direction_from_the_catalogue():
    assert (mode("val/dice"), mode("latency_ms"), mode("nfe")) == ("max", "min", "min")
    assert lookup("val/dice") is METRICS["dice"] and METRICS["latency_ms"].lower_is_better
    with pytest.raises(ValueError, match="no better direction"):
        mode("diversity")
    with pytest.raises(KeyError, match="not in the metric catalogue"):
        lookup("val/loss")


def test_a_new_row_puts_its_metric_on_the_board(monkeypatch):
    toy = Metric("toy", lower_is_better=True, aggregated=True, has_ci=True, shown=True, label="Toy", digits=3,
                 note="a toy error")
    monkeypatch.setitem(METRICS, "toy", toy)
    data = fx.report_data()
    cases = data.cases.assign(toy=1 - data.cases["dice"])
    assert aggregate(cases)["toy"] == pytest.approx(1 - aggregate(cases)["dice"])
    board = data.board.assign(toy_mean=1 - data.board["dice_mean"], toy_std=0.0)
    stats, _ = board_statistics(board, cases)
    assert stats[["toy_ci_low", "toy_ci_high"]].notna().all().all()
    assert (stats["toy_ci_low"] <= stats["toy_mean"]).all() and (stats["toy_mean"] <= stats["toy_ci_high"]).all()
    shown = display_frame(stats)
    assert list(shown.columns).index("toy") > list(shown.columns).index("nfe")
    assert shown["toy"].tolist() == [f"{v:.3f}" for v in stats["toy_mean"]]
    assert "toy: a toy error" in footer(stats)
    # LaTeX bolds the best of each headline column by its direction: a headline toy, lower is better
    monkeypatch.setitem(METRICS, "toy", dataclasses.replace(toy, headline=True))
    part = stats[stats["dataset"] == fx.DATASETS[0]]
    best = f"{part['toy_mean'].min():.3f}"
    assert rf"\textbf{{{best}}}" in latex(part) and "Toy" in latex(part)
    assert np.isclose(part["toy_mean"].min(), 1 - part["dice_mean"].max())
