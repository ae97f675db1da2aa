"""How many trials run at once on a Ray cluster: shared by the cell stage (run/driver.py) and the search
stage (run/search/), so neither imports the other."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from segarena.platform.errors import SegarenaError

if TYPE_CHECKING:
    from segarena.platform.spec.suite import Resources


def plan_concurrency(cluster_cpus: float, cluster_gpus: float, res: Resources, n_cells: int) -> int:
    """How many trials fit at once: each holds workers × (CPUs, GPUs) per worker."""
    need_cpu = res.workers_per_trial * res.cpus_per_worker
    fits = math.floor(cluster_cpus / need_cpu + 1e-9)
    if res.gpus_per_worker:
        fits = min(fits, math.floor(cluster_gpus / (res.workers_per_trial * res.gpus_per_worker) + 1e-9))
    if fits < 1:
        raise SegarenaError(f"a trial needs {need_cpu} CPUs and {res.gpus_per_worker} GPUs per worker × "
                            f"{res.workers_per_trial} workers, but the cluster has {cluster_cpus} CPUs and "
                            f"{cluster_gpus} GPUs: lower resources.* in the suite")
    if res.max_concurrent_trials:
        fits = min(fits, res.max_concurrent_trials)
    return max(1, min(fits, n_cells))
