"""Tracking contract and leaderboard recomputation, on a real SQLite MLflow store without Ray."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from segarena.platform.leaderboard import leaderboard, render
from segarena.platform.suite import Cell
from segarena.platform.tracking import ORPHAN_ERROR, Tracker, cell_tags, default_tracking_uri


def make_cell(suite, method="unet", seed=0, dataset="synthetic"):
    return Cell(suite=suite, method=method, profile="tiny", hparams={"lr": 0.1}, plugin_version="1", dataset=dataset,
                dataset_path=None, dataset_params={}, seed=seed,
                budgets=({"sampler": "direct", "steps": 1, "ensemble": 1},), epochs=1, steps_per_epoch=None,
                evaluation={})


def finish(tracker, exp, cell, dices, logged_dice=0.123):
    tags = cell_tags(cell, "0.1.0", "abc")
    run_id = tracker.start_cell(exp, cell, tags)
    per_case = pd.DataFrame({"budget": "direct-e1", "case_id": [f"c{i}" for i in range(len(dices))], "class": "1",
                             "dice": dices, "iou": dices, "hd95": [1.0] * len(dices), "hd95_unit": "px",
                             "gt_empty": False, "pred_empty": False, "gt_voxels": 10, "pred_voxels": 10})
    results = {"direct-e1": {"metrics": {"dice": logged_dice, "latency_ms": 5.0, "nfe": 1.0}, "tags": {}}}
    tracker.finish_cell(exp, run_id, cell, tags, results, per_case,
                        {"config.json": {"cell": cell.as_dict()}, "environment.json": {"torch": "x"}}, {})
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store per module: creating its schema costs seconds."""
    root = tmp_path_factory.mktemp("store")
    return Tracker(default_tracking_uri(root), root / "artifacts"), root


@pytest.fixture
def tracker(store):
    return store[0]


@pytest.fixture
def suite(request):
    """An experiment name of this test's own."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)


def test_tags_metrics_artifacts_of_a_finished_cell(tracker, suite, store):
    exp = tracker.experiment(suite)
    run_id = finish(tracker, exp, make_cell(suite), [0.5, 0.7])
    run = tracker.client.get_run(run_id)
    for tag in ("suite", "method", "dataset", "seed", "budget", "profile", "cell", "plugin_version", "version",
                "git_sha", "status"):
        assert f"segarena.{tag}" in run.data.tags, tag
    assert run.info.status == "FINISHED" and run.data.tags["segarena.status"] == "finished"
    assert {"dice", "latency_ms", "nfe"} <= set(run.data.metrics)
    names = {f.path for f in tracker.client.list_artifacts(run_id)}
    assert {"per_case.parquet", "config.json", "environment.json"} <= names
    assert str(store[1] / "artifacts") in run.info.artifact_uri
    assert tracker.finished_cells(exp) == {make_cell(suite).key: run_id}


def test_leaderboard_recomputes_from_per_case_rows(tracker, suite):
    exp = tracker.experiment(suite)
    finish(tracker, exp, make_cell(suite, seed=0), [0.4, 0.6], logged_dice=0.99)  # the logged mean is ignored
    finish(tracker, exp, make_cell(suite, seed=1), [0.6, 0.8])
    finish(tracker, exp, make_cell(suite, method="other"), [0.9, 0.9])
    board, failed = leaderboard(tracker, suite)
    assert list(board["method"]) == ["other", "unet"] and list(board["rank"]) == [1, 2]
    unet = board[board["method"] == "unet"].iloc[0]
    assert unet["dice_mean"] == pytest.approx(0.6) and unet["n_seeds"] == 2
    assert unet["dice_std"] == pytest.approx(pd.Series([0.5, 0.7]).std())
    assert failed.empty
    text = render(board, failed, "table")
    assert "0.6000 ± 0.1414" in text


def test_rerun_of_a_cell_is_counted_once(tracker, suite):
    exp = tracker.experiment(suite)
    finish(tracker, exp, make_cell(suite), [0.1])
    finish(tracker, exp, make_cell(suite), [0.3])  # newer run of the same cell wins
    board, _ = leaderboard(tracker, suite)
    assert len(board) == 1 and board.iloc[0]["dice_mean"] == pytest.approx(0.3)
    assert board.iloc[0]["n_seeds"] == 1


def test_orphans_are_marked_failed_and_never_counted(tracker, suite):
    exp = tracker.experiment(suite)
    cell = make_cell(suite, method="crashy")
    orphan = tracker.start_cell(exp, cell, cell_tags(cell, "0.1.0", "abc"))
    assert tracker.mark_orphans(exp) == [orphan]
    run = tracker.client.get_run(orphan)
    assert run.info.status == "FAILED" and run.data.tags["segarena.error"] == ORPHAN_ERROR
    board, failed = leaderboard(tracker, suite)
    assert board.empty and list(failed["method"]) == ["crashy"]


def test_failed_cells_are_marked_on_the_board(tracker, suite):
    exp = tracker.experiment(suite)
    finish(tracker, exp, make_cell(suite, seed=0), [0.5])
    bad = make_cell(suite, seed=1)
    run_id = tracker.start_cell(exp, bad, cell_tags(bad, "0.1.0", "abc"))
    tracker.fail_cell(run_id, "ValueError: boom")
    board, failed = leaderboard(tracker, suite)
    assert board.iloc[0]["failed_seeds"] == 1
    assert "ValueError: boom" in render(board, failed, "table")
    assert "Failed cells" in render(board, failed, "markdown")


def test_unknown_suite_is_an_error(tracker, suite):
    from segarena.platform.errors import SegarenaError

    tracker.experiment(suite)
    with pytest.raises(SegarenaError, match="no suite 'nope'"):
        leaderboard(tracker, "nope")


@pytest.mark.parametrize("fmt", ["csv", "json", "markdown", "parquet"])
def test_formats(tracker, suite, tmp_path, fmt):
    exp = tracker.experiment(suite)
    finish(tracker, exp, make_cell(suite), [0.5])
    board, failed = leaderboard(tracker, suite)
    out = tmp_path / f"board.{fmt}"
    render(board, failed, fmt, str(out))
    if fmt == "parquet":
        assert pd.read_parquet(out)["dice_mean"].iloc[0] == pytest.approx(0.5)
    else:
        assert "unet" in out.read_text()


def test_cell_budget_tag_uses_budget_names(tracker, suite):
    run = tracker.client.get_run(finish(tracker, tracker.experiment(suite), make_cell(suite), [0.5]))
    assert run.data.tags["segarena.budget"] == "direct-e1"


def test_two_variants_of_a_method_stay_separate_rows(tracker, suite):
    from dataclasses import replace

    exp = tracker.experiment(suite)
    base = make_cell(suite)
    other = replace(base, hparams={"lr": 0.01})
    finish(tracker, exp, base, [0.4])
    finish(tracker, exp, other, [0.8])
    board, _ = leaderboard(tracker, suite)
    assert sorted(board["dice_mean"]) == pytest.approx([0.4, 0.8]) and set(board["n_seeds"]) == {1}
    labels = render(board, _, "table")
    assert f"unet·{other.variant[:6]}" in labels and f"unet·{base.variant[:6]}" in labels
