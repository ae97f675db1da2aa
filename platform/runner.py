"""``segarena run``: suite spec → cells → plan jobs (train / evaluate stored weights / skip) →
Ray Tune trials → MLflow. See docs/contracts.md ("Runs") for what each key covers."""

from __future__ import annotations

import fcntl
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

from segarena.platform.cell_data import load_cell_data
from segarena.platform.errors import SegarenaError
from segarena.platform.fingerprint import git_sha
from segarena.platform.records import Cell, Job, Settings
from segarena.platform.registry import discover, plugin_folders
from segarena.platform.suite import expand, load_suite
from segarena.platform.tracking import Tracker
from segarena.platform.workdir import WorkDir


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
    ray_start_s: float = 0.0
    wall_s: float = 0.0


def plan_concurrency(cluster_cpus: float, cluster_gpus: float, res: dict, n_cells: int) -> int:
    """How many trials fit at once: each holds workers × (CPUs, GPUs) per worker."""
    need_cpu = res["workers_per_trial"] * res["cpus_per_worker"]
    fits = math.floor(cluster_cpus / need_cpu + 1e-9)
    if res["gpus_per_worker"]:
        fits = min(fits, math.floor(cluster_gpus / (res["workers_per_trial"] * res["gpus_per_worker"]) + 1e-9))
    if fits < 1:
        raise SegarenaError(f"a trial needs {need_cpu} CPUs and {res['gpus_per_worker']} GPUs per worker × "
                            f"{res['workers_per_trial']} workers, but the cluster has {cluster_cpus} CPUs and "
                            f"{cluster_gpus} GPUs: lower resources.* in the suite")
    if res.get("max_concurrent_trials"):
        fits = min(fits, res["max_concurrent_trials"])
    return max(1, min(fits, n_cells))


# Ray Train's controller polls its workers every 2 s by default: a finished tiny cell then waits
# up to a poll to hand back. Polling faster costs nothing measurable at this scale.
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "RAY_TRAIN_V2_ENABLED": "1"}


def _init_ray(address: str | None, verbose: bool) -> tuple[bool, float]:
    import ray

    if ray.is_initialized():
        return False, 0.0
    t0 = time.time()
    env = {k: os.environ.get(k, v) for k, v in RAY_ENV.items()}
    os.environ.update(env)  # a local Ray inherits the driver's environment
    if address:
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # `ray start` clusters need the token
        ray.init(address=address, log_to_driver=verbose, logging_level="WARNING", runtime_env={"env_vars": env})
    else:
        # Ray's own CPU detection honours cgroup quotas and affinity; os.cpu_count() does not.
        ray.init(log_to_driver=verbose, logging_level="WARNING", configure_logging=True)
    return True, time.time() - t0


def run_suite(suite: str | Path, workdir: str | Path = "segarena-runs", *, address: str | None = None,
              tracking_uri: str | None = None, plugin_dirs: Sequence[str] = (), verbose: bool = False,
              echo: Callable[[str], None] = print) -> RunSummary:
    t_start = time.time()
    spec, path = load_suite(suite)
    wd = WorkDir.at(workdir)
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
        budgets = cell.budget_objects()
        if run_id is None:
            jobs.append(Job("train", cell, tuple(budgets), settings))
            continue
        missing = tuple(b for b in budgets if (run_id, cell.eval_key(b)) not in evaluations)
        if missing:
            jobs.append(Job("evaluate", cell, missing, settings, train_run_id=run_id))
        else:
            skipped.append(cell)
    return jobs, skipped


def _run_locked(spec, path: Path, cells: list[Cell], wd: WorkDir, tracking_uri: str | None,
                plugin_dirs: Sequence[str], address: str | None, verbose: bool, echo: Callable[[str], None],
                t_start: float) -> RunSummary:
    uri = tracking_uri or wd.tracking_uri
    tracker = Tracker(uri, wd)
    exp_id = tracker.experiment(spec.name, description=spec.description)
    orphans = tracker.mark_orphans(exp_id)
    res = spec.resources
    device = spec.device if spec.device != "auto" else ("cuda" if res.gpus_per_worker else "cpu")
    settings = Settings(tracking_uri=uri, workdir=str(wd.root), experiment_id=exp_id,
                        plugin_dirs=tuple(str(p) for p in plugin_folders(plugin_dirs)),
                        workers_per_trial=res.workers_per_trial, cpus_per_worker=res.cpus_per_worker,
                        gpus_per_worker=res.gpus_per_worker, failure_retries=spec.failure_retries, device=device,
                        segarena_version=version("segarena"), git_sha=git_sha(), driver=uuid.uuid4().hex[:12])
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
         f"from checkpoint, {len(skipped)} skipped as finished · tracking {uri}")
    for job in jobs:
        what = ("train" if job.kind == "train" else "evaluate from checkpoint") + \
            f" ({', '.join(b.name for b in job.budgets)})"
        echo(f"  {job.cell.label}: {what}")
    for cell in skipped:
        echo(f"  {cell.label}: skipped (finished)")
    if jobs:
        summary.ray_start_s, progress = _run_jobs(jobs, spec.resources.model_dump(), address, verbose, echo)
        summary.failures, summary.eta_samples = progress.failures, progress.eta_samples
        summary.ran = len(jobs)
        failed = {label for label, _ in summary.failures}
        summary.trained = sum(j.kind == "train" and j.cell.label not in failed for j in jobs)
        summary.evaluated = sum(j.kind == "evaluate" and j.cell.label not in failed for j in jobs)
    summary.wall_s = time.time() - t_start
    return summary


def _run_jobs(jobs: list[Job], res: dict, address: str | None, verbose: bool,
              echo: Callable[[str], None]) -> tuple[float, Any]:
    import ray
    from ray import tune

    from segarena.platform.progress import Progress
    from segarena.platform.trial import job_resources, run_job

    started, ray_s = _init_ray(address, verbose)
    settings = jobs[0].settings
    try:
        cluster = ray.cluster_resources()
        concurrency = plan_concurrency(cluster.get("CPU", 0), cluster.get("GPU", 0), res, len(jobs))
        echo(f"ray: {cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs · {concurrency} cell(s) at a "
             f"time · {res['workers_per_trial']} worker(s) × {res['cpus_per_worker']:g} CPU per cell"
             + (f" · ray started in {ray_s:.1f}s" if started else ""))
        wd = WorkDir(Path(settings.workdir))
        wires = [j.to_wire() for j in jobs]
        progress = Progress(len(jobs), concurrency, echo, plan=[{"job": w} for w in wires], prior=wd.read_eta())
        suite = jobs[0].cell.suite
        tuner = tune.Tuner(
            tune.with_resources(run_job, job_resources),
            param_space={"job": tune.grid_search(wires)},
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=True),
            run_config=tune.RunConfig(name=f"{suite}-{time.strftime('%Y%m%d-%H%M%S')}",
                                      storage_path=str(WorkDir(Path(settings.workdir)).ray_storage), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=settings.failure_retries),
                                      callbacks=[progress]))
        tuner.fit()
        wd.write_eta(progress.model.costs())  # the next run's ETA starts from what this one measured
        return ray_s, progress
    finally:
        if started:
            ray.shutdown()
