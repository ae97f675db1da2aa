"""Drivers sharing a store at the same time (item 2 of the cluster issue), through the real CLI: two
suites against one MLflow server, two suites in one SQLite work dir, and one suite started twice
against one server (the second driver refused by the lease in the store, not by a work-dir file).
Each driver is a ``segarena run`` subprocess in its own process group (its private Ray included),
killed whatever happens."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from segarena.platform.store.schema import Tag
from segarena.platform.store.tracking import KIND_DRIVER, KIND_EVAL, KIND_TRAIN, Tracker
from segarena.platform.store.workdir import WorkDir

pytestmark = pytest.mark.cluster
nodes = sys.modules["segarena_cluster_nodes"]  # tests/cluster/nodes.py, loaded by conftest.py's load_nodes()

DRIVER_TIMEOUT_S = 420
# what SQLite (or SQLAlchemy over it) says when a write lost the race for the one writer's lock
LOCK_ERRORS = re.compile(r"database is locked|OperationalError", re.IGNORECASE)


class Driver:
    """``segarena run SUITE --workdir DIR [--tracking-uri URI]`` in its own process group."""

    def __init__(self, logs: Path, suite: Path, workdir: Path, tracking_uri: str | None = None) -> None:
        self.log = open(logs / f"driver-{suite.stem}-{time.time_ns()}.log", "w")
        cmd = [sys.executable, "-m", "segarena.platform.cli", "run", str(suite), "--workdir", str(workdir)]
        if tracking_uri:
            cmd += ["--tracking-uri", tracking_uri]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop("RAY_ADDRESS", None)  # a private Ray each
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.code: int | None = None

    def wait(self, timeout: float) -> int:
        self.code = self.proc.wait(timeout)
        return self.code

    def stop(self) -> None:
        """Kill the whole group (the driver and the Ray it started); safe to call twice."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        if not self.log.closed:
            self.log.close()

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return Path(self.log.name).read_text()


def run_together(drivers: list[Driver], timeout: float = DRIVER_TIMEOUT_S) -> list[int]:
    """Wait for every driver (one shared deadline); each is killed afterwards whatever happened."""
    deadline = time.time() + timeout
    try:
        return [d.wait(max(1.0, deadline - time.time())) for d in drivers]
    finally:
        for d in drivers:
            d.stop()


def drive(tmp: Path, suites: list[Path], workdirs: list[Path], uri: str | None = None, remove: bool = False
          ) -> tuple[list[Driver], list[int]]:
    """Start one driver per (suite, work dir) at once and wait for all; every driver is stopped (and, with
    ``remove``, its work dir deleted) whatever happens."""
    drivers: list[Driver] = []
    try:
        for suite, workdir in zip(suites, workdirs, strict=True):
            drivers.append(Driver(tmp, suite, workdir, uri))
        return drivers, run_together(drivers)
    finally:
        for driver in drivers:
            driver.stop()
        for w in workdirs if remove else ():
            shutil.rmtree(w, ignore_errors=True)


def write_suite(folder: Path, name: str, seeds: list[int]) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(nodes.unet_suite(name, seeds=tuple(seeds)))
    return path


def expected_cells(suite: Path) -> dict[str, list[str]]:
    """Training key → budget names of every cell of a suite, as the driver computes them."""
    from segarena.platform.plugins.registry import discover
    from segarena.platform.run.driver import prepare_cells
    from segarena.platform.spec.suite import load_suite

    spec, path = load_suite(suite)
    with tempfile.TemporaryDirectory() as tmp:
        cells = prepare_cells(spec, path, discover(()), WorkDir.at(tmp))
    return {c.key: sorted(b.name for b in c.budgets) for c in cells}


def check_suite_store(tracker: Tracker, suite: str, cells: dict[str, list[str]], out: str) -> tuple[str, int, int]:
    """Every cell has exactly one training run, FINISHED, and exactly one FINISHED evaluation per budget;
    nothing else is in the suite's experiment but its one driver's lease, released. Returns that driver's id
    and its lease's start and end (ms)."""
    exp = tracker.experiment(suite, create=False)
    assert exp is not None, out[-3000:]
    trains = tracker.runs([exp], KIND_TRAIN)
    evals = tracker.runs([exp], KIND_EVAL)
    drivers = tracker.runs([exp], KIND_DRIVER)
    # none lost, none twice
    assert Counter(r.data.tags[Tag.CELL] for r in trains) == Counter(list(cells)), out[-3000:]
    for r in [*trains, *evals]:
        assert (r.info.status, r.data.tags.get(Tag.STATUS)) == ("FINISHED", "finished"), \
            (r.info.run_id, r.info.status, r.data.tags.get(Tag.ERROR), out[-3000:])
        assert Tag.ERROR not in r.data.tags, r.data.tags[Tag.ERROR]
    by_parent: dict[str, list[str]] = {}
    for r in evals:
        by_parent.setdefault(r.data.tags[Tag.PARENT], []).append(r.data.tags[Tag.BUDGET])
    assert {r.data.tags[Tag.CELL]: sorted(by_parent.get(r.info.run_id, [])) for r in trains} == cells
    assert set(by_parent) == {r.info.run_id for r in trains}  # no evaluation hangs off a run of another suite
    assert [r.info.status for r in drivers] == ["FINISHED"], [(r.info.status, r.data.tags) for r in drivers]
    driver = drivers[0].data.tags[Tag.DRIVER]
    assert {r.data.tags[Tag.DRIVER] for r in [*trains, *evals]} == {driver}  # all written by its own driver
    return driver, drivers[0].info.start_time, drivers[0].info.end_time


def check_overlap(leases: list[tuple[str, int, int]]) -> None:
    """The two drivers really ran at the same time: each lease began before the other one ended."""
    (a, a0, a1), (b, b0, b1) = leases
    assert a != b
    assert max(a0, b0) < min(a1, b1), leases


def check_clean_exit(code: int, out: str, n_cells: int) -> None:
    assert code == 0, out[-4000:]
    assert f"{n_cells} cell(s) trained, 0 evaluated from checkpoint, 0 skipped as finished, 0 failed" in out, \
        out[-4000:]
    assert "left RUNNING by an earlier driver" not in out, out[-4000:]  # nobody's cells were taken as orphans
    assert not LOCK_ERRORS.search(out), LOCK_ERRORS.search(out).group(0) + "\n" + out[-4000:]


def _fresh_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def check_both(tracker: Tracker, names: list[str], suites: list[Path], drivers: list[Driver], codes: list[int]
               ) -> None:
    """Each driver exited cleanly with its two cells, its store holds them once, and the two ran at once."""
    ids = []
    for name, suite, driver, code in zip(names, suites, drivers, codes, strict=True):
        out = driver.output()
        check_clean_exit(code, out, 2)
        ids.append(check_suite_store(tracker, name, expected_cells(suite), out))
    check_overlap(ids)


def test_two_suites_against_one_server_at_once_lose_and_duplicate_nothing(mlflow_server, tmp_path: Path) -> None:
    names = [f"conc-server-a-{os.getpid()}", f"conc-server-b-{os.getpid()}"]
    suites = [write_suite(tmp_path, names[0], [0, 1]), write_suite(tmp_path, names[1], [2, 3])]
    workdirs = [_fresh_dir("segarena-conc-a-"), _fresh_dir("segarena-conc-b-")]
    t0 = time.time()
    drivers, codes = drive(tmp_path, suites, workdirs, mlflow_server.uri, remove=True)
    print(f"\n[two drivers, one server] both done in {time.time() - t0:.1f}s")
    tracker = Tracker(mlflow_server.uri)
    check_both(tracker, names, suites, drivers, codes)


def test_two_suites_in_one_sqlite_work_dir_at_once_never_see_a_locked_database(tmp_path: Path) -> None:
    names = ["conc-sqlite-a", "conc-sqlite-b"]
    suites = [write_suite(tmp_path, names[0], [0, 1]), write_suite(tmp_path, names[1], [2, 3])]
    workdir = tmp_path / "runs"  # fresh: both drivers also race to create the store
    t0 = time.time()
    drivers, codes = drive(tmp_path, suites, [workdir, workdir])
    print(f"\n[two drivers, one sqlite work dir] both done in {time.time() - t0:.1f}s")
    wd = WorkDir.at(workdir)
    tracker = Tracker(wd.tracking_uri, wd)
    check_both(tracker, names, suites, drivers, codes)


def test_one_suite_started_twice_against_one_server_runs_once(mlflow_server, tmp_path: Path) -> None:
    """Two work dirs, so no lock file is shared: only the lease in the store can refuse the second driver.
    Both start at the same moment; exactly one runs the suite."""
    name = f"conc-twice-{os.getpid()}"
    suite = write_suite(tmp_path, name, [0])
    workdirs = [_fresh_dir("segarena-twice-a-"), _fresh_dir("segarena-twice-b-")]
    t0 = time.time()
    drivers, codes = drive(tmp_path, [suite, suite], workdirs, mlflow_server.uri, remove=True)
    print(f"\n[one suite twice, one server] both done in {time.time() - t0:.1f}s: exit codes {codes}")
    outs = [d.output() for d in drivers]
    assert sorted(codes) == [0, 2], outs
    ran, refused = (outs[0], outs[1]) if codes[0] == 0 else (outs[1], outs[0])
    check_clean_exit(0, ran, 1)
    assert f"suite {name!r} is already running: driver " in refused and mlflow_server.uri in refused, refused
    assert "Traceback" not in refused and "cell(s) trained" not in refused, refused
    tracker = Tracker(mlflow_server.uri)
    exp = tracker.experiment(name, create=False)
    drivers_runs = tracker.runs([exp], KIND_DRIVER)
    assert sorted(r.info.status for r in drivers_runs) == ["FINISHED", "FINISHED"]  # the refused lease released too
    winner = {r.data.tags[Tag.DRIVER] for r in tracker.runs([exp], KIND_TRAIN)}
    assert len(winner) == 1  # the refused driver recorded no training
    cells = expected_cells(suite)
    assert {r.data.tags[Tag.DRIVER] for r in drivers_runs} > winner
    # the store holds the winner's driver run and the refused one's: check the cells without the latter
    trains = tracker.runs([exp], KIND_TRAIN)
    assert Counter(r.data.tags[Tag.CELL] for r in trains) == Counter(list(cells))
    assert all(r.info.status == "FINISHED" for r in [*trains, *tracker.runs([exp], KIND_EVAL)])
