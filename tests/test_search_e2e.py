"""The search stage through real Ray Tune + Optuna and a real SQLite MLflow store.

- NaN trials are failed in MLflow and in the searcher, ASHA stops trials, trials recorded ==
  requested, and no placement group outlives the search.
- (slow) a Pareto search over (val/dice, latency_ms) on MedSegDiff returns non-dominated points
  at different DDIM budgets.
- (slow) a driver killed mid-search: the next run resumes without rerunning recorded trials, the
  tuned cells train beside the default ones, and a third run skips the finished search.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from segarena_test_fakes import write_probe

from segarena.platform.run.search.select import all_points, dominates, pareto_front
from segarena.platform.run.search.stage import search_outcomes
from segarena.platform.store.schema import KIND_SEARCH, KIND_TRIAL, Tag
from segarena.platform.store.tracking import Tracker
from segarena.platform.store.workdir import WorkDir


def _plugin(tmp_path: Path, fails: list[str], sleep: float = 0.0) -> Path:
    """The probe as ``flaky``: its search space draws `fail` from ``fails`` (`nan` trials produce a NaN loss);
    `sleep` slows each step."""
    return write_probe(tmp_path / "plugins", "flaky", fails=fails, fail="no", sleep=sleep)


SUITE = """
name: {name}
methods:
  - name: flaky
    profile: tiny
datasets:
  - name: synthetic
    params: {{size: 32, n_cases: 16}}
seeds: [0]
epochs: 1
steps_per_epoch: 4
search: {{trials: 6, epochs: 3, grace_epochs: 1, sampler: random, seed: 0}}
evaluation: {{timing_repeats: 2, timing_warmup: 1, throughput_batch: 2, val_cases: 3}}
{extra}
"""


def _search_stage(suite: Path, workdir: Path, plugins: Path, lines: list[str]):
    """Just the search stage of ``segarena run`` (no cells), on the test session's Ray."""
    from importlib.metadata import version

    from segarena.platform.plugins.registry import discover
    from segarena.platform.records import Settings
    from segarena.platform.run.driver import prepare_cells
    from segarena.platform.spec.suite import load_suite

    spec, path = load_suite(suite)
    wd = WorkDir.at(workdir)
    reg = discover([str(plugins)], use_env=False)
    cells = prepare_cells(spec, path, reg, wd)
    tracker = Tracker(wd.tracking_uri, wd)
    exp = tracker.experiment(spec.name)
    settings = Settings(tracking_uri=wd.tracking_uri, workdir=str(wd.root), experiment_id=exp,
                        plugin_dirs=(str(plugins),), workers_per_trial=1, cpus_per_worker=1.0, gpus_per_worker=0.0,
                        failure_retries=0, device="cpu", segarena_version=version("segarena"), git_sha="x",
                        driver="test")
    return tracker, exp, search_outcomes(spec, path, cells, tracker, settings, None, False, lines.append)


def _trial_runs(tracker: Tracker, exp: str) -> list:
    return tracker.runs([exp], KIND_TRIAL)


@pytest.mark.ray
@pytest.mark.slow  # measured 23 s (load 5) to 123 s (load 26) on 2 cores: 6 one-layer-net trials
def test_nan_trials_fail_in_mlflow_and_searcher_and_no_group_outlives_stopped_trials(ray_session, tmp_path):
    plugins = _plugin(tmp_path, ["no", "no", "nan"])
    suite = tmp_path / "flaky.yaml"
    # one trial at a time: ASHA's decisions then do not depend on which of two trials reports first
    suite.write_text(SUITE.format(name="flaky-search", extra="resources: {max_concurrent_trials: 1}"))
    lines: list[str] = []
    tracker, exp, results = _search_stage(suite, tmp_path / "runs", plugins, lines)
    (outcome, cells), = results
    counts = outcome.counts()
    assert len(outcome.records) == 6 and sum(counts.values()) == 6
    assert counts["failed"] >= 1 and counts["stopped"] >= 1 and counts["finished"] >= 1, (counts, lines)
    # the searcher: one trial per requested trial, each in its state, none left running
    assert outcome.searcher_trials == 6
    assert outcome.searcher_states.get("FAIL", 0) == counts["failed"]
    assert outcome.searcher_states.get("PRUNED", 0) == counts["stopped"]
    assert outcome.searcher_states.get("COMPLETE", 0) == counts["finished"]
    # MLflow: one nested run per trial under one finished parent
    parent, = tracker.runs([exp], KIND_SEARCH)
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials"] == 6
    runs = _trial_runs(tracker, exp)
    assert len(runs) == 6 and {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    failed = [r for r in runs if r.data.tags[Tag.TRIAL_STATUS] == "failed"]
    assert len(failed) == counts["failed"] and all(r.info.status == "FAILED" for r in failed)
    assert all("nan" in r.data.tags[Tag.ERROR].lower() for r in failed)
    assert all(json.loads(r.data.tags[Tag.TRIAL_CONFIG])["fail"] == "nan" for r in failed)
    stopped = [r for r in runs if r.data.tags[Tag.TRIAL_STATUS] == "stopped"]
    assert all(r.data.metrics["epochs_run"] < 3 and r.data.metrics["trial_s"] > 0 for r in stopped)
    finished = [r for r in runs if r.data.tags[Tag.TRIAL_STATUS] == "finished"]
    assert all(len(tracker.client.get_metric_history(r.info.run_id, "val/dice")) == 3 for r in finished)
    # the best finished trial's config, as a cell, is what the search returns
    assert len(cells) == 1 and cells[0].hparams["fail"] == "no"
    assert parent.data.tags[Tag.TUNED_CELLS] == cells[0].key
    import ray.util

    live: dict = {}
    for _ in range(20):  # removal is asynchronous in the GCS: a leaked group stays, a released one goes
        live = {k: v["state"] for k, v in ray.util.placement_group_table().items() if v["state"] != "REMOVED"}
        if not live:
            break
        time.sleep(0.5)
    assert live == {}, live
    print(counts, outcome.searcher_states)


PARETO = """
name: pareto
methods:
  - name: medsegdiff
    profile: tiny
    budgets: {sampler: ddim, steps: [1, 2, 5], ensemble: [1]}
datasets:
  - name: synthetic
    params: {size: 32, n_cases: 24}
seeds: [0]
epochs: 1
steps_per_epoch: 60
search: {trials: 3, epochs: 3, scheduler: none, objectives: [val/dice, latency_ms], select: pareto, max_selected: 3}
evaluation: {timing_repeats: 3, timing_warmup: 1, throughput_batch: 2, val_cases: 4}
"""


@pytest.mark.ray
@pytest.mark.slow  # measured 42-81 s on 2 cores: three MedSegDiff trials of 180 steps
def test_pareto_search_returns_non_dominated_points_at_different_budgets(ray_session, tmp_path):
    suite = tmp_path / "pareto.yaml"
    suite.write_text(PARETO)
    lines: list[str] = []
    _, _, results = _search_stage(suite, tmp_path / "runs", tmp_path, lines)
    (outcome, cells), = results
    objectives = ["val/dice", "latency_ms"]
    points = all_points(outcome.records)  # every (finished trial, budget) point, with its config
    assert len(points) == 9  # 3 finished trials × 3 budgets, scored from each trial's own weights
    front = pareto_front(points, objectives)
    for p in outcome.selected:
        assert not any(dominates(q, p, objectives) for q in points), p
    assert 2 <= len(outcome.selected) <= 3
    assert len({p["name"] for p in front}) >= 2, front  # the front spans budgets, not only hparams
    assert {json.dumps(p, sort_keys=True, default=str) for p in outcome.selected} <= \
        {json.dumps(p, sort_keys=True, default=str) for p in front}
    # tuned cells: one training per selected trial, evaluated at its selected budgets only
    by_trial: dict[str, set[str]] = {}
    for p in outcome.selected:
        by_trial.setdefault(json.dumps(p["config"], sort_keys=True), set()).add(p["name"])
    assert len(cells) == len(by_trial)
    for c in cells:
        assert {b.name for b in c.budgets} == by_trial[json.dumps(
            {k: c.hparams[k] for k in outcome.plan.space}, sort_keys=True)]
    print("\n".join(lines))
    print("front:", [(p["trial"], p["name"], round(p["dice"], 4), round(p["latency_ms"], 1)) for p in front])


RESUME = SUITE.format(name="resume", extra="")


def _count_recorded(db: Path) -> int:
    """Trials the driver has recorded as ended, read straight from SQLite (read-only: opening an MLflow
    client here would race the driver creating the schema)."""
    import sqlite3

    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
            return con.execute("SELECT COUNT(*) FROM tags WHERE key = ? AND value IN "
                               "('finished', 'stopped', 'failed')", (Tag.TRIAL_STATUS,)).fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not there yet, or the database is busy
        return 0


@pytest.mark.ray
@pytest.mark.slow  # measured 100-108 s: a killed driver, a resuming run, a skipping run
def test_killed_driver_resumes_search_without_rerunning_recorded_trials(ray_session, tmp_path):
    from segarena.platform.board.leaderboard import leaderboard
    from segarena.platform.run.driver import run_suite

    plugins = _plugin(tmp_path, ["no"], sleep=0.25)  # ~1 s per epoch: a wide window to kill in
    suite = tmp_path / "resume.yaml"
    suite.write_text(RESUME)
    workdir = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = (tmp_path / "driver.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "segarena.platform.cli", "run", str(suite), "--workdir",
                             str(workdir), "--plugins", str(plugins)], stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    wd = WorkDir.at(workdir)
    recorded = 0
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            time.sleep(2)
            recorded = _count_recorded(wd.db)
            if recorded >= 2:
                break
    finally:
        with contextlib.suppress(ProcessLookupError):  # the driver and every process of its session
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    assert recorded >= 2, (tmp_path / "driver.log").read_text()[-3000:]
    assert recorded < 6, "the driver finished the search before it could be killed"
    tracker = Tracker(wd.tracking_uri, wd)
    exp = tracker.experiment("resume", create=False)
    before = {r.info.run_id: r.data.tags[Tag.TRIAL_STATUS] for r in _trial_runs(tracker, exp)}
    # the killed driver's lease would expire after a minute; expire it now instead of waiting
    for r in tracker.runs([exp], "driver"):
        tracker.set_tags(r.info.run_id, {Tag.HEARTBEAT: "0"})

    lines: list[str] = []
    t0 = time.time()
    run_suite(suite, workdir, plugin_dirs=[str(plugins)], echo=lines.append)
    resume_s = time.time() - t0
    runs = {r.info.run_id: r for r in _trial_runs(tracker, exp)}
    counted = {k: r for k, r in runs.items() if r.data.tags[Tag.TRIAL_STATUS] in ("finished", "stopped",
                                                                                         "failed")}
    done_before = {k for k, s in before.items() if s in ("finished", "stopped", "failed")}
    assert len(counted) == 6, {k: r.data.tags[Tag.TRIAL_STATUS] for k, r in runs.items()}
    assert done_before <= set(counted)  # recorded trials kept, not rerun
    new = set(runs) - set(before)
    assert len(new) == 6 - len(done_before)  # only the remaining trials ran
    interrupted = [k for k, s in before.items() if s == "running"]
    assert all(runs[k].data.tags[Tag.TRIAL_STATUS] == "interrupted" and runs[k].info.status == "FAILED"
               for k in interrupted)
    parents = tracker.runs([exp], KIND_SEARCH)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics["searcher_trials"] == 6
    assert any(f"resuming, {len(done_before)} trial(s) recorded" in ln for ln in lines), lines

    board, _ = leaderboard(tracker, "resume", statistics=False)
    assert sorted(board["tuning"].str.split(" ").str[0]) == ["default", "tuned"]
    assert board.loc[board["tuning"] != "default", "tuning"].iloc[0].startswith("tuned (6 trials, ")

    third: list[str] = []
    run_suite(suite, workdir, plugin_dirs=[str(plugins)], echo=third.append)
    assert len(_trial_runs(tracker, exp)) == len(runs)  # the finished search is skipped entirely
    assert any("skipped" in ln and ln.startswith("search flaky") for ln in third), third
    print(f"\nresume run: {resume_s:.0f}s; recorded before the kill: {len(done_before)}")
