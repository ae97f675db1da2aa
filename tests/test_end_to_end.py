"""A tiny suite through real Ray (Tune over Train) and a real SQLite MLflow store, run twice."""

from __future__ import annotations

import pytest

from segarena.platform.board.leaderboard import leaderboard
from segarena.platform.run.driver import run_suite
from segarena.platform.store.schema import Tag
from segarena.platform.store.tracking import KIND_EVAL, KIND_TRAIN, Tracker, cell_tags
from segarena.platform.store.workdir import WorkDir

SUITE = """
name: e2e
methods:
  - name: unet
    profile: tiny
  - name: nanny
    profile: tiny
  - name: boomy
    profile: tiny
  - name: liar
  - name: logity
datasets:
  - name: synthetic
    params: {size: 32, n_cases: 16}
seeds: [0]
epochs: 2
evaluation: {timing_repeats: 2, timing_warmup: 1, throughput_batch: 2, val_cases: 2}
"""


@pytest.mark.ray
def test_suite_runs_reruns_without_duplicates_and_ranks(ray_session, tmp_path, make_plugin_dir):
    plugins = make_plugin_dir("nanny", fail="nan")
    make_plugin_dir("boomy", fail="raise")
    make_plugin_dir("liar", fail="lie")
    make_plugin_dir("logity", fail="logits")
    suite = tmp_path / "e2e.yaml"
    suite.write_text(SUITE)
    workdir = tmp_path / "runs"
    tracker = Tracker(WorkDir.at(workdir).tracking_uri, WorkDir.at(workdir))
    exp = tracker.experiment("e2e")
    # a run left RUNNING by a driver that was killed
    from segarena.platform.plugins.registry import discover
    from segarena.platform.run.driver import prepare_cells
    from segarena.platform.spec.suite import load_suite

    spec, path = load_suite(suite)
    unet_cell = prepare_cells(spec, path, discover([plugins], use_env=False), WorkDir.at(workdir))[0]
    orphan = tracker.start_training(exp, unet_cell, cell_tags(unet_cell, "0", "x"))

    lines: list[str] = []
    first = run_suite(suite, workdir, plugin_dirs=[str(plugins)], echo=lines.append)
    assert (first.total, first.skipped, first.orphans_marked, first.ran) == (5, 0, 1, 5)
    errors = dict(first.failures)
    assert sorted(errors) == ["boomy × synthetic · seed 0", "liar × synthetic · seed 0", "logity × synthetic · seed 0",
                              "nanny × synthetic · seed 0"]
    # the harness measures what it ranks: a plugin that hides denoiser passes, or hands over logits
    assert "reports nfe 1 but the harness counted 5" in errors["liar × synthetic · seed 0"]
    assert "outside [0, 1]" in errors["logity × synthetic · seed 0"]
    assert "nan" in errors["nanny × synthetic · seed 0"].lower()
    assert errors["boomy × synthetic · seed 0"] == "ValueError: boom from a plugin"
    assert any("epoch 2/2" in ln for ln in lines) and any(ln.startswith("[5/5 cells") for ln in lines)
    assert tracker.client.get_run(orphan).info.status == "FAILED"

    second = run_suite(suite, workdir, plugin_dirs=[str(plugins)], echo=lines.append)
    assert (second.skipped, second.ran) == (1, 4)  # unet skipped, the failed cells retried

    train = tracker.runs([exp], KIND_TRAIN)
    finished = [r for r in train if r.info.status == "FINISHED"]
    assert [r.data.tags[Tag.METHOD] for r in finished] == ["unet"]
    evals = tracker.runs([exp], KIND_EVAL)
    assert len(evals) == 1 and evals[0].data.tags["mlflow.parentRunId"] == finished[0].info.run_id
    run = finished[0]
    assert {"best/dice", "best/iou", "best/hd95", "best/latency_ms", "best/nfe", "train/loss",
            "val/dice"} <= set(run.data.metrics)
    assert {"dice", "iou", "hd95", "latency_ms", "throughput_ips", "nfe", "peak_mem_mb"} <= set(evals[0].data.metrics)
    assert run.data.tags[Tag.DATASET_HASH] and run.data.tags[Tag.BEST_BUDGET] == "direct-e1"
    assert 0.0 <= evals[0].data.metrics["dice"] <= 1.0

    board, failed = leaderboard(tracker, "e2e")
    assert list(board["method"]) == ["unet"] and board.iloc[0]["n_seeds"] == 1
    assert board.iloc[0]["dice_mean"] == pytest.approx(evals[0].data.metrics["dice"])
    assert sorted(failed["method"]) == ["boomy", "liar", "logity", "nanny"]  # failed, never ranked
    assert "boom from a plugin" in failed.set_index("method").loc["boomy", "error"]


DDP_SUITE = """
name: ddp
methods:
  - name: unet
datasets:
  - name: synthetic
    params: {size: 32, n_cases: 12}
seeds: [0]
epochs: 2
steps_per_epoch: 2
resources: {workers_per_trial: 2, cpus_per_worker: 1}
evaluation: {timing_repeats: 2, timing_warmup: 1, throughput_batch: 2, val_cases: 2}
"""


@pytest.mark.ray
def test_two_worker_ddp_cell_validates_and_evaluates_on_rank_zero(ray_session, tmp_path):
    """Rank 0 alone computes val/dice and the test metrics: a DDP-wrapped forward there would hang."""
    suite = tmp_path / "ddp.yaml"
    suite.write_text(DDP_SUITE)
    summary = run_suite(suite, tmp_path / "runs", echo=lambda _: None)
    assert summary.failures == [] and summary.ran == 1
    tracker = Tracker(WorkDir.at(tmp_path / "runs").tracking_uri)
    (run,) = tracker.runs([summary.experiment_id], KIND_TRAIN)
    assert run.info.status == "FINISHED" and "val/dice" in run.data.metrics
