"""Environment faults (issue 18, item 3): one line, no traceback, no hang, each case bounded in time.

Servers started here bind 127.0.0.1 and are closed by their fixture whatever happens. Read-only folders
and files are made with ``chattr +i`` when the tests run as root (root ignores permission bits) and with
``chmod`` otherwise; the fixture undoes it."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from segarena.platform.cli import main
from segarena.platform.store.preflight import (
    EnvironmentFault,
    check_output_file,
    check_store_writable,
    check_tracking_uri,
    check_workdir,
)

BOUND_S = 30.0
SUITE = "name: pre\nmethods:\n  - name: unet\ndatasets:\n  - name: synthetic\n    params: {size: 32}\nseeds: [0]\n"


def cli(capsys, *argv: str) -> tuple[int, str, float]:
    t0 = time.monotonic()
    code = main(list(argv))
    return code, capsys.readouterr().err, time.monotonic() - t0


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and err.startswith("segarena: error: ") and "Traceback" not in err


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(SUITE)
    return path


@contextmanager
def read_only(path: Path):
    """``path`` (file or folder) unwritable even for root, restored on exit."""
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot make {path} immutable as root here: {done.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)


@pytest.fixture
def dead_port() -> int:
    """A local port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server():
    """Accepts connections (kernel backlog) and never answers: the case that used to hang for minutes."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"
    finally:
        s.close()


class _NotMlflow(http.server.BaseHTTPRequestHandler):
    """A web server that is up but is no MLflow: 200 on /health, 404 elsewhere."""

    def do_GET(self) -> None:  # http.server calls it by this name
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK" if self.path == "/health" else b"not here")

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotMlflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# work dir and store -----------------------------------------------------------------------------------------

def test_a_work_dir_that_is_a_file(tmp_path, capsys, suite):
    (tmp_path / "w").write_text("not a folder")
    code, err, took = cli(capsys, "run", str(suite), "--workdir", str(tmp_path / "w"))
    assert code == 2 and one_line(err) and took < BOUND_S
    assert f"work dir {tmp_path / 'w'} is not a directory" in err


def test_a_work_dir_that_is_not_writable(tmp_path, capsys, suite):
    (tmp_path / "w").mkdir()
    with read_only(tmp_path / "w"):
        code, err, took = cli(capsys, "run", str(suite), "--workdir", str(tmp_path / "w"))
        assert not list((tmp_path / "w").iterdir())
    assert code == 2 and one_line(err) and took < BOUND_S
    assert f"work dir {tmp_path / 'w'} is not writable" in err


def test_a_work_dir_whose_parent_is_not_writable(tmp_path, capsys, suite):
    (tmp_path / "ro").mkdir()
    with read_only(tmp_path / "ro"):
        code, err, took = cli(capsys, "run", str(suite), "--workdir", str(tmp_path / "ro" / "w"))
    assert code == 2 and one_line(err) and took < BOUND_S
    assert "cannot be created: its parent" in err and str(tmp_path / "ro") in err


def test_a_read_only_store(tmp_path, capsys, suite):
    import sqlite3

    wd = tmp_path / "w"
    wd.mkdir()
    sqlite3.connect(wd / "mlflow.db").execute("create table t (x int)").connection.commit()
    before = hashlib.sha256((wd / "mlflow.db").read_bytes()).hexdigest()
    with read_only(wd / "mlflow.db"):
        code, err, took = cli(capsys, "run", str(suite), "--workdir", str(wd))
    assert code == 2 and one_line(err) and took < BOUND_S
    assert f"tracking store {wd / 'mlflow.db'} is read-only" in err
    assert hashlib.sha256((wd / "mlflow.db").read_bytes()).hexdigest() == before
    assert sorted(p.name for p in wd.iterdir()) == ["mlflow.db"]  # nothing else written


def test_a_store_file_that_is_not_a_database(tmp_path, capsys):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "mlflow.db").write_text("garbage " * 100)
    code, err, took = cli(capsys, "leaderboard", "--workdir", str(tmp_path / "w"))
    assert code == 2 and one_line(err) and took < BOUND_S and "is not an SQLite database" in err


def test_a_suite_that_is_not_utf8(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_bytes(SUITE.replace("name: pre", "name: pre\ndescription: caf\xe9").encode("latin-1"))
    code, err, took = cli(capsys, "run", str(suite), "--workdir", str(tmp_path / "w"))
    assert code == 2 and one_line(err) and took < BOUND_S
    assert f"{suite}: not UTF-8 text (byte 0xe9 at offset" in err
    assert not (tmp_path / "w").exists()


# tracking URI -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["run", "leaderboard"])
def test_an_unsupported_tracking_uri_scheme(tmp_path, capsys, suite, command):
    args = [str(suite)] if command == "run" else []
    code, err, took = cli(capsys, command, *args, "--workdir", str(tmp_path / "w"), "--tracking-uri", "foo://bar")
    assert code == 2 and one_line(err) and took < BOUND_S
    assert "tracking URI 'foo://bar': unsupported scheme 'foo'" in err
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("command", ["run", "leaderboard"])
def test_a_tracking_server_that_is_down(tmp_path, capsys, suite, dead_port, command):
    uri = f"http://127.0.0.1:{dead_port}"
    args = [str(suite)] if command == "run" else []
    code, err, took = cli(capsys, command, *args, "--workdir", str(tmp_path / "w"), "--tracking-uri", uri)
    assert code == 2 and one_line(err) and took < BOUND_S
    assert f"tracking server {uri} is unreachable: tried GET {uri}/health with a 5 s timeout: " \
           "connection refused" in err
    assert not (tmp_path / "w").exists()


def test_a_tracking_server_that_never_answers_is_given_up_on_within_the_timeout(tmp_path, capsys, suite,
                                                                                 silent_server):
    code, err, took = cli(capsys, "run", str(suite), "--workdir", str(tmp_path / "w"), "--tracking-uri",
                          silent_server)
    assert code == 2 and one_line(err) and took < BOUND_S
    assert f"tracking server {silent_server} is unreachable: tried GET {silent_server}/health" in err
    assert "timed out" in err


def test_a_server_that_answers_passes_the_probe(web_server):
    t0 = time.monotonic()
    check_tracking_uri(web_server)
    assert time.monotonic() - t0 < 5


def test_an_mlflow_error_reaching_the_cli_is_one_line_exit_1(tmp_path, capsys, web_server, monkeypatch):
    """Up, but not an MLflow server: the probe passes, MLflow's own exception becomes one line."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    code, err, took = cli(capsys, "leaderboard", "--tracking-uri", web_server)
    assert code == 1 and one_line(err) and took < BOUND_S
    assert err.startswith("segarena: error: tracking store: MlflowException: ") and "404" in err


# output files -----------------------------------------------------------------------------------------------

def test_leaderboard_output_into_a_missing_folder(tmp_path, capsys):
    out = tmp_path / "nope" / "board.csv"
    code, err, took = cli(capsys, "leaderboard", "--workdir", str(tmp_path / "w"), "--format", "csv",
                          "--output", str(out))
    assert code == 2 and one_line(err) and took < BOUND_S
    assert f"--output {out}: folder {tmp_path / 'nope'} does not exist" in err


def test_output_checks(tmp_path):
    check_output_file(tmp_path / "board.csv")
    check_output_file(None)
    with pytest.raises(EnvironmentFault, match="is a directory"):
        check_output_file(tmp_path)


def test_store_checks_outside_the_work_dir(tmp_path):
    with pytest.raises(EnvironmentFault, match="does not exist"):
        check_store_writable(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    check_store_writable(f"sqlite:///{tmp_path / 'x.db'}")  # a new database in an existing folder
    check_store_writable(str(tmp_path / "mlruns" / "deep"))  # MLflow creates a file store's folders
    (tmp_path / "file").write_text("")
    with pytest.raises(EnvironmentFault, match="is not a directory"):
        check_store_writable(f"file://{tmp_path / 'file'}")
    check_workdir(tmp_path / "new" / "deeper")  # created later, under a writable parent
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".segarena-probe-*"))
