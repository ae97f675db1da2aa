"""The one place segarena starts or joins Ray.

Without an address, ``connect`` starts a *private* one-node Ray for this driver: it never joins a
``ray start`` cluster that happens to run on the machine (Ray's ``address="local"``), and every
process it starts listens on 127.0.0.1 only. Ray resolves ``127.0.0.1`` to the machine's routable
IP unless multi-node clusters are disabled (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read into
``ray._private.ray_constants.ENABLE_RAY_CLUSTER``); with the node IP on loopback the GCS, raylet,
workers, dashboard, agents and metrics servers all bind to it. A private Ray is one node, so we
disable multi-node for it. It also runs with token auth on and a fresh random token in
``RAY_AUTH_TOKEN`` (nothing written to ``~/.ray``), which silences Ray 2.60's "token auth enabled"
notice and keeps other local users out of its dashboard.

With an address, ``connect`` joins that cluster with ``RAY_AUTH_MODE=token`` (unless set), after
a bounded check that it is reachable: a TCP probe, then a quiet ``ray.init`` in a child process.
An unreachable cluster is one ``SegarenaError`` line within ``CONNECT_WAIT_S``, not minutes of
Ray's C++ warnings.

``check_shared_storage`` refuses a multi-machine cluster whose work dir only this machine sees.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segarena.platform.errors import SegarenaError

# Ray Train's controller polls its workers every 2 s by default: a finished tiny cell then waits
# up to a poll to hand back. Polling faster costs nothing measurable at this scale.
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "RAY_TRAIN_V2_ENABLED": "1"}
# Credentials for an auth-enabled MLflow server: cluster workers log to it too. They travel in the
# job's runtime env, which the (token-protected) dashboard shows to holders of the Ray token.
FORWARDED_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
CONNECT_WAIT_S = 25.0
TCP_WAIT_S = 10.0
_SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Filesystems every machine of a cluster can mount: a work dir on one of them is shared.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "fuse.glusterfs", "lustre", "gpfs", "beegfs",
    "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs", "fuse.rclone", "fuse.mountpoint-s3", "9p", "virtiofs",
    "fuse.cephfs", "efs", "fuse.efs", "wekafs", "orangefs", "ocfs2", "gfs2",
})


@dataclass
class RayHandle:
    """A connected Ray: ``shutdown()`` stops it if this handle started it and restores the environment."""

    address: str | None          # what the caller asked for (None: a private local Ray)
    gcs_address: str
    started_here: bool
    dashboard_url: str | None
    start_s: float
    nodes: list[dict[str, Any]] = field(default_factory=list)  # alive nodes (ray.nodes() records)
    _restore: dict[str, str | None] = field(default_factory=dict, repr=False)
    _connected_here: bool = field(default=False, repr=False)
    _cluster_mode: bool | None = field(default=None, repr=False)  # Ray's ENABLE_RAY_CLUSTER to put back

    def shutdown(self) -> None:
        if self._connected_here:
            import ray

            ray.shutdown()
            self._connected_here = False
        if self._cluster_mode is not None:
            _set_cluster_mode(self._cluster_mode)
            self._cluster_mode = None
        for key, value in self._restore.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._restore = {}

    def __enter__(self) -> RayHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def connect(address: str | None, *, verbose: bool = False, wait_s: float = CONNECT_WAIT_S,
            num_cpus: int | None = None) -> RayHandle:
    """Start a private local Ray (``address=None``) or join the cluster at ``address`` (host:port).

    A Ray already initialised in this process (a test's session Ray) is reused and left running.
    """
    import ray

    if ray.is_initialized():
        ctx = ray.get_runtime_context()
        return RayHandle(address, ctx.gcs_address, False, None, 0.0, _alive_nodes())
    t0 = time.time()
    restore = _apply_env(RAY_ENV, only_missing=True)
    try:
        if address:
            return _join(address, verbose, wait_s, t0, restore)
        return _start_private(verbose, num_cpus, t0, restore)
    except BaseException:
        _restore_env(restore)
        raise


def _start_private(verbose: bool, num_cpus: int | None, t0: float, restore: dict[str, str | None]) -> RayHandle:
    import ray

    restore.update(_apply_env({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                               "RAY_AUTH_TOKEN_PATH": None, _SINGLE_NODE_ENV: "0"}))
    previous = _set_cluster_mode(False)
    _reload_auth_config()
    try:
        ctx = ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=True,
                       dashboard_host="127.0.0.1", num_cpus=num_cpus, log_to_driver=verbose,
                       logging_level="WARNING", configure_logging=True)
    except BaseException:
        _set_cluster_mode(previous)
        raise
    return RayHandle(None, ctx.address_info["gcs_address"], True, _url(ctx.dashboard_url), time.time() - t0,
                     _alive_nodes(), restore, True, previous)


def _join(address: str, verbose: bool, wait_s: float, t0: float, restore: dict[str, str | None]) -> RayHandle:
    import ray

    host, port = _parse_address(address)
    restore.update(_apply_env({"RAY_AUTH_MODE": "token"}, only_missing=True))
    _reload_auth_config()
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" and not _token_available():
        raise SegarenaError(f"Ray cluster {address}: token auth is on but no token was found (tried "
                            "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token); copy the head node's token "
                            "(`ray get-auth-token`) into RAY_AUTH_TOKEN")
    deadline = t0 + wait_s
    previous = None
    if _probe_tcp(address, host, port, min(deadline, time.time() + TCP_WAIT_S)):
        # A cluster that listens on loopback only (nodes started with a loopback node IP): Ray would
        # rewrite 127.0.0.1 to the routable IP and never reach it, unless multi-node lookups are off.
        restore.update(_apply_env({_SINGLE_NODE_ENV: "0"}))
        previous = _set_cluster_mode(False)
    try:
        _probe_ray(address, deadline)
        env = {k: os.environ[k] for k in (*RAY_ENV, *FORWARDED_ENV) if os.environ.get(k)}
        ctx = ray.init(address=address, log_to_driver=verbose, logging_level="WARNING",
                       runtime_env={"env_vars": env})
    except BaseException:
        if previous is not None:
            _set_cluster_mode(previous)
        raise
    return RayHandle(address, ctx.address_info["gcs_address"], False, _url(ctx.dashboard_url), time.time() - t0,
                     _alive_nodes(), restore, True, previous)


def _parse_address(address: str) -> tuple[str, int]:
    match = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d{1,5})", address.strip())
    if not match or not 0 < int(match.group(2)) < 65536:
        raise SegarenaError(f"--address {address!r} is not HOST:PORT of a Ray head (e.g. 10.0.0.5:6379)")
    return match.group(1), int(match.group(2))


def _probe_tcp(address: str, host: str, port: int, deadline: float) -> bool:
    """Wait until the head's port accepts TCP. True when it answers on loopback but not on this
    machine's routable IP (a loopback-only cluster), False otherwise."""
    loopback = _is_loopback_host(host)
    routable = _routable_ip() if loopback else None
    last = "no attempt"
    while True:
        for target in ([routable] if routable else []) + [host]:
            try:
                with socket.create_connection((target, port), timeout=max(0.5, min(3.0, deadline - time.time()))):
                    return loopback and target != routable
            except socket.gaierror as exc:
                raise SegarenaError(f"Ray cluster {address}: cannot resolve host {host!r} ({exc.strerror})") from None
            except OSError as exc:
                last = exc.strerror or type(exc).__name__
        if time.time() + 1.0 > deadline:
            break
        time.sleep(1.0)
    raise SegarenaError(f"Ray cluster {address} is unreachable: TCP connect to {host}:{port} failed for "
                        f"{TCP_WAIT_S:.0f} s ({last}); is `ray start --head --port {port}` running there?")


def _is_loopback_host(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _routable_ip() -> str | None:
    """The address Ray substitutes for 127.0.0.1 (the interface of the default route)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


_PROBE = """
import json, sys
import ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
print(json.dumps(sum(1 for n in ray.nodes() if n["Alive"])))
ray.shutdown()
"""
_CPP_PREFIX = re.compile(r"^\[[^\]]*\]\s*[\w.]+:\d+:\s*")


def _probe_ray(address: str, deadline: float) -> None:
    """``ray.init`` in a child process, so a cluster that never answers costs a bounded wait, quietly."""
    budget = max(1.0, deadline - time.time())
    proc = subprocess.Popen([sys.executable, "-c", _PROBE, address], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise SegarenaError(f"Ray cluster {address} did not answer: its port accepts TCP but ray.init did not "
                            f"connect within {budget:.0f} s (is it a Ray GCS port, of the same Ray version?)") from None
    if proc.returncode != 0:
        hint = ("; check that RAY_AUTH_TOKEN is the head's token (`ray get-auth-token` there)"
                if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else "")
        raise SegarenaError(f"Ray cluster {address} refused the connection: {_last_error(err)}{hint}")
    try:
        json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SegarenaError(f"Ray cluster {address}: the connection probe printed no node count "
                            f"({_last_error(err)})") from None


def _last_error(stderr: str) -> str:
    lines = [_CPP_PREFIX.sub("", ln).strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b", ln)]
    text = (errors or lines or ["no output"])[-1]
    return text[:300]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    candidate = Path(path).expanduser() if path else Path.home() / ".ray" / "auth_token"
    try:
        return bool(candidate.read_text().strip())
    except OSError:
        return False


def _apply_env(values: Mapping[str, str | None], only_missing: bool = False) -> dict[str, str | None]:
    """Set (or, for None, unset) variables; return what to put back."""
    restore: dict[str, str | None] = {}
    for key, value in values.items():
        if only_missing and key in os.environ:
            continue
        restore[key] = os.environ.get(key)
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return restore


def _restore_env(restore: Mapping[str, str | None]) -> None:
    for key, value in restore.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _set_cluster_mode(enabled: bool) -> bool:
    """Ray reads ENABLE_RAY_CLUSTER once at import; the driver's own lookups use the module attribute.
    Returns the previous value."""
    from ray._private import ray_constants

    previous = bool(ray_constants.ENABLE_RAY_CLUSTER)
    ray_constants.ENABLE_RAY_CLUSTER = enabled
    return previous


def _reload_auth_config() -> None:
    """Make this process see the auth mode and token just put in the environment (Ray caches both)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # pragma: no cover - a Ray without token auth
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _url(dashboard_url: str | None) -> str | None:
    if not dashboard_url:
        return None
    return dashboard_url if "://" in dashboard_url else f"http://{dashboard_url}"


def _alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


# shared storage ---------------------------------------------------------------------------------
def _local_addresses() -> set[str]:
    names = {"127.0.0.1", "::1", "localhost", socket.gethostname()}
    try:
        names |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        pass
    if _routable_ip():
        names.add(str(_routable_ip()))
    return names


def _on_this_machine(node: Mapping[str, Any], local: set[str]) -> bool:
    addr = str(node.get("NodeManagerAddress", ""))
    return addr.startswith("127.") or addr in local or node.get("NodeManagerHostname") in local


def mount_of(path: Path, mounts_file: Path = Path("/proc/mounts")) -> tuple[str, str]:
    """(mount point, filesystem type) of the mount holding ``path``: the longest matching mount point."""
    best = ("/", "unknown")
    try:
        lines = mounts_file.read_text().splitlines()
    except OSError:
        return best
    target = str(path)
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
            best = (point, parts[2])
    return best


def check_shared_storage(path: str | Path, cluster_nodes: Sequence[Mapping[str, Any]], *, setting: str = "--workdir",
                         mounts_file: Path = Path("/proc/mounts")) -> None:
    """Refuse a cluster spread over several machines whose work dir (Ray storage, dataset cache) only
    this machine sees.

    Shared: a ``pyarrow.fs`` URI (``s3://``, ``gs://``, ``hdfs://``, ``abfs://`` …); a path on a
    network filesystem per /proc/mounts (NFS, CIFS, CephFS, Lustre, …); any path when every alive
    node runs on this machine (a one-machine cluster shares its disk). ``SEGARENA_SHARED_STORAGE=1``
    vouches for storage shared by other means (e.g. the same local path synced on every node).
    """
    text = str(path)
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme and scheme.group(1).lower() != "file":
        return
    if os.environ.get("SEGARENA_SHARED_STORAGE") == "1":
        return
    alive = [n for n in cluster_nodes if n.get("Alive", True)]
    local = _local_addresses()
    remote = [n for n in alive if not _on_this_machine(n, local)]
    if not remote:
        return
    resolved = Path(text[len("file://"):] if scheme else text).expanduser().resolve()
    point, fstype = mount_of(resolved, mounts_file)
    if fstype in NETWORK_FILESYSTEMS and not str(resolved).startswith("/tmp/"):
        return
    where = remote[0].get("NodeManagerAddress", "?")
    raise SegarenaError(f"{setting} {resolved} is on this machine's local {fstype} filesystem ({point}), but the Ray "
                        f"cluster has {len(remote)} node(s) on other machines (e.g. {where}) that cannot see it: use "
                        "an NFS (or other network) mount present on every node, or a pyarrow.fs URI such as "
                        "s3://bucket/segarena (or set SEGARENA_SHARED_STORAGE=1 if the path is shared otherwise)")
