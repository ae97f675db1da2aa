"""`segarena server` pieces that need no database: one server per folder, Host-header allow-list, flags."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from segarena.platform.cli import main
from segarena.platform.errors import SegarenaError
from segarena.platform.store.server import _dir_lock, allowed_hosts


def test_one_server_per_folder(tmp_path: Path) -> None:
    with _dir_lock(tmp_path):
        with pytest.raises(SegarenaError, match="in use by a running"), _dir_lock(tmp_path):
            pass
    with _dir_lock(tmp_path):  # released when the first server stops
        pass


def test_allowed_hosts_loopback_unless_bound_wider() -> None:
    assert allowed_hosts("127.0.0.1", 5000) == "127.0.0.1:5000,localhost:5000"
    wide = allowed_hosts("0.0.0.0", 5001).split(",")
    assert f"{socket.gethostname()}:5001" in wide and not any(h.startswith("0.0.0.0") for h in wide)


def test_auth_without_password_and_bad_port_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SEGARENA_MLFLOW_ADMIN_PASSWORD", raising=False)
    assert main(["server", "--dir", str(tmp_path / "s"), "--auth"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SEGARENA_MLFLOW_ADMIN_PASSWORD" in err
    assert main(["server", "--dir", str(tmp_path / "s"), "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err
    assert not (tmp_path / "s" / "pg").exists()  # nothing started
