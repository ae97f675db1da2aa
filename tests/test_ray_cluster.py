"""ray_cluster without a cluster: address checks, bounded give-up on unreachable addresses (in a fresh
process, so no test's Ray is reused), token checks, and the shared-storage rule."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segarena.platform.errors import SegarenaError
from segarena.platform.run.cluster import RayHandle, _parse_address, check_shared_storage, mount_of

CONNECT = """
import sys
from segarena.platform.errors import SegarenaError
from segarena.platform.run.cluster import connect
try:
    connect(sys.argv[1])
except SegarenaError as exc:
    print(exc)
    sys.exit(2)
sys.exit(0)
"""


def _connect_in_child(address: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", CONNECT, address], capture_output=True, text=True, timeout=60,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, **env})
    return proc, time.time() - t0


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


@pytest.mark.parametrize("bad", ["nonsense", "10.0.0.1", "host:99999", "host:port", ":6379"])
def test_address_must_be_host_and_port(bad: str) -> None:
    with pytest.raises(SegarenaError, match="HOST:PORT"):
        _parse_address(bad)


def test_address_forms() -> None:
    assert _parse_address("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert _parse_address("head.example:6380") == ("head.example", 6380)
    assert _parse_address("[::1]:6379") == ("::1", 6379)


def test_unreachable_address_gives_one_line_within_30s() -> None:
    port = _dead_port()
    proc, took = _connect_in_child(f"127.0.0.1:{port}", {"RAY_AUTH_TOKEN": "a" * 64})
    assert proc.returncode == 2, proc.stderr[-1000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "unreachable" in lines[0], proc.stdout
    assert "rpc_client" not in proc.stderr and "Failed to connect to GCS" not in proc.stderr  # no C++ warnings
    assert took < 30


def test_missing_token_is_named_before_any_connection(tmp_path: Path) -> None:
    proc, took = _connect_in_child("127.0.0.1:6379", {"HOME": str(tmp_path)})
    assert proc.returncode == 2 and "RAY_AUTH_TOKEN" in proc.stdout and len(proc.stdout.strip().splitlines()) == 1
    assert took < 20


def test_shutdown_restores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "temporary")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    handle = RayHandle(None, "127.0.0.1:1", False, None, 0.0, [], {"RAY_AUTH_TOKEN": "before", "RAY_AUTH_MODE": None})
    handle.shutdown()
    assert os.environ["RAY_AUTH_TOKEN"] == "before" and "RAY_AUTH_MODE" not in os.environ


MOUNTS = """/dev/vda / ext4 rw 0 0
tmpfs /tmp tmpfs rw 0 0
nas:/export /mnt/shared nfs4 rw 0 0
nas:/scratch /tmp/nfs nfs4 rw 0 0
"""
REMOTE = [{"Alive": True, "NodeManagerAddress": "127.0.0.1", "NodeManagerHostname": "here"},
          {"Alive": True, "NodeManagerAddress": "203.0.113.7", "NodeManagerHostname": "gpu-node-7"}]


@pytest.fixture
def mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("SEGARENA_SHARED_STORAGE", raising=False)
    path = tmp_path / "mounts"
    path.write_text(MOUNTS)
    return path


def test_mount_of_picks_the_longest_mount_point(mounts: Path) -> None:
    assert mount_of(Path("/mnt/shared/runs"), mounts) == ("/mnt/shared", "nfs4")
    assert mount_of(Path("/mnt/sharedx"), mounts) == ("/", "ext4")
    assert mount_of(Path("/tmp/x"), mounts) == ("/tmp", "tmpfs")


def test_local_work_dir_on_a_multi_machine_cluster_is_refused(mounts: Path) -> None:
    with pytest.raises(SegarenaError) as err:
        check_shared_storage("/srv/segarena-runs", REMOTE, mounts_file=mounts)
    message = str(err.value)
    assert "\n" not in message and "--workdir /srv/segarena-runs" in message and "203.0.113.7" in message
    with pytest.raises(SegarenaError, match="tmpfs"):
        check_shared_storage("/tmp/runs", REMOTE, mounts_file=mounts)
    with pytest.raises(SegarenaError):  # /tmp is never shared, whatever is mounted there
        check_shared_storage("/tmp/nfs/runs", REMOTE, mounts_file=mounts)


def test_shared_storage_passes(mounts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_shared_storage("/mnt/shared/segarena-runs", REMOTE, mounts_file=mounts)       # NFS
    check_shared_storage("s3://bucket/segarena", REMOTE, mounts_file=mounts)            # pyarrow.fs URI
    check_shared_storage("gs://bucket/segarena", REMOTE, mounts_file=mounts)
    check_shared_storage("/srv/runs", REMOTE[:1], mounts_file=mounts)                   # one machine
    check_shared_storage("/srv/runs", [*REMOTE[:1], {**REMOTE[1], "Alive": False}], mounts_file=mounts)
    with pytest.raises(SegarenaError):
        check_shared_storage("file:///srv/runs", REMOTE, mounts_file=mounts)             # file:// is local
    monkeypatch.setenv("SEGARENA_SHARED_STORAGE", "1")
    check_shared_storage("/srv/runs", REMOTE, mounts_file=mounts)                       # vouched for
