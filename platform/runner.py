"""``segarena run``: suite spec → cells → skip finished → Ray Tune trials (each a TorchTrainer)."""

from __future__ import annotations

import fcntl
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from segarena.platform.cell_data import load_cell_data
from segarena.platform.errors import SegarenaError
from segarena.platform.fingerprint import git_sha
from segarena.platform.registry import discover, plugin_folders
from segarena.platform.suite import Cell, expand, load_suite
from segarena.platform.tracking import Tracker, default_tracking_uri

# A trial's own process only waits on its trainer and writes to MLflow: it holds a sliver of
# memory, not a CPU, so on 2 cores two trials × one 1-CPU worker run side by side.
TRIAL_RESOURCES = {"cpu": 0, "memory": 64 * 2**20}


@dataclass
class RunSummary:
    suite: str
    experiment_id: str
    total: int
    skipped: int
    orphans_marked: int
    ran: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
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
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # `ray start` clusters need the token (stack.md P2)
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
    registry = discover(plugin_dirs)
    cells = expand(spec, registry, path)
    workdir = Path(workdir).resolve()
    cache_dir = workdir / "cache"
    # Every dataset is opened and split before anything is recorded: bad data fails here, cleanly.
    for d in {(c.dataset, c.dataset_path, repr(sorted(c.dataset_params.items())), c.seed): c for c in cells}.values():
        load_cell_data(registry, d.dataset, d.dataset_path, d.dataset_params, cache_dir, d.seed)
    workdir.mkdir(parents=True, exist_ok=True)
    with suite_lock(workdir, spec.name):
        return _run_locked(spec, path, cells, workdir, tracking_uri, plugin_dirs, address, verbose, echo, t_start)


@contextmanager
def suite_lock(workdir: Path, suite: str) -> Iterator[None]:
    """One driver per suite and work dir: a second one would mark the first one's live cells as
    orphans and train them again."""
    path = workdir / "locks" / f"{suite}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SegarenaError(f"suite {suite!r} is already running from {workdir} (lock {path}); wait for "
                                "it or stop it first") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_locked(spec, path: Path, cells: list[Cell], workdir: Path, tracking_uri: str | None,
                plugin_dirs: Sequence[str], address: str | None, verbose: bool, echo: Callable[[str], None],
                t_start: float) -> RunSummary:
    uri = tracking_uri or default_tracking_uri(workdir)
    tracker = Tracker(uri, workdir / "artifacts")
    exp_id = tracker.experiment(spec.name)
    orphans = tracker.mark_orphans(exp_id)
    finished = tracker.finished_cells(exp_id)
    todo = [c for c in cells if c.key not in finished]
    summary = RunSummary(spec.name, exp_id, len(cells), len(cells) - len(todo), len(orphans))
    if orphans:
        echo(f"marked {len(orphans)} run(s) left RUNNING by an earlier driver as failed")
    echo(f"suite {spec.name!r} ({path}): {len(cells)} cells, {summary.skipped} already finished, "
         f"{len(todo)} to run · tracking {uri}")
    if todo:
        summary.ray_start_s, summary.failures = _run_cells(todo, spec.resources.model_dump(), spec, uri, workdir,
                                                           exp_id, list(plugin_dirs), address, verbose, echo)
        summary.ran = len(todo)
    summary.wall_s = time.time() - t_start
    return summary


def _run_cells(todo: list[Cell], res: dict, spec, uri: str, workdir: Path, exp_id: str, plugin_dirs: list[str],
               address: str | None, verbose: bool, echo: Callable[[str], None]) -> tuple[float, list]:
    import ray
    from ray import tune

    from segarena.platform.progress import Progress
    from segarena.platform.trial import run_cell

    started, ray_s = _init_ray(address, verbose)
    try:
        cluster = ray.cluster_resources()
        device = spec.device if spec.device != "auto" else ("cuda" if res["gpus_per_worker"] else "cpu")
        concurrency = plan_concurrency(cluster.get("CPU", 0), cluster.get("GPU", 0), res, len(todo))
        echo(f"ray: {cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs · {concurrency} cell(s) at a "
             f"time · {res['workers_per_trial']} worker(s) × {res['cpus_per_worker']:g} CPU per cell"
             + (f" · ray started in {ray_s:.1f}s" if started else ""))
        settings = {"tracking_uri": uri, "artifact_root": str(workdir / "artifacts"), "experiment_id": exp_id,
                    "storage_path": str(workdir / "ray"), "cache_dir": str(workdir / "cache"),
                    "plugin_dirs": [str(p) for p in plugin_folders(plugin_dirs)], "resources": res,
                    "failure_retries": spec.failure_retries, "device": device,
                    "segarena_version": version("segarena"), "git_sha": git_sha()}
        progress = Progress(len(todo), concurrency, echo)
        tuner = tune.Tuner(
            tune.with_resources(run_cell, TRIAL_RESOURCES),
            param_space={"cell": tune.grid_search([c.as_dict() for c in todo]), "settings": settings},
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=True),
            run_config=tune.RunConfig(name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                      storage_path=str(workdir / "ray"), verbose=0, callbacks=[progress]))
        tuner.fit()
        return ray_s, progress.failures
    finally:
        if started:
            ray.shutdown()
