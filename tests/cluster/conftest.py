"""Cluster fixtures: a PostgreSQL-backed MLflow server and a two-node Ray of real ``ray start``
processes on loopback (helpers in nodes.py), each stopped whatever happens. Every test here is
marked ``cluster`` (``pytestmark`` in each module) and prints its duration."""

from __future__ import annotations

import importlib.util
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from segarena.platform.store.server import ServerHandle, serve


def load_nodes():
    """tests/cluster/nodes.py, loaded once by path (the tests folder is not a package)."""
    name = "segarena_cluster_nodes"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("nodes.py"))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


nodes = load_nodes()


@pytest.fixture(autouse=True)
def _timed(request: pytest.FixtureRequest) -> Iterator[None]:
    t0 = time.time()
    yield
    print(f"\n[cluster timing] {request.node.nodeid}: {time.time() - t0:.1f}s", file=sys.stderr)


@pytest.fixture(scope="session")
def ray_two_nodes() -> Iterator[nodes.RayCluster]:
    """A head and a second node on 127.0.0.1, 1 CPU each, token auth on (one random token for all)."""
    yield from nodes.start_cluster(2, secrets.token_hex(32))


@pytest.fixture
def joined(ray_two_nodes: nodes.RayCluster, monkeypatch: pytest.MonkeyPatch) -> nodes.RayCluster:
    """The driver environment that joins ``ray_two_nodes``."""
    for k, v in ray_two_nodes.driver_env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return ray_two_nodes


def _store_dir(prefix: str) -> Path:
    # Not under pytest's tmp dir (mode 0700 above it): as root PostgreSQL runs as another user.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[ServerHandle]:
    """PostgreSQL + MLflow with served artifacts, for the whole session."""
    directory = _store_dir("segarena-store-")
    try:
        with serve(directory, workers=1) as handle:
            print(f"\n[cluster timing] mlflow server on postgresql up in {handle.start_s:.1f}s", file=sys.stderr)
            yield handle
    finally:
        shutil.rmtree(directory, ignore_errors=True)
