"""`segarena server`: MLflow on a throw-away PostgreSQL with served artifacts, optional basic auth,
and the CLI that starts and stops both."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from segarena.platform.errors import SegarenaError
from segarena.platform.store.server import ServerHandle, free_port, serve, stop_postgres

pytestmark = pytest.mark.cluster


def _pg_running(directory: Path) -> bool:
    return (directory / "pg" / "data" / "postmaster.pid").exists()


def test_server_stores_runs_in_postgres_and_serves_artifacts(mlflow_server: ServerHandle, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    assert mlflow_server.backend_store_uri.startswith("postgresql+psycopg://")
    client = MlflowClient(mlflow_server.uri)
    exp = client.create_experiment(f"server-test-{os.getpid()}")
    assert client.get_experiment(exp).artifact_location.startswith("mlflow-artifacts:")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "dice", 0.75)
    src = tmp_path / "per_case.csv"
    src.write_text("case,dice\na,0.75\n")
    client.log_artifact(run.info.run_id, str(src))
    src.unlink()  # the copy the server keeps is the one read back
    back = client.download_artifacts(run.info.run_id, "per_case.csv", str(tmp_path))
    assert Path(back).read_text() == "case,dice\na,0.75\n"
    assert list(mlflow_server.artifacts.rglob("per_case.csv"))  # stored under DIR/artifacts by the server
    # the run lives in PostgreSQL: read it back through psycopg, not through MLflow
    import psycopg

    password = (mlflow_server.directory / "pg" / "password").read_text().strip()
    with psycopg.connect(host="127.0.0.1", port=mlflow_server.pg_port, user="segarena", password=password,
                         dbname="mlflow") as conn:
        row = conn.execute("SELECT value FROM latest_metrics WHERE run_uuid = %s AND key = 'dice'",
                           (run.info.run_id,)).fetchone()
    assert row is not None and row[0] == pytest.approx(0.75)


def test_auth_without_an_admin_password_is_one_line_and_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    directory = Path("/tmp") / f"segarena-noauth-{os.getpid()}"
    monkeypatch.delenv("SEGARENA_MLFLOW_ADMIN_PASSWORD", raising=False)
    try:
        with pytest.raises(SegarenaError, match="SEGARENA_MLFLOW_ADMIN_PASSWORD") as err, serve(directory, auth=True):
            pass
        assert "\n" not in str(err.value) and not _pg_running(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_cli_with_auth_refuses_anonymous_requests_and_stops_both_on_sigterm(monkeypatch: pytest.MonkeyPatch) -> None:
    """`segarena server --auth` in a child process: prints the URI, guards every request, and SIGTERM stops
    MLflow and PostgreSQL."""
    from mlflow.tracking import MlflowClient

    directory = Path("/tmp") / f"segarena-cli-{os.getpid()}"
    port = free_port()
    password = "Adm1n-" + os.urandom(8).hex()
    env = {**os.environ, "SEGARENA_MLFLOW_ADMIN_PASSWORD": password}
    proc = subprocess.Popen([sys.executable, "-m", "segarena.platform.cli", "server", "--dir", str(directory),
                             "--port", str(port), "--workers", "1", "--auth"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
    try:
        first = proc.stdout.readline().strip()
        assert first == f"tracking URI: http://127.0.0.1:{port}", (first, proc.stderr.read() if proc.poll() else "")
        uri = f"http://127.0.0.1:{port}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
        assert refused.value.code == 401
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-" + password)
        with pytest.raises(Exception, match=r"401|nauthori|credentials"):
            MlflowClient(uri).search_experiments()
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        assert MlflowClient(uri).create_experiment("with-auth")
        assert _pg_running(directory)
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        print(f"\n[server] stopped in {time.time() - t0:.1f}s")
        assert not _pg_running(directory)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{uri}/health", timeout=3)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stop_postgres(directory)
        shutil.rmtree(directory, ignore_errors=True)
