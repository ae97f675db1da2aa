"""The search stage without Ray: spec errors (one line, exit 2), narrowing, the search key, Pareto
selection, tuned cells, the searcher's trial states, and a spy plugin proving a trial never predicts
the test split."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from segarena_test_fakes import write_probe

from segarena.platform.cli import main
from segarena.platform.errors import SpecError
from segarena.platform.plugins.registry import discover
from segarena.platform.records import Settings
from segarena.platform.run.driver import prepare_cells
from segarena.platform.run.reports import OBJECTIVE, SEARCH_FINAL, SEARCH_STATUS
from segarena.platform.run.search.plan import TrialRecord, plans, tuned_cells
from segarena.platform.run.search.select import dominates, pareto_front, select
from segarena.platform.run.search.trainable import search_trial_loop
from segarena.platform.search_space import Choice, IntUniform, LogUniform
from segarena.platform.spec.search import narrow
from segarena.platform.spec.suite import SearchSpec, expand, load_suite
from segarena.platform.store.workdir import WorkDir

BASE = """
name: s
methods:
  - name: unet
    profile: tiny
{method_extra}
datasets:
  - name: synthetic
    params: {{size: 32, n_cases: 12}}
seeds: [0, 1]
epochs: 2
{search}
"""
SEARCH = "search: {trials: 4, epochs: 2}"


def _suite(tmp_path: Path, search: str = SEARCH, method_extra: str = "", name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(BASE.format(search=search, method_extra=method_extra))
    return path


@pytest.mark.parametrize("search, method_extra, pattern", [
    ("search: {trials: 4, trails: 2}", "", r"unknown field 'search.trails'"),
    ("search: {trials: 0}", "", r"field search.trials: Input should be greater than or equal to 1 \(got 0\)"),
    ("search: {trials: 2, objectives: [val/dice, val/iou]}", "",
     r"field search.objectives\[1\]: Input should be .*'latency_ms'.* \(got 'val/iou'\)"),
    ("search: {trials: 2, objectives: [latency_ms]}", "", r"field search.objectives: .*must start with val/dice"),
    ("search: {trials: 2, select: pareto}", "", r"field search: .*pareto needs two objectives"),
    ("search: {trials: 2, epochs: 2, grace_epochs: 3}", "", r"field search: .*grace_epochs 3 exceeds epochs 2"),
    (SEARCH, "    search: {momentum_x: [0.1, 0.9]}",
     r"field methods\[0\]\.search\.momentum_x: method 'unet' has no 'momentum_x' in its search_space\(\)"),
    (SEARCH, "    search: {lr: [1.0e-5, 1.0e-2]}", r"field methods\[0\]\.search\.lr: .*<= low < high <="),
    (SEARCH, "    search: {batch_size: [3]}",
     r"field methods\[0\]\.search\.batch_size: \[3\] must be a non-empty subset"),
    ("", "    search: {lr: [1.0e-2, 5.0e-2]}", r"field methods\[0\]\.search: .*no `search:` block"),
    ("search: {trials: 2}\nresources: {workers_per_trial: 2}", "",
     r"field resources.workers_per_trial: 2 with `search:`: multi-worker search trials are not supported"),
])
def test_spec_errors_are_one_line_exit_2(tmp_path, capsys, search, method_extra, pattern):
    import re

    suite = _suite(tmp_path, search, method_extra)
    code = main(["run", str(suite), "--workdir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert str(suite) in err and re.search(pattern, err), err
    assert not (tmp_path / "runs" / "mlflow.db").exists()  # nothing written to a store


def test_narrowing_restricts_and_rejects():
    assert narrow(LogUniform(1e-3, 1e-1), [1e-2, 5e-2], "f") == LogUniform(1e-2, 5e-2)
    assert narrow(IntUniform(1, 8), [2, 4], "f") == IntUniform(2, 4)
    assert narrow(Choice([2, 4, 8]), [4, 8], "f") == Choice([4, 8])
    for dist, value in [(LogUniform(1e-3, 1e-1), [1e-2]), (LogUniform(1e-3, 1e-1), [5e-2, 1e-2]),
                        (Choice([2, 4]), []), (Choice([2, 4]), [16])]:
        with pytest.raises(SpecError, match=r"^where: "):
            narrow(dist, value, "where")


def _plan(tmp_path: Path, search: str = SEARCH, method_extra: str = "", epochs: int = 2, plugin_dirs=()):
    path = _suite(tmp_path, search, method_extra).read_text().replace("epochs: 2\n", f"epochs: {epochs}\n", 1)
    (tmp_path / "s.yaml").write_text(path)
    spec, p = load_suite(tmp_path / "s.yaml")
    reg = discover(list(plugin_dirs), use_env=False)
    cells = prepare_cells(spec, p, reg, WorkDir.at(tmp_path / "runs"))
    return plans(spec, cells, reg, p)[0], cells


def test_search_key_covers_the_search_not_the_suites_epochs(tmp_path):
    plan, cells = _plan(tmp_path)
    assert plan.method == "unet" and [c.seed for c in plan.cells] == [0, 1] and plan.base is cells[0]
    assert plan.space["lr"] == LogUniform(1e-3, 1e-1)
    assert _plan(tmp_path, epochs=5)[0].key == plan.key  # the final cells' epochs do not redo the search
    assert _plan(tmp_path, search="search: {trials: 5, epochs: 2}")[0].key != plan.key
    narrowed = _plan(tmp_path, method_extra="    search: {lr: [1.0e-2, 5.0e-2]}")[0]
    assert narrowed.key != plan.key and narrowed.space["lr"] == LogUniform(1e-2, 5e-2)
    job = plan.trial_job(_settings(tmp_path))
    assert job.cell.epochs == 2 and [b.name for b in job.budgets] == ["direct-e1"]


def _point(trial: int, name: str, dice: float, latency: float, nfe: int = 1) -> dict:
    return {"trial": trial, "name": name, "budget": {"sampler": "ddim", "steps": nfe, "ensemble": 1}, "dice": dice,
            "latency_ms": latency, "nfe": nfe, "config": {"lr": 0.01 * (trial + 1)}}


def test_pareto_front_is_non_dominated_and_complete():
    rng = random.Random(0)
    points = [_point(i // 3, f"b{i % 3}", rng.random(), rng.uniform(1, 100)) for i in range(60)]
    objectives = ["val/dice", "latency_ms"]
    front = pareto_front(points, objectives)
    assert len(front) >= 2
    for p in front:
        assert not any(dominates(q, p, objectives) for q in points)
    for p in points:  # every point off the front is dominated by one on it
        if p not in front:
            assert any(dominates(q, p, objectives) for q in front)
    assert front == sorted(front, key=lambda p: -p["dice"])
    # dominance is strict: a copy of a point does not dominate it
    assert not dominates(points[0], dict(points[0]), objectives)


def _records() -> list[TrialRecord]:
    return [TrialRecord({"lr": 0.01}, "finished", [0.5, 0.6], [_point(0, "ddim1-e1", 0.60, 10, 1),
                                                                 _point(0, "ddim5-e1", 0.70, 50, 5)], 3.0),
            TrialRecord({"lr": 0.02}, "finished", [0.4, 0.5], [_point(1, "ddim1-e1", 0.55, 12, 1),
                                                                 _point(1, "ddim5-e1", 0.75, 60, 5)], 3.0),
            TrialRecord({"lr": 0.03}, "stopped", [0.9], [], 1.0),  # the best curve, but not finished: never chosen
            TrialRecord({"lr": 0.04}, "failed", [], [], 0.5, "nan")]


def test_select_best_and_pareto_on_validation_points():
    records = _records()
    best = select(records, SearchSpec(select="best", objectives=["val/dice"], max_selected=3))
    assert [(p["config"]["lr"], p["name"]) for p in best] == [(0.02, "ddim5-e1")]
    pareto = select(records, SearchSpec(select="pareto", objectives=["val/dice", "latency_ms"], max_selected=2))
    # front: (0.75, 60) (0.70, 50) (0.60, 10); two picks spread from the best Dice to the cheapest
    assert [(p["dice"], p["latency_ms"]) for p in pareto] == [(0.75, 60), (0.60, 10)]
    assert len({p["name"] for p in pareto}) == 2
    assert select(records[2:], SearchSpec(select="best", objectives=["val/dice"], max_selected=1)) == []


def test_tuned_cells_copy_every_seed_with_the_chosen_config(tmp_path):
    plan, cells = _plan(tmp_path, search="search: {trials: 4, epochs: 2, budgets: false}")
    selected = [_point(0, "direct-e1", 0.8, 5.0) | {"budget": {"sampler": "direct", "steps": 1, "ensemble": 1},
                                                    "config": {"lr": 0.02, "batch_size": 8}}]
    tuned = tuned_cells(plan, selected)
    assert [c.seed for c in tuned] == [0, 1]
    assert all(c.hparams["lr"] == 0.02 and c.hparams["batch_size"] == 8 for c in tuned)
    assert {c.key for c in tuned}.isdisjoint({c.key for c in cells})  # their own training keys
    assert all(c.epochs == 2 and c.budgets == cells[0].budgets for c in tuned)  # the suite's epochs, not search's


def test_searcher_records_every_trial_with_its_state():
    pytest.importorskip("ray.tune.search.optuna")
    from types import SimpleNamespace

    from segarena.platform.run.search.tune import make_searcher

    plan = SimpleNamespace(space={"lr": LogUniform(1e-3, 1e-1)}, key="k",
                           search=SearchSpec(sampler="random", seed=0, objectives=["val/dice"]))
    searcher = make_searcher(plan)
    searcher.feed(_records(), ["val/dice"])  # warm start: a killed driver's four trials
    final = {"val/dice": 0.5, OBJECTIVE["val/dice"]: 0.7, SEARCH_STATUS: "finished", SEARCH_FINAL: 1,
             "training_iteration": 2}
    for tid, result, error in [("a", final, False), ("b", {**final, SEARCH_FINAL: 0, SEARCH_STATUS: "running"}, False),
                               ("c", {**final, SEARCH_FINAL: 0, SEARCH_STATUS: "failed",
                                      OBJECTIVE["val/dice"]: math.nan}, False),
                               ("d", {**final, OBJECTIVE["val/dice"]: math.nan}, False), ("e", None, True)]:
        assert searcher.suggest(tid)["lr"] > 0
        searcher.on_trial_result(tid, {**(result or final), "training_iteration": 1})
        searcher.on_trial_complete(tid, result, error=error)
    assert searcher.states() == {"COMPLETE": 3, "PRUNED": 2, "FAIL": 4}
    assert len(searcher._ot_study.trials) == 9  # nothing dropped


def _settings(tmp_path: Path, plugin_dirs: tuple[str, ...] = ()) -> Settings:
    return Settings(tracking_uri="sqlite://", workdir=str(tmp_path / "runs"), experiment_id="0",
                    plugin_dirs=plugin_dirs, workers_per_trial=1, cpus_per_worker=1.0, gpus_per_worker=0.0,
                    failure_retries=0, device="cpu", segarena_version="0", git_sha="x", driver="d")


def test_a_trial_predicts_validation_never_test(tmp_path):
    import hashlib

    log = tmp_path / "spy.log"
    plugins = write_probe(tmp_path / "plugins", "spy", spy=str(log))  # a hash of every image it predicts
    suite = _suite(tmp_path, method_extra="").read_text().replace("name: unet", "name: spy")
    (tmp_path / "s.yaml").write_text(suite.replace("seeds: [0, 1]", "seeds: [0]"))
    spec, path = load_suite(tmp_path / "s.yaml")
    reg = discover([str(plugins)], use_env=False)
    cells = expand(spec, reg, path)
    plan = plans(spec, prepare_cells(spec, path, reg, WorkDir.at(tmp_path / "runs")), reg, path)[0]
    reports: list[dict] = []
    search_trial_loop(plan.trial_job(_settings(tmp_path, (str(plugins),))), {"lr": 0.05}, reports.append)
    assert [r[SEARCH_FINAL] for r in reports] == [0, 1] and reports[-1][SEARCH_STATUS] == "finished"
    points = json.loads(reports[-1]["search/points"])
    assert [p["name"] for p in points] == ["direct-e1"] and 0 <= points[0]["dice"] <= 1

    from segarena.platform.run.cell_data import load_cell_data

    data = load_cell_data(reg, "synthetic", None, cells[0].dataset_params, WorkDir.at(tmp_path / "runs").cache, 0)

    def digests(part: str) -> set[str]:
        return {hashlib.sha1(c.image.numpy().tobytes()).hexdigest() for c in data.cases(part)}

    seen = set(log.read_text().split())
    val, test = digests("val"), digests("test")
    assert seen and seen <= val | digests("train")  # (timing draws from the validation cases too)
    assert seen & val
    assert not seen & test, "a search trial predicted test cases"
