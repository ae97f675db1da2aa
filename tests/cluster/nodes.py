"""Helpers for cluster tests: real ``ray start`` nodes on loopback, process trees, listening sockets.

Nodes are stopped by killing their own process trees (never ``ray stop``, which would stop every
Ray on the machine). ``ray start`` resolves ``--node-ip-address 127.0.0.1`` to the machine's
routable IP; the nodes here run through a wrapper that keeps 127.0.0.1, so every process of the
test clusters listens on loopback only, like segarena's private Ray.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# `ray start` that keeps a loopback --node-ip-address (Ray would resolve it to the routable IP).
RAY_START = ("import sys, ray._private.services as s; s.resolve_ip_for_localhost = lambda host: host; "
             "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())")
NODE_START_TIMEOUT_S = 120.0


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _psutil():
    """Ray's bundled psutil (on sys.path once ray is imported)."""
    import importlib

    import ray  # noqa: F401

    return importlib.import_module("psutil")


def listening_on(pids: set[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every TCP socket those processes listen on (Ray's bundled psutil)."""
    psutil = _psutil()

    out = []
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            out.append((conn.laddr.ip, conn.laddr.port, conn.pid))
    return out


def process_tree(pid: int) -> set[int]:
    psutil = _psutil()

    try:
        proc = psutil.Process(pid)
        return {pid, *(c.pid for c in proc.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def kill_tree(proc: subprocess.Popen, marker: str | None = None, grace_s: float = 15.0) -> None:
    """SIGTERM a ``ray start --block`` node (it stops its own processes), then SIGKILL whatever is left
    of its tree and of any process whose command line names ``marker`` (the node's temp dir)."""
    psutil = _psutil()

    pids = process_tree(proc.pid)
    if marker:
        for p in psutil.process_iter(["pid", "cmdline"]):
            if marker in " ".join(p.info.get("cmdline") or []):
                pids.add(p.info["pid"])
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)


@dataclass
class RayCluster:
    address: str
    token: str | None
    temp_dir: Path
    env: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)
    start_s: float = 0.0

    def pids(self) -> set[int]:
        return set().union(*(process_tree(p.pid) for p in self.procs))

    def driver_env(self) -> dict[str, str]:
        """What a driver (this test process) needs to join: the token, and no stale address."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token} if self.token else {}


def _node_env(token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") or k == "RAY_TRAIN_V2_ENABLED"}
    env.update({"OMP_NUM_THREADS": "1", "RAY_TRAIN_V2_ENABLED": "1", "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"})
    if token:
        env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    else:
        env["RAY_AUTH_MODE"] = "disabled"
    return env


def _start_node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-c", RAY_START, "start", "--block", "--disable-usage-stats",
                                 "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                                 "--object-store-memory", str(200 * 2**20), *args],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)


_WAIT_NODES = """
import sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
deadline = time.time() + float(sys.argv[3])
while sum(1 for n in ray.nodes() if n["Alive"]) < int(sys.argv[2]) and time.time() < deadline:
    time.sleep(0.5)
print(sum(1 for n in ray.nodes() if n["Alive"]))
"""


def _wait_for_nodes(cluster: RayCluster, n: int, timeout: float) -> None:
    deadline = time.time() + timeout
    host, port = cluster.address.rsplit(":", 1)
    while time.time() < deadline:
        for p in cluster.procs:
            if p.poll() is not None:
                raise RuntimeError(f"a ray node exited with {p.returncode}; see {cluster.temp_dir}/*.log")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    proc = subprocess.run([sys.executable, "-c", _WAIT_NODES, cluster.address, str(n),
                           str(max(5.0, deadline - time.time()))], capture_output=True, text=True,
                          env={**_node_env(cluster.token), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
                          timeout=timeout + 30)
    alive = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "?"
    if alive != str(n):
        raise RuntimeError(f"ray cluster {cluster.address}: {alive} of {n} nodes alive ({proc.stderr[-400:]})")


def start_cluster(n_nodes: int, token: str | None) -> Iterator[RayCluster]:
    """``n_nodes`` loopback nodes (head + workers) of 1 CPU on non-default ports, stopped on exit."""
    t0 = time.time()
    temp_dir = Path(tempfile.mkdtemp(prefix="sgr", dir="/tmp"))  # short: Ray's socket paths are length-limited
    env = _node_env(token)
    gcs, dash, client, *rest = free_ports(3 + 6 * n_nodes)
    cluster = RayCluster(f"127.0.0.1:{gcs}", token, temp_dir, env)
    try:
        for i in range(n_nodes):
            nm, om, agent_http, agent_grpc, metrics, runtime_env = rest[6 * i:6 * i + 6]
            wmin = 20000 + 2000 * (os.getpid() % 6) + 1000 * i  # below the ephemeral range free_ports uses
            common = ["--node-manager-port", str(nm), "--object-manager-port", str(om),
                      "--dashboard-agent-listen-port", str(agent_http), "--dashboard-agent-grpc-port",
                      str(agent_grpc), "--metrics-export-port", str(metrics), "--runtime-env-agent-port",
                      str(runtime_env), "--min-worker-port", str(wmin), "--max-worker-port", str(wmin + 999)]
            if i == 0:
                args = ["--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
                        "--include-dashboard", "true", "--ray-client-server-port", str(client),
                        "--temp-dir", str(temp_dir), *common]
            else:
                args = ["--address", cluster.address, *common]
            cluster.procs.append(_start_node(args, env, temp_dir / f"node{i}.log"))
            if i == 0:
                _wait_for_nodes(cluster, 1, NODE_START_TIMEOUT_S)
        if n_nodes > 1:
            _wait_for_nodes(cluster, n_nodes, NODE_START_TIMEOUT_S)
        cluster.start_s = time.time() - t0
        print(f"\n[cluster timing] {n_nodes}-node ray cluster up in {cluster.start_s:.1f}s", file=sys.stderr)
        yield cluster
    finally:
        for proc in reversed(cluster.procs):
            kill_tree(proc, marker=str(temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)


cluster_context = contextmanager(start_cluster)


def unet_suite(name: str, *, seeds: tuple[int, ...] = (0,), size: int = 32, epochs: int = 1, steps: int = 3,
               workers: int = 1, val_cases: int = 4, retries: int | None = None) -> str:
    """The small CPU suite the cluster tests and the multi-node benchmark run: tiny U-Net × synthetic
    data, one CPU per worker, minimal timing settings (YAML text)."""
    retry = f"failure_retries: {retries}\n" if retries is not None else ""
    return (f"name: {name}\n"
            "methods:\n  - name: unet\n    profile: tiny\n"
            f"datasets:\n  - name: synthetic\n    params: {{size: {size}, n_cases: 16}}\n"
            f"seeds: [{', '.join(str(s) for s in seeds)}]\nepochs: {epochs}\nsteps_per_epoch: {steps}\n{retry}"
            f"resources: {{workers_per_trial: {workers}, cpus_per_worker: 1, gpus_per_worker: 0}}\n"
            f"evaluation: {{timing_repeats: 2, timing_warmup: 1, throughput_batch: 2, val_cases: {val_cases}}}\n")
