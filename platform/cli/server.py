"""``segarena server``: a shared MLflow tracking server on a throw-away PostgreSQL, in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

EPILOG = """examples:
  segarena server --dir /srv/segarena-store                  # http://127.0.0.1:5000
  segarena run default --tracking-uri http://127.0.0.1:5000 --workdir /tmp/any
  SEGARENA_MLFLOW_ADMIN_PASSWORD=... segarena server --dir /srv/store --host 0.0.0.0 --auth
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("server", help="run a shared MLflow tracking server on PostgreSQL (Ctrl-C stops it)",
                       description="Start PostgreSQL and an MLflow tracking server with served artifacts, both "
                                   "kept in --dir (created on first use, reused afterwards), print the tracking "
                                   "URI and run until Ctrl-C or SIGTERM, then stop both.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", required=True, help="folder for the database, artifacts and logs")
    p.add_argument("--port", type=int, default=5000, help="MLflow port (default 5000)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface MLflow binds (default 127.0.0.1; 0.0.0.0 to serve other machines)")
    p.add_argument("--allowed-hosts", default=None,
                   help="Host headers MLflow accepts (default: loopback names, plus this machine's if --host)")
    p.add_argument("--workers", type=int, default=2, help="MLflow worker processes (default 2)")
    p.add_argument("--auth", action="store_true",
                   help="MLflow basic auth; admin password from $SEGARENA_MLFLOW_ADMIN_PASSWORD")
    p.set_defaults(func=cmd_server)


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_server(args: argparse.Namespace) -> int:
    from segarena.platform.errors import SegarenaError
    from segarena.platform.store.server import ADMIN_PASSWORD_ENV, serve

    if not 0 < args.port < 65536:
        raise SegarenaError(f"--port {args.port} is not a TCP port")
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        with serve(args.dir, port=args.port, auth=args.auth, host=args.host, workers=args.workers,
                   allowed=args.allowed_hosts) as handle:
            print(f"tracking URI: {handle.uri}", flush=True)
            print(f"  store postgresql on 127.0.0.1:{handle.pg_port} · artifacts {handle.artifacts} · logs "
                  f"{handle.directory / 'logs'} · started in {handle.start_s:.1f}s", flush=True)
            if handle.auth:
                print(f"  basic auth on: clients set MLFLOW_TRACKING_USERNAME={handle.admin_user} and "
                      f"MLFLOW_TRACKING_PASSWORD (the ${ADMIN_PASSWORD_ENV} value) or a user's own", flush=True)
            print("  Ctrl-C stops it", flush=True)
            try:
                while handle.alive():
                    time.sleep(1.0)
            except KeyboardInterrupt:
                print("stopping MLflow and PostgreSQL", file=sys.stderr, flush=True)
                return 0
            raise SegarenaError(f"mlflow server stopped by itself (log {handle.directory / 'logs' / 'mlflow.log'})")
    finally:
        signal.signal(signal.SIGTERM, previous)
