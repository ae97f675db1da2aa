"""Tracking contract and leaderboard recomputation, on a real SQLite MLflow store without Ray."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from segarena.platform.board.leaderboard import leaderboard, render
from segarena.platform.records import Budget, BudgetResult, Cell, CellResult, Evaluation, Task, Timings
from segarena.platform.store.schema import Tag
from segarena.platform.store.tracking import KIND_EVAL, ORPHAN_ERROR, Tracker, cell_tags
from segarena.platform.store.workdir import WorkDir

DIRECT = Budget(steps=1, ensemble=1, sampler="direct")


def make_cell(suite, method="unet", seed=0, dataset="synthetic", budgets=(DIRECT,)):
    return Cell(suite=suite, method=method, profile="tiny", hparams={"lr": 0.1}, plugin_version="1", dataset=dataset,
                dataset_path=None, dataset_params={}, seed=seed, budgets=tuple(budgets), epochs=1,
                steps_per_epoch=None, evaluation=Evaluation())


def table(budget, dices):
    return pd.DataFrame({"budget": budget, "case_id": [f"c{i}" for i in range(len(dices))], "class": "1",
                         "dice": dices, "iou": dices, "hd95": [1.0] * len(dices), "hd95_unit": "px",
                         "gt_empty": False, "pred_empty": False, "gt_voxels": 10, "pred_voxels": 10})


def result(per_budget: dict[str, tuple[Budget, list[float], float]]) -> CellResult:
    """A training's result with one (budget, per-case dices, logged dice) per budget name."""
    budgets = [BudgetResult(b, {"dice": logged, "hd95": 1.0, "latency_ms": 5.0, "nfe": float(b.nfe)})
               for b, _, logged in per_budget.values()]
    per_case = pd.concat([table(name, d) for name, (_, d, _) in per_budget.items()], ignore_index=True)
    return CellResult(budgets=budgets, per_case=per_case, history=[{"epoch": 0, "train/loss": 0.5}],
                      timings=Timings(), fingerprint={"torch": "x"}, split={"train": [], "val": [], "test": []},
                      task=Task(1, 1, (8, 8)), parameters=10, dataset_hash="abc")


def finish(tracker, exp, cell, dices, logged_dice=0.123):
    tags = cell_tags(cell, "0.1.0", "abc")
    run_id = tracker.start_training(exp, cell, tags)
    tracker.finish_training(exp, run_id, cell, tags, result({"direct-e1": (Budget(), dices, logged_dice)}),
                            {"config.json": {"cell": cell.as_dict()}, "environment.json": {"torch": "x"}}, {})
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store per module: creating its schema costs seconds."""
    root = WorkDir.at(tmp_path_factory.mktemp("store"))
    return Tracker(root.tracking_uri, root), root.root


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
    assert run.info.status == "FINISHED" and run.data.tags[Tag.STATUS] == "finished"
    assert {"best/dice", "best/latency_ms", "best/nfe"} <= set(run.data.metrics)
    assert not {"dice", "latency_ms"} & set(run.data.metrics)  # plain names belong to evaluation runs
    run_dir = WorkDir(store[1]).artifact_path(run.info.artifact_uri)
    assert {"config.json", "environment.json", "harness.json"} <= {p.name for p in run_dir.iterdir()}
    assert str(store[1]) not in run.info.artifact_uri  # relative to the store's artifact root: portable
    (child,) = tracker.runs([exp], KIND_EVAL)
    child_dir = WorkDir(store[1]).artifact_path(child.info.artifact_uri)
    assert {"per_case.parquet", "per_case.csv"} <= {p.name for p in child_dir.iterdir()}
    assert child.data.params["budget.sampler"] == "direct" and child.data.params["method"] == "unet"
    assert tracker.finished_trainings(exp) == {make_cell(suite).key: run_id}


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


def test_the_plugins_headline_loss_is_tagged_on_its_training_and_read_back(tracker, suite):
    """The report draws the loss the plugin names (``headline_loss``): written when the training run is
    created, read back by the typed view and by the report's curve reader."""
    from segarena.dashboards.data import load_curves_and_cells
    from segarena.platform.board.leaderboard import seed_scores
    from segarena.platform.store.schema import TrainingRun

    exp = tracker.experiment(suite)
    cell = make_cell(suite)
    tags = cell_tags(cell, "0.1.0", "abc")
    run_id = tracker.start_training(exp, cell, tags, headline_loss="g_mse")
    assert tracker.client.get_run(run_id).data.tags[Tag.HEADLINE_LOSS] == "g_mse"  # there while it trains
    tracker.finish_training(exp, run_id, cell, tags, result({"direct-e1": (Budget(), [0.5], 0.5)}),
                            {"config.json": {"cell": cell.as_dict()}, "environment.json": {"torch": "x"}}, {})
    assert TrainingRun.from_mlflow(tracker.client.get_run(run_id)).headline_loss == "g_mse"
    curves, _ = load_curves_and_cells(tracker, seed_scores(tracker, suite)[0])
    assert list(curves["key"]) == ["train/loss"] and set(curves["headline"]) == {"g_mse"}
    plain = finish(tracker, tracker.experiment(suite + "_plain"), make_cell(suite + "_plain"), [0.5])
    assert Tag.HEADLINE_LOSS not in tracker.client.get_run(plain).data.tags  # a plugin that names none


def test_orphans_are_marked_failed_and_never_counted(tracker, suite):
    exp = tracker.experiment(suite)
    cell = make_cell(suite, method="crashy")
    orphan = tracker.start_training(exp, cell, cell_tags(cell, "0.1.0", "abc"))
    assert tracker.mark_orphans(exp) == [orphan]
    run = tracker.client.get_run(orphan)
    assert run.info.status == "FAILED" and run.data.tags[Tag.ERROR] == ORPHAN_ERROR
    board, failed = leaderboard(tracker, suite)
    assert board.empty and list(failed["method"]) == ["crashy"]


def test_failed_cells_are_marked_on_the_board(tracker, suite):
    exp = tracker.experiment(suite)
    finish(tracker, exp, make_cell(suite, seed=0), [0.5])
    bad = make_cell(suite, seed=1)
    run_id = tracker.start_training(exp, bad, cell_tags(bad, "0.1.0", "abc"))
    tracker.fail_run(run_id, "ValueError: boom")
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
    assert run.data.tags[Tag.BUDGET] == "direct-e1"


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


def test_cell_run_carries_the_best_budget_never_the_first(tracker, suite):
    """Sorting cell runs by ``best/dice`` in the MLflow UI ranks them by their best budget."""
    exp = tracker.experiment(suite)
    ddim1, ddim3 = Budget(5, 1, "ddim"), Budget(5, 3, "ddim")
    cell = make_cell(suite, budgets=(ddim1, ddim3))
    tags = cell_tags(cell, "0.1.0", "abc")
    run_id = tracker.start_training(exp, cell, tags)
    res = result({"ddim5-e1": (ddim1, [0.5], 0.536), "ddim5-e3": (ddim3, [0.7], 0.675)})
    tracker.finish_training(exp, run_id, cell, tags, res, {"environment.json": {}}, {})
    run = tracker.client.get_run(run_id)
    assert run.data.metrics["best/dice"] == pytest.approx(0.675)
    assert run.data.tags[Tag.BEST_BUDGET] == "ddim5-e3"
    assert tracker.client.get_run(run_id).inputs.dataset_inputs[0].dataset.digest == "abc"


def test_description_goes_to_the_experiment_note(tracker, suite):
    exp = tracker.experiment(suite, description="what this suite measures")
    assert tracker.client.get_experiment(exp).tags["mlflow.note.content"] == "what this suite measures"


def test_copied_work_dir_gives_the_same_leaderboard(tmp_path):
    import shutil

    original = WorkDir.at(tmp_path / "original")
    tracker = Tracker(original.tracking_uri, original)
    exp = tracker.experiment("copy")
    finish(tracker, exp, make_cell("copy"), [0.4, 0.6])
    before, _ = leaderboard(tracker, "copy")
    copy = WorkDir.at(tmp_path / "elsewhere" / "copy")
    shutil.copytree(original.root, copy.root)
    shutil.rmtree(original.root)
    after, _ = leaderboard(Tracker(copy.tracking_uri, copy), "copy")
    pd.testing.assert_frame_equal(before.drop(columns=["run_ids"], errors="ignore"),
                                  after.drop(columns=["run_ids"], errors="ignore"))
    assert after.iloc[0]["dice_mean"] == pytest.approx(0.5)


def test_a_missing_artifact_is_one_line_naming_run_and_file(tmp_path):
    import shutil

    from segarena.platform.errors import StoreError

    wd = WorkDir.at(tmp_path / "w")
    tracker = Tracker(wd.tracking_uri, wd)
    exp = tracker.experiment("broken")
    finish(tracker, exp, make_cell("broken"), [0.4])
    shutil.rmtree(wd.artifacts)
    with pytest.raises(StoreError) as info:
        leaderboard(tracker, "broken")
    message = str(info.value)
    assert "per_case.parquet" in message and "run " in message and "\n" not in message


def test_reading_the_store_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys; import segarena.platform.board.leaderboard, segarena.platform.store.tracking; "
            "bad = [m for m in ('torch', 'ray', 'monai') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_live_driver_keeps_its_cells_and_a_dead_one_loses_them(tracker, suite):
    """Orphans are the runs of drivers without a live lease: another live driver's cells are left alone."""
    import socket

    exp = tracker.experiment(suite)
    live = tracker.start_driver(exp, suite, "live-driver", socket.gethostname())
    dead = tracker.start_driver(exp, suite, "dead-driver", socket.gethostname())
    tracker.set_tags(dead, {Tag.PID: "999999999"})  # no such process on this machine
    mine, theirs = make_cell(suite, seed=0), make_cell(suite, seed=1)
    kept = tracker.start_training(exp, mine, {**cell_tags(mine, "0", "x"), Tag.DRIVER: "live-driver"})
    lost = tracker.start_training(exp, theirs, {**cell_tags(theirs, "0", "x"), Tag.DRIVER: "dead-driver"})
    assert [r.data.tags[Tag.DRIVER] for r in tracker.live_drivers(exp)] == ["live-driver"]
    assert tracker.mark_orphans(exp) == [lost]
    assert tracker.client.get_run(kept).info.status == "RUNNING"
    tracker.stop_driver(live)
    assert tracker.live_drivers(exp) == []


def test_a_second_driver_of_a_suite_is_refused_by_the_store(tracker, suite):
    from segarena.platform.errors import SegarenaError
    from segarena.platform.run.driver import _Lease

    exp = tracker.experiment(suite)
    first = _Lease(tracker, exp, suite, "d1", every_s=0.2)
    try:
        with pytest.raises(SegarenaError, match="already running: driver d1"):
            _Lease(tracker, exp, suite, "d2")
    finally:
        first.release()
    _Lease(tracker, exp, suite, "d3").release()  # free again once the first one is gone


def test_two_drivers_of_a_suite_started_together_leave_exactly_one_running(tracker, suite, monkeypatch):
    """Both leases are in the store before either driver looks: the older one goes on, the newer one is
    refused (seeing each other, both used to give up and nothing ran)."""
    import time

    from segarena.platform.errors import SegarenaError
    from segarena.platform.run.driver import _Lease

    exp = tracker.experiment(suite)
    real = tracker.start_driver

    def racing(exp_id, suite_, driver, host):
        own = real(exp_id, suite_, driver, host)
        time.sleep(0.01)  # the rival's lease, recorded just after this one's and before this one's check
        rivals.append(real(exp_id, suite_, "second", host))
        return own

    rivals: list[str] = []
    monkeypatch.setattr(tracker, "start_driver", racing)
    first = _Lease(tracker, exp, suite, "first", every_s=0.2)  # not refused by the newer rival
    monkeypatch.setattr(tracker, "start_driver", real)
    try:
        assert [r.data.tags[Tag.DRIVER] for r in tracker.live_drivers(exp)] == ["first", "second"]
        with pytest.raises(SegarenaError, match="already running: driver first"):
            _Lease(tracker, exp, suite, "third")
    finally:
        first.release()
        tracker.stop_driver(rivals[0])
    assert tracker.live_drivers(exp) == []


def test_a_late_finish_cannot_bring_back_a_run_marked_failed(tracker, suite):
    from segarena.platform.errors import StoreError

    exp = tracker.experiment(suite)
    cell = make_cell(suite)
    tags = cell_tags(cell, "0", "x")
    run_id = tracker.start_training(exp, cell, tags)
    tracker.fail_run(run_id, ORPHAN_ERROR)  # another driver took this one's driver for dead
    with pytest.raises(StoreError, match="not finished"):
        tracker.finish_training(exp, run_id, cell, tags, result({"direct-e1": (Budget(), [0.5], 0.5)}),
                                {"environment.json": {}}, {})
    assert tracker.client.get_run(run_id).info.status == "FAILED"
    children = [r for r in tracker.runs([exp], KIND_EVAL) if r.data.tags[Tag.PARENT] == run_id]
    assert not [r for r in children if r.info.status == "FINISHED"]  # nothing counted under the failed parent


def test_a_locked_sqlite_database_is_retried_whatever_wraps_the_error():
    """Two trials finishing together write to one SQLite file; MLflow lets SQLAlchemy's error through."""
    import sqlite3

    from segarena.platform.store.retry import retry as _retry

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "ok"

    assert _retry(flaky) == "ok" and len(calls) == 3
    with pytest.raises(ValueError):
        _retry(lambda: (_ for _ in ()).throw(ValueError("not a lock")))


def test_the_error_line_skips_sqlalchemys_background_link():
    from segarena.platform.run.trainable import error_line

    err = RuntimeError("(sqlite3.OperationalError) database is locked\n(Background on this error at: https://x)")
    assert error_line(err) == "(sqlite3.OperationalError) database is locked"


def test_two_drivers_creating_one_experiment_at_once_both_get_it(tracker, suite, monkeypatch):
    """The other driver created the experiment between our lookup and our create: we use theirs (a shared
    server answered RESOURCE_ALREADY_EXISTS to the loser in CI)."""
    theirs = tracker.experiment(suite)
    lookups = iter([None])
    real = tracker.client.get_experiment_by_name
    monkeypatch.setattr(tracker.client, "get_experiment_by_name", lambda name: next(lookups, real(name)))
    assert tracker.experiment(suite) == theirs


def test_retry_widened_for_a_known_race_retries_that_error_only():
    import sqlite3

    from segarena.platform.store.retry import retry as _retry

    calls = []

    def racing():
        calls.append(1)
        if len(calls) < 2:
            raise sqlite3.IntegrityError("UNIQUE constraint failed: datasets.dataset_uuid")
        return "linked"

    def integrity(text):
        return "integrity" in text

    assert _retry(racing, retriable=integrity) == "linked" and len(calls) == 2
    calls.clear()
    with pytest.raises(sqlite3.IntegrityError):
        _retry(racing)  # the default retries locked databases only
    assert len(calls) == 1
