"""Train once, evaluate many: a new budget or new evaluation settings evaluate the stored weights of
a finished training and train nothing (real Ray, real SQLite MLflow store)."""

from __future__ import annotations

import pytest
from segarena_test_fakes import write_probe

from segarena.platform.board.leaderboard import leaderboard
from segarena.platform.run.driver import run_suite
from segarena.platform.store.schema import Tag
from segarena.platform.store.tracking import KIND_EVAL, KIND_TRAIN, Tracker
from segarena.platform.store.workdir import WorkDir

SUITE = """
name: once
methods:
  - name: traced
    hparams: {{trace: {trace}}}
    budgets: {budgets}
datasets:
  - name: synthetic
    params: {{size: 32, n_cases: 12}}
seeds: [0]
epochs: 2
steps_per_epoch: 3
evaluation: {{timing_repeats: {repeats}, timing_warmup: 1, throughput_batch: 2, val_cases: 2}}
"""


@pytest.mark.ray
def test_new_budget_and_new_evaluation_settings_train_nothing(ray_session, tmp_path):
    # the probe as `traced`: one line per training step in its `trace` file; a little generator noise
    plugins = write_probe(tmp_path / "plugins", "traced", stochastic=True)
    trace = tmp_path / "trace.txt"
    suite = tmp_path / "once.yaml"
    wd = WorkDir.at(tmp_path / "runs")
    tracker = Tracker(wd.tracking_uri, wd)
    one = "[{ensemble: 1}]"
    two = "[{ensemble: 1}, {ensemble: 2}]"

    def run(budgets: str, repeats: int, lines: list[str]):
        suite.write_text(SUITE.format(trace=trace, budgets=budgets, repeats=repeats))
        return run_suite(suite, wd.root, plugin_dirs=[str(plugins)], echo=lines.append)

    first = run(one, 2, [])
    assert (first.trained, first.evaluated, first.failures) == (1, 0, [])
    steps = trace.read_text().count("step")
    assert steps == 6
    exp = first.experiment_id
    (train,) = tracker.runs([exp], KIND_TRAIN)
    history = [(m.step, m.value) for m in tracker.client.get_metric_history(train.info.run_id, "train/loss")]

    lines: list[str] = []
    second = run(two, 2, lines)
    assert (second.trained, second.evaluated, second.skipped, second.failures) == (0, 1, 0, [])
    assert any("evaluate from checkpoint (direct-e2)" in ln for ln in lines), lines
    assert trace.read_text().count("step") == steps  # not one training step
    (train_again,) = tracker.runs([exp], KIND_TRAIN)  # no new training run
    assert train_again.info.run_id == train.info.run_id
    assert [(m.step, m.value) for m in tracker.client.get_metric_history(train.info.run_id, "train/loss")] == history
    evals = tracker.runs([exp], KIND_EVAL)
    assert sorted(r.data.tags[Tag.BUDGET] for r in evals) == ["direct-e1", "direct-e2"]
    assert all(r.data.tags[Tag.PARENT] == train.info.run_id for r in evals)
    board, _ = leaderboard(tracker, "once")
    assert sorted(board["budget"]) == ["direct-e1", "direct-e2"]

    third = run(two, 3, [])  # new evaluation settings: every budget again from the stored weights
    assert (third.trained, third.evaluated) == (0, 1)
    assert trace.read_text().count("step") == steps
    assert len(tracker.runs([exp], KIND_EVAL)) == 4
    assert len(leaderboard(tracker, "once")[0]) == 2  # the newest evaluation of each budget counts

    fourth = run(two, 3, [])
    assert (fourth.skipped, fourth.ran) == (1, 0)
