"""A segarena suite on the two-node loopback Ray, recorded in the PostgreSQL-backed MLflow server and
ranked from another folder with no work dir of the run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster
cluster_nodes = sys.modules["segarena_cluster_nodes"]  # tests/cluster/nodes.py, loaded by conftest.py's load_nodes()



def _train_workers(dashboard_url: str | None) -> dict[str, str]:
    """actor id → node id of every Ray Train worker the cluster remembers (dead ones too). The dashboard
    is named: other Ray instances may run on this machine."""
    from ray.util.state import list_actors

    assert dashboard_url
    actors = list_actors(address=dashboard_url, filters=[("class_name", "=", "RayTrainWorker")], limit=10000,
                         raise_on_missing_output=False)
    return {a.actor_id: a.node_id for a in actors}


def test_two_worker_cell_runs_across_both_nodes_and_ranks_from_the_server(joined, mlflow_server, tmp_path: Path
                                                                          ) -> None:
    from segarena.platform.run.cluster import connect
    from segarena.platform.run.driver import run_suite

    name = f"cluster-ddp-{os.getpid()}"
    suite = tmp_path / "suite.yaml"
    suite.write_text(cluster_nodes.unet_suite(name, workers=2))
    with connect(joined.address) as handle:
        before = _train_workers(handle.dashboard_url)
        nodes = {n["NodeID"] for n in handle.nodes}
    workdir = Path(tempfile.mkdtemp(prefix="segarena-cluster-run-", dir="/tmp"))  # both nodes are this machine
    lines: list[str] = []
    t0 = time.time()
    try:
        summary = run_suite(suite, workdir, address=joined.address, tracking_uri=mlflow_server.uri,
                            echo=lines.append)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the leaderboard below must not need it
    print(f"\n[suite on 2 nodes] {time.time() - t0:.1f}s: " + " | ".join(lines[-3:]))
    assert summary.failures == [] and summary.ran == 1, (summary, lines)

    with connect(joined.address) as handle:
        new = {a: n for a, n in _train_workers(handle.dashboard_url).items() if a not in before}
    assert len(new) == 2, new
    assert set(new.values()) == nodes  # one DDP worker on each node

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-m", "segarena.platform.cli", "leaderboard", "--tracking-uri",
                           mlflow_server.uri, "--suite", name, "--format", "json"], cwd=elsewhere,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    board = json.loads(proc.stdout)
    rows = board["leaderboard"]
    assert [r["method"] for r in rows] == ["unet"] and not board["failed"], board
    assert rows[0]["n_cases"] > 0 and 0.0 <= rows[0]["dice_mean"] <= 1.0
    assert not list(elsewhere.iterdir())  # nothing written where the leaderboard was read
