"""``segarena run``: suite spec → cells → plan jobs (train / evaluate stored weights / skip) →
Ray Tune trials → MLflow. See docs/contracts.md ("Runs") for what each key covers."""

from __future__ import annotations

import contextlib
import fcntl
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

from segarena.platform.errors import SegarenaError
from segarena.platform.paths import DEFAULT_WORKDIR
from segarena.platform.plugins.registry import discover, plugin_folders
from segarena.platform.records import Cell, Job, Settings
from segarena.platform.run.cell_data import load_cell_data
from segarena.platform.run.concurrency import plan_concurrency
from segarena.platform.run.fingerprint import git_sha
from segarena.platform.run.search.stage import run_searches
from segarena.platform.spec.suite import Resources, expand, load_suite
from segarena.platform.store.preflight import check_run
from segarena.platform.store.schema import Tag
from segarena.platform.store.tracking import CRASHED_ERROR, INTERRUPTED_ERROR, Tracker
from segarena.platform.store.workdir import WorkDir


@dataclass
class RunSummary:
    suite: str
    experiment_id: str
    total: int
    skipped: int
    orphans_marked: int
    ran: int = 0
    trained: int = 0
    evaluated: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    eta_samples: list[tuple[float, float | None]] = field(default_factory=list)  # (elapsed, ETA) per cell start
    interrupted: bool = False
    ray_start_s: float = 0.0
    wall_s: float = 0.0


def run_suite(suite: str | Path, workdir: str | Path = DEFAULT_WORKDIR, *, address: str | None = None,
              tracking_uri: str | None = None, plugin_dirs: Sequence[str] = (), verbose: bool = False,
              echo: Callable[[str], None] = print) -> RunSummary:
    t_start = time.time()
    wd = WorkDir.at(workdir)
    check_run(wd, tracking_uri)  # work dir, tracking URI and store usable: one line, never a traceback or a hang
    spec, path = load_suite(suite)
    cells = prepare_cells(spec, path, discover(plugin_dirs), wd)
    wd.root.mkdir(parents=True, exist_ok=True)
    with suite_lock(wd, spec.name):
        return _run_locked(spec, path, cells, wd, tracking_uri, plugin_dirs, address, verbose, echo, t_start)


def prepare_cells(spec, path: Path, registry, wd: WorkDir) -> list[Cell]:
    """The suite's cells, each dataset opened and split before anything is recorded (bad data fails
    here, cleanly), its content hash joining the training key (changed data retrains)."""
    cells = expand(spec, registry, path)
    hashes: dict[tuple, str] = {}
    out = []
    for c in cells:
        ident = (c.dataset, c.dataset_path, repr(sorted(c.dataset_params.items())), c.seed)
        if ident not in hashes:
            data = load_cell_data(registry, c.dataset, c.dataset_path, c.dataset_params, wd.cache, c.seed)
            hashes[ident] = data.dataset.content_hash()
        out.append(replace(c, dataset_hash=hashes[ident]))
    return out


@contextmanager
def suite_lock(workdir: WorkDir, suite: str) -> Iterator[None]:
    """One driver per suite and work dir: a second one would mark the first one's live cells as
    orphans and train them again."""
    path = workdir.lock(suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SegarenaError(f"suite {suite!r} is already running from {workdir.root} (lock {path}); wait for "
                                "it or stop it first") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def plan_jobs(cells: list[Cell], trainings: dict[str, str], evaluations: set[tuple[str, str]],
              settings: Settings) -> tuple[list[Job], list[Cell]]:
    """Train cells with no finished training; evaluate, from stored weights, the budgets a finished
    training has not been evaluated at (under the current evaluation settings); skip the rest."""
    jobs, skipped = [], []
    for cell in cells:
        run_id = trainings.get(cell.key)
        if run_id is None:
            jobs.append(Job("train", cell, cell.budgets, settings))
            continue
        missing = tuple(b for b in cell.budgets if (run_id, cell.eval_key(b)) not in evaluations)
        if missing:
            jobs.append(Job("evaluate", cell, missing, settings, train_run_id=run_id))
        else:
            skipped.append(cell)
    return jobs, skipped


class _Lease:
    """This driver's lease in the store: a heartbeat every few seconds, so other drivers sharing the
    store can tell its live cells from a dead driver's orphans, and a second driver of the same suite
    is refused (a lock in the store, not only a file in one work dir)."""

    def __init__(self, tracker: Tracker, exp_id: str, suite: str, driver: str, every_s: float = 10.0) -> None:
        self.tracker, self.exp_id, self.driver, self.every_s = tracker, exp_id, driver, every_s
        self.run_id = tracker.start_driver(exp_id, suite, driver, socket.gethostname())
        live = tracker.live_drivers(exp_id)  # oldest first
        mine = next((i for i, r in enumerate(live) if r.data.tags.get(Tag.DRIVER) == driver), len(live))
        others = live[:mine]  # the oldest lease wins: of two drivers started together exactly one goes on
        if others:
            tracker.stop_driver(self.run_id)
            o = others[0]
            raise SegarenaError(f"suite {suite!r} is already running: driver {o.data.tags.get(Tag.DRIVER)} on "
                                f"{o.data.tags.get(Tag.HOST)} holds it in {tracker.uri}; wait for it or stop it")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="segarena-lease")
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            with contextlib.suppress(Exception):  # a missed beat is not fatal; LEASE_S allows several
                self.tracker.heartbeat(self.run_id)

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.tracker.stop_driver(self.run_id)


def _run_locked(spec, path: Path, cells: list[Cell], wd: WorkDir, tracking_uri: str | None,
                plugin_dirs: Sequence[str], address: str | None, verbose: bool, echo: Callable[[str], None],
                t_start: float) -> RunSummary:
    uri = tracking_uri or wd.tracking_uri
    tracker = Tracker(uri, wd)
    exp_id = tracker.experiment(spec.name, description=spec.description)
    driver = uuid.uuid4().hex[:12]
    lease = _Lease(tracker, exp_id, spec.name, driver)
    try:
        return _run_leased(spec, path, cells, wd, tracker, exp_id, driver, plugin_dirs, address, verbose, echo,
                           t_start)
    finally:
        lease.release()


def _run_leased(spec, path: Path, cells: list[Cell], wd: WorkDir, tracker: Tracker, exp_id: str, driver: str,
                plugin_dirs: Sequence[str], address: str | None, verbose: bool, echo: Callable[[str], None],
                t_start: float) -> RunSummary:
    orphans = tracker.mark_orphans(exp_id)
    res = spec.resources
    device = spec.device if spec.device != "auto" else ("cuda" if res.gpus_per_worker else "cpu")
    settings = Settings(tracking_uri=tracker.uri, workdir=str(wd.root), experiment_id=exp_id,
                        plugin_dirs=tuple(str(p) for p in plugin_folders(plugin_dirs)),
                        workers_per_trial=res.workers_per_trial, cpus_per_worker=res.cpus_per_worker,
                        gpus_per_worker=res.gpus_per_worker, failure_retries=spec.failure_retries, device=device,
                        segarena_version=version("segarena"), git_sha=git_sha(), driver=driver,
                        cell_timeout_s=res.cell_timeout_s)
    cells = [*cells, *run_searches(spec, path, cells, tracker, settings, address, verbose, echo)]  # tuned cells
    jobs, skipped = plan_jobs(cells, tracker.finished_trainings(exp_id), tracker.finished_evaluations(exp_id),
                              settings)
    # longest trainings first: on few slots the short ones fill the gaps at the end (and the ETA sees
    # every kind of method early)
    jobs.sort(key=lambda j: (j.kind != "train", -j.cell.epochs * (j.cell.steps_per_epoch or 1)))
    summary = RunSummary(spec.name, exp_id, len(cells), len(skipped), len(orphans))
    if orphans:
        echo(f"marked {len(orphans)} run(s) left RUNNING by an earlier driver as failed")
    n_train = sum(j.kind == "train" for j in jobs)
    echo(f"suite {spec.name!r} ({path}): {len(cells)} cells: {n_train} to train, {len(jobs) - n_train} to evaluate "
         f"from checkpoint, {len(skipped)} skipped as finished · tracking {tracker.uri}")
    for job in jobs:
        what = ("train" if job.kind == "train" else "evaluate from checkpoint") + \
            f" ({', '.join(b.name for b in job.budgets)})"
        echo(f"  {job.cell.label}: {what}")
    for cell in skipped:
        echo(f"  {cell.label}: skipped (finished)")
    if jobs:
        keeper = _Keeper(tracker, wd, settings)
        summary.ray_start_s, progress = _run_jobs(jobs, spec.resources, address, verbose, echo, keeper)
        summary.failures, summary.eta_samples = progress.failures, progress.eta_samples
        summary.ran = len(jobs)
        summary.interrupted = progress.done + progress.failed < len(jobs)
        if summary.interrupted:  # Ctrl-C: Tune stopped the trials; their runs must not stay RUNNING
            stopped = tracker.fail_driver_runs(exp_id, driver, INTERRUPTED_ERROR)
            echo(f"interrupted: {len(stopped)} running run(s) marked failed; `segarena run` again resumes")
        # what this driver finished, read from the store: an interrupted run counts only what it recorded
        summary.trained = _count_finished(tracker, exp_id, driver, "train")
        summary.evaluated = _count_finished(tracker, exp_id, driver, "evaluate")
    summary.wall_s = time.time() - t_start
    return summary


def _count_finished(tracker: Tracker, exp_id: str, driver: str, kind: str) -> int:
    """Cells this driver finished (training runs for ``train``; trainings given new evaluations otherwise)."""
    from segarena.platform.store.tracking import KIND_EVAL, KIND_TRAIN, STATUS_FINISHED

    mine = [r for r in tracker.runs([exp_id], KIND_TRAIN if kind == "train" else KIND_EVAL)
            if r.data.tags.get(Tag.DRIVER) == driver and r.data.tags.get(Tag.STATUS) == STATUS_FINISHED]
    if kind == "train":
        return len(mine)
    trained_here = {r.info.run_id for r in tracker.runs([exp_id], KIND_TRAIN)
                    if r.data.tags.get(Tag.DRIVER) == driver}
    return len({r.data.tags.get(Tag.PARENT) for r in mine} - trained_here)


class _Keeper:
    """Driver-side bookkeeping for trial processes that die (a crash, a cell timeout): their cell's
    runs are marked FAILED at once, with the reason, before Tune retries them from their checkpoint."""

    def __init__(self, tracker: Tracker, wd: WorkDir, settings: Settings) -> None:
        self.tracker, self.wd, self.settings = tracker, wd, settings

    def explain(self, trial: Any) -> str:
        from segarena.platform.run.trainable import timeout_message

        job = Job.from_wire(trial.config["job"])
        marker = self.wd.timeout_marker(job.cell)
        if marker.exists() and marker.read_text() == self.settings.driver:
            return timeout_message(self.settings.cell_timeout_s or 0)
        self.tracker.fail_driver_runs(self.settings.experiment_id, self.settings.driver, CRASHED_ERROR, job.cell.key)
        return CRASHED_ERROR


def _keeper_callback(keeper: _Keeper) -> Any:
    from ray.tune import Callback

    class KeeperCallback(Callback):
        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            keeper.explain(trial)

    return KeeperCallback()


def _run_jobs(jobs: list[Job], res: Resources, address: str | None, verbose: bool, echo: Callable[[str], None],
              keeper: _Keeper) -> tuple[float, Any]:
    import logging

    from ray import tune

    from segarena.platform.run.cluster import check_shared_storage, connect
    from segarena.platform.run.eta import default_eta_prior
    from segarena.platform.run.progress import Progress
    from segarena.platform.run.trainable import job_resources, run_job

    settings = jobs[0].settings
    handle = connect(address, verbose=bool(verbose))
    wd = WorkDir(Path(settings.workdir))
    # Tune's own notes on Ctrl-C say "resume with Tuner.restore(...)": here the next `segarena run` resumes
    logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)
    try:
        import ray

        # checkpoints, Ray storage and the dataset cache must be seen by every node
        check_shared_storage(wd.root, handle.nodes)
        cluster = ray.cluster_resources()
        concurrency = plan_concurrency(cluster.get("CPU", 0), cluster.get("GPU", 0), res, len(jobs))
        echo(f"ray: {cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs · {concurrency} cell(s) at a "
             f"time · {res.workers_per_trial} worker(s) × {res.cpus_per_worker:g} CPU per cell"
             + (f" · ray started in {handle.start_s:.1f}s" if handle.started_here else "")
             + (f" · dashboard {handle.dashboard_url}" if handle.started_here and handle.dashboard_url else ""))
        wires = [j.to_wire() for j in jobs]
        # the ETA starts from this work dir's last measurements, or from a 2-core CPU's for a fresh one
        progress = Progress(len(jobs), concurrency, echo, plan=[{"job": w} for w in wires],
                            prior=wd.read_eta() or default_eta_prior(), explain=keeper.explain)
        suite = jobs[0].cell.suite
        tuner = tune.Tuner(
            tune.with_resources(run_job, job_resources),
            param_space={"job": tune.grid_search(wires)},
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=True),
            run_config=tune.RunConfig(name=f"{suite}-{time.strftime('%Y%m%d-%H%M%S')}",
                                      storage_path=str(wd.ray_storage), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=settings.failure_retries),
                                      callbacks=[_keeper_callback(keeper), progress]))
        tuner.fit()
        wd.write_eta(progress.model.costs())  # the next run's ETA starts from what this one measured
        return handle.start_s, progress
    finally:
        handle.shutdown()
