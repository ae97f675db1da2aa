"""Fault tests through the real CLI (R1–R4 of the cluster issue): a driver killed with SIGKILL, a
trial process killed mid-cell, a plugin that hangs, Ctrl-C. Each driver runs as a subprocess in
its own process group, which the test kills whatever happens (Ray's processes included)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from segarena_test_fakes import write_probe

from segarena.platform.store.schema import Tag
from segarena.platform.store.tracking import KIND_EVAL, KIND_TRAIN, Tracker
from segarena.platform.store.workdir import WorkDir

pytestmark = pytest.mark.cluster

SUITE = """
name: {name}
methods:
  - name: slow
    hparams: {{trace: {trace}, hang: {hang}}}
    epochs: {epochs}
{extra_methods}
datasets:
  - name: synthetic
    params: {{size: 32, n_cases: 12}}
seeds: [0]
epochs: 1
steps_per_epoch: 3
failure_retries: {retries}
resources: {{max_concurrent_trials: 1{timeout}}}
evaluation: {{timing_repeats: 2, timing_warmup: 1, throughput_batch: 2, val_cases: 2}}
"""


class Driver:
    """``segarena run`` as a subprocess in its own process group."""

    def __init__(self, tmp: Path, suite: Path, plugins: Path) -> None:
        self.log = open(tmp / f"driver-{time.time_ns()}.log", "w")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "segarena.platform.cli", "run", str(suite), "--workdir",
                                      str(tmp / "runs"), "--plugins", str(plugins)], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.stop()

    def stop(self) -> None:
        """Kill the whole group (the driver and the Ray processes it started); safe to call twice."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.log.close()

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return Path(self.log.name).read_text()


def wait_for(predicate, timeout: float, what: str) -> None:
    t0 = time.time()
    while not predicate():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def setup(tmp: Path, name: str, *, epochs: int = 4, retries: int = 0, hang: bool = False, extra: str = "",
          timeout: str = "") -> tuple[Path, Path, Path, Tracker]:
    # the probe as `slow`: sleeps 0.5 s per step, one line `step <pid>` per step in `trace`; `hang` never returns
    plugins = write_probe(tmp / "plugins", "slow", sleep=0.5)
    trace = tmp / "trace.txt"
    suite = tmp / f"{name}.yaml"
    suite.write_text(SUITE.format(name=name, trace=trace, hang=str(hang).lower(), epochs=epochs, retries=retries,
                                  extra_methods=extra, timeout=timeout))
    wd = WorkDir.at(tmp / "runs")
    return suite, plugins, trace, Tracker(wd.tracking_uri, wd)


def trace_count(trace: Path) -> int:
    return len(trace.read_text().splitlines()) if trace.exists() else 0


def finished_per_cell(tracker: Tracker, suite: str) -> Counter:
    exp = tracker.experiment(suite, create=False)
    return Counter(r.data.tags[Tag.CELL] for r in tracker.runs([exp], KIND_TRAIN)
                   if r.info.status == "FINISHED")


def census(tracker: Tracker, suite: str, test: str) -> None:
    """Print what the store holds per cell after a fault (the closing note's numbers) and check that no
    FINISHED evaluation hangs under a training run that is not FINISHED."""
    exp = tracker.experiment(suite, create=False)
    trains = tracker.runs([exp], KIND_TRAIN)
    status = {r.info.run_id: r.info.status for r in trains}
    method = {r.info.run_id: r.data.tags[Tag.METHOD] for r in trains}
    per_cell: dict[str, Counter] = defaultdict(Counter)
    for r in trains:
        per_cell[r.data.tags[Tag.METHOD]][f"{r.info.status} training"] += 1
    for r in tracker.runs([exp], KIND_EVAL):
        parent = status.get(r.data.tags.get(Tag.PARENT))
        assert r.info.status != "FINISHED" or parent == "FINISHED", (r.info.run_id, parent)
        per_cell[method[r.data.tags[Tag.PARENT]]][f"{r.info.status} eval"] += 1
    cells = "; ".join(f"{m}: " + ", ".join(f"{n} {k}" for k, n in sorted(c.items()))
                      for m, c in sorted(per_cell.items()))
    print(f"\n[cluster store] {test}: {cells}", file=sys.stderr)


def test_r1_killed_driver_resumes_from_checkpoint_without_repeating_epochs(tmp_path):
    suite, plugins, trace, tracker = setup(tmp_path, "r1", epochs=5)
    ckpt_root = tmp_path / "runs" / "ray" / "cells"
    first = Driver(tmp_path, suite, plugins)
    try:  # two epochs (6 steps) done and checkpointed, then SIGKILL the driver alone
        wait_for(lambda: trace_count(trace) >= 7 and any(ckpt_root.glob("*/checkpoint.pt")), 240, "two epochs")
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(30)
    finally:
        first.stop()
    steps_before = trace_count(trace)
    second = Driver(tmp_path, suite, plugins)
    code = second.wait(300)
    out = second.output()
    assert code == 0, out[-3000:]
    assert "marked 1 run(s) left RUNNING by an earlier driver as failed" in out, out[-3000:]
    # 15 steps in all when nothing is repeated but the epoch the kill interrupted (≤ 3 steps)
    assert trace_count(trace) - steps_before <= 15 - 6 and trace_count(trace) <= 15 + 3
    counts = finished_per_cell(tracker, "r1")
    assert list(counts.values()) == [1]
    (run_id,) = [r.info.run_id for r in tracker.runs([tracker.experiment("r1", create=False)], KIND_TRAIN)
                 if r.info.status == "FINISHED"]
    epochs = [m.step for m in tracker.client.get_metric_history(run_id, "train/loss")]
    assert sorted(epochs) == [0, 1, 2, 3, 4]  # every epoch once: resumed, not repeated
    census(tracker, "r1", "R1 driver SIGKILL")


@pytest.mark.parametrize("retries", [1, 0])
def test_r2_killed_trial_process_is_retried_from_checkpoint_or_recorded(tmp_path, retries):
    extra = "  - name: unet\n    epochs: 1"
    suite, plugins, trace, tracker = setup(tmp_path, f"r2-{retries}", epochs=4, retries=retries, extra=extra)
    driver = Driver(tmp_path, suite, plugins)
    try:
        wait_for(lambda: trace_count(trace) >= 4, 240, "the first epoch")
        pid = int(trace.read_text().splitlines()[0].split()[-1])  # `step <pid>`
        os.kill(pid, signal.SIGKILL)  # the process that trains the cell (the Tune trial's)
        code = driver.wait(300)
    finally:
        driver.stop()
    out = driver.output()
    name = f"r2-{retries}"
    exp = tracker.experiment(name, create=False)
    runs = tracker.runs([exp], KIND_TRAIN)
    by_method = Counter((r.data.tags[Tag.METHOD], r.info.status) for r in runs)
    assert by_method[("unet", "FINISHED")] == 1, out[-3000:]
    if retries:
        assert code == 0, out[-3000:]
        assert by_method[("slow", "FINISHED")] == 1
        assert trace_count(trace) <= 12 + 3  # resumed from its checkpoint: at most the killed epoch again
        crashed = [r for r in runs if r.info.status == "FAILED"]
        assert [r.data.tags[Tag.ERROR] for r in crashed] == ["trial process crashed"]
    else:
        assert code == 1, out[-3000:]
        assert by_method[("slow", "FAILED")] == 1 and by_method[("slow", "FINISHED")] == 0
        assert "slow × synthetic · seed 0: trial process crashed" in out
    assert not [r for r in runs if r.info.status == "RUNNING"]
    census(tracker, name, f"R2 trial SIGKILL, failure_retries {retries}")


def test_r3_hanging_plugin_is_ended_by_the_cell_timeout_and_frees_its_slot(tmp_path):
    extra = "  - name: unet\n    epochs: 1"
    suite, plugins, _trace, tracker = setup(tmp_path, "r3", epochs=3, hang=True, extra=extra,
                                           timeout=", cell_timeout_s: 20")
    driver = Driver(tmp_path, suite, plugins)
    t0 = time.time()
    code = driver.wait(400)
    out = driver.output()
    assert code == 1, out[-3000:]
    assert "timed out after 20 s" in out
    exp = tracker.experiment("r3", create=False)
    runs = {r.data.tags[Tag.METHOD]: r for r in tracker.runs([exp], KIND_TRAIN)}
    assert runs["slow"].info.status == "FAILED" and "timed out after 20 s" in runs["slow"].data.tags[Tag.ERROR]
    assert runs["unet"].info.status == "FINISHED"  # ran after the hung cell, on the one slot it freed
    assert time.time() - t0 < 380
    census(tracker, "r3", "R3 hung plugin")


def test_r4_ctrl_c_stops_marks_interrupted_exits_130_and_rerun_resumes(tmp_path):
    suite, plugins, trace, tracker = setup(tmp_path, "r4", epochs=5)
    driver = Driver(tmp_path, suite, plugins)
    try:
        wait_for(lambda: trace_count(trace) >= 4, 240, "training")
        os.killpg(driver.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole group
        code = driver.proc.wait(180)
    finally:
        driver.stop()
    out = driver.output()
    assert code == 130, out[-3000:]
    assert "0 cell(s) trained" in out and "interrupted" in out
    exp = tracker.experiment("r4", create=False)
    runs = tracker.runs([exp], KIND_TRAIN)
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.tags[Tag.ERROR].startswith("interrupted")
    steps = trace_count(trace)
    again = Driver(tmp_path, suite, plugins)
    assert again.wait(300) == 0, again.output()[-3000:]
    assert list(finished_per_cell(tracker, "r4").values()) == [1]
    assert trace_count(trace) < steps + 15  # resumed from the checkpoint, not trained from scratch
    census(tracker, "r4", "R4 Ctrl-C and rerun")
