"""``segarena ui``: the MLflow UI on a work dir's store, on this machine only (127.0.0.1).

The work dir's store is ``<workdir>/mlflow.db`` with artifacts under ``<workdir>/artifacts`` as
served artifacts (``mlflow-artifacts:/...``), so the UI is an ``mlflow server`` that serves them.
It runs in its own process group: Ctrl-C stops the server and every worker it started.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any

from segarena.platform.cli.flags import workdir_arg

HOST = "127.0.0.1"
DEFAULT_PORT = 5000
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0

EXAMPLES = """examples:
  segarena ui                                   # ./segarena-runs at http://127.0.0.1:5000
  segarena ui --workdir /scratch/runs --port 5001"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("ui", help="browse a work dir's runs, metrics and artifacts in the MLflow UI",
                       description="Start the MLflow UI on a work dir's store, bound to 127.0.0.1, and print its "
                                   "URL; Ctrl-C stops it.",
                       epilog=EXAMPLES)
    workdir_arg(p)
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    p.set_defaults(func=cmd_ui)


def server_command(workdir: Path, port: int) -> list[str]:
    """The ``mlflow server`` command line for a work dir (one worker: a UI for one person)."""
    from segarena.platform.store.workdir import WorkDir

    wd = WorkDir.at(workdir)
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", wd.tracking_uri,
            "--serve-artifacts", "--artifacts-destination", str(wd.artifacts),
            "--host", HOST, "--port", str(port), "--workers", "1"]


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = READY_TIMEOUT_S) -> bool:
    """Poll ``/health`` until it answers OK, the server dies, or the timeout passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the server's whole process group (it leads one), SIGKILL what is left after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader: a zombie still counts as a member of the group
            if not _group_alive(proc.pid):
                return
            time.sleep(0.1)


def _drain(stream: Any, tail: deque[str]) -> None:
    """Keep the server's last log lines (for an error message) without letting its pipe fill up."""
    for raw in iter(stream.readline, b""):
        tail.append(raw.decode(errors="replace").rstrip())


def cmd_ui(args: argparse.Namespace) -> int:
    from segarena.platform.errors import SegarenaError
    from segarena.platform.store.workdir import WorkDir

    wd = WorkDir.at(args.workdir)
    if not wd.exists():
        raise SegarenaError(f"no tracking store at {wd.db}: run a suite first (or give --workdir)")
    if not 0 < args.port < 65536:
        raise SegarenaError(f"--port {args.port} is not a TCP port")
    if not port_free(args.port):
        raise SegarenaError(f"port {args.port} on {HOST} is in use: pick another with --port")
    url = f"http://{HOST}:{args.port}"
    print(f"starting the MLflow UI on {wd.db} ...", flush=True)
    proc = subprocess.Popen(server_command(wd.root, args.port), start_new_session=True,
                            stdout=None if args.verbose else subprocess.DEVNULL,
                            stderr=None if args.verbose else subprocess.PIPE)
    tail: deque[str] = deque(maxlen=20)
    if proc.stderr is not None:
        threading.Thread(target=_drain, args=(proc.stderr, tail), daemon=True).start()
    try:
        if not wait_ready(url, proc):
            last = next((ln for ln in reversed(tail) if ln.strip()), "")
            raise SegarenaError(f"the MLflow server did not start on {url}"
                                + (f": {last}" if last else " (run with -v to see its log)"))
        print(f"MLflow UI: {url}   (store {wd.root}; Ctrl-C stops it)", flush=True)
        code = proc.wait()
        return 0 if code in (0, -signal.SIGTERM) else 1
    except KeyboardInterrupt:
        print("\nstopping the MLflow UI", flush=True)
        return 0
    finally:
        stop(proc)
