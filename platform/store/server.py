"""A shared tracking store: an MLflow server on a throw-away PostgreSQL, both under one folder.

``serve(DIR)`` starts (creating on first use, reusing afterwards)::

    DIR/pg/data       PostgreSQL cluster (Debian's /usr/lib/postgresql/<v>/bin initdb + pg_ctl),
                      listening on 127.0.0.1 only, Unix socket in DIR/pg/run, password auth
    DIR/pg/password   the database password (0600); MLflow gets it through DIR/pg/pgpass
    DIR/artifacts     artifacts served by MLflow (``--serve-artifacts``): clients get
                      ``mlflow-artifacts:`` URIs and never need this folder
    DIR/logs          postgres.log, mlflow.log
    DIR/auth          with ``auth=True``: basic_auth.ini and the Flask secret key (0600)

and an ``mlflow server`` on ``postgresql+psycopg://`` bound to 127.0.0.1 unless another host is
given, with ``--allowed-hosts`` set. PostgreSQL refuses to run as root: as root the cluster runs
as the system user ``segarena-pg`` (created with ``useradd --system`` if missing; another user via
``SEGARENA_PG_USER``), which then owns DIR/pg, and DIR gets o+x so that user can reach it.

With ``auth=True`` MLflow's basic-auth app guards every request; its admin password comes from
``SEGARENA_MLFLOW_ADMIN_PASSWORD`` (MLflow ships none, and we never invent a default). Clients
pass ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``.
"""

from __future__ import annotations

import fcntl
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from segarena.platform.errors import SegarenaError

PG_DB, PG_AUTH_DB, PG_ROLE = "mlflow", "mlflow_auth", "segarena"
ADMIN_PASSWORD_ENV, ADMIN_USER = "SEGARENA_MLFLOW_ADMIN_PASSWORD", "admin"
PG_USER_ENV, DEFAULT_PG_USER = "SEGARENA_PG_USER", "segarena-pg"
START_TIMEOUT_S = 300.0  # a fresh store runs all of MLflow's schema migrations first


@dataclass(frozen=True)
class ServerHandle:
    uri: str               # the tracking URI clients use (http://HOST:PORT)
    host: str
    port: int
    pg_port: int
    backend_store_uri: str  # postgresql+psycopg://… (password in DIR/pg/pgpass, not here)
    directory: Path
    artifacts: Path
    auth: bool
    admin_user: str | None
    mlflow_pid: int
    start_s: float
    _proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def pg_bin_dir() -> Path:
    """Where initdb/pg_ctl live: $SEGARENA_PG_BIN, else the newest /usr/lib/postgresql/*/bin, else PATH."""
    candidates = [os.environ["SEGARENA_PG_BIN"]] if os.environ.get("SEGARENA_PG_BIN") else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                         if Path(p).parent.name.isdigit() else 0, reverse=True)
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).parent))
    for c in candidates:
        if (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    raise SegarenaError("PostgreSQL server binaries (initdb, pg_ctl) not found in $SEGARENA_PG_BIN, "
                        "/usr/lib/postgresql/*/bin or PATH: install them (Debian: apt-get install postgresql-15)")


def pg_user() -> pwd.struct_passwd | None:
    """The user PostgreSQL runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get(PG_USER_ENV, DEFAULT_PG_USER)
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    if name != DEFAULT_PG_USER:
        raise SegarenaError(f"{PG_USER_ENV}={name!r}: no such user") from None
    proc = subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
                           "/usr/sbin/nologin", name], capture_output=True, text=True)
    if proc.returncode not in (0, 9):  # 9: created meanwhile by another process
        raise SegarenaError(f"cannot create the system user {name!r} for PostgreSQL (useradd: "
                            f"{proc.stderr.strip() or proc.returncode}); create it or set {PG_USER_ENV}")
    return pwd.getpwnam(name)


def _as_user(user: pwd.struct_passwd | None) -> dict:
    return {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _run(cmd: list[str], user: pwd.struct_passwd | None, what: str, timeout: float = 120) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          cwd="/", **_as_user(user))
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise SegarenaError(f"{what} failed (exit {proc.returncode}): {detail[-1] if detail else 'no output'}")


def _write_private(path: Path, text: str, owner: pwd.struct_passwd | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def _check_reachable(directory: Path, user: pwd.struct_passwd | None) -> None:
    """The PostgreSQL user must be able to walk down to DIR/pg: refuse early, in one line."""
    if user is None:
        return
    directory.chmod(directory.stat().st_mode | 0o001)
    for parent in [directory, *directory.parents]:
        st = parent.stat()
        if not (st.st_mode & 0o001 or (st.st_uid == user.pw_uid and st.st_mode & 0o100)
                or (st.st_gid == user.pw_gid and st.st_mode & 0o010)):
            raise SegarenaError(f"--dir {directory}: the PostgreSQL user {user.pw_name!r} cannot enter {parent} "
                                f"(mode {oct(st.st_mode & 0o777)}); choose a folder outside it or chmod o+x {parent}")


class _Postgres:
    """One throw-away PostgreSQL cluster in DIR/pg."""

    def __init__(self, directory: Path) -> None:
        self.root = directory / "pg"
        self.data, self.run_dir = self.root / "data", self.root / "run"
        self.log = directory / "logs" / "postgres.log"
        self.bin = pg_bin_dir()
        self.user = pg_user()
        self.port = 0
        self.password = ""

    def start(self) -> None:
        _check_reachable(self.root.parent, self.user)
        self.root.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        password_file = self.root / "password"
        if self.user is not None:
            for p in (self.root, self.run_dir):
                os.chown(p, self.user.pw_uid, self.user.pw_gid)
            if not self.log.exists():
                self.log.touch()
            os.chown(self.log, self.user.pw_uid, self.user.pw_gid)
            self.log.parent.chmod(self.log.parent.stat().st_mode | 0o001)
        if (self.data / "postmaster.pid").exists():
            self.stop()  # left running by a `segarena server` that was killed: ours to stop
        if not (self.data / "PG_VERSION").exists():
            self.password = secrets.token_urlsafe(24)
            _write_private(password_file, self.password)
            pwfile = self.root / "initdb.pw"
            _write_private(pwfile, self.password + "\n", self.user)
            try:
                _run([str(self.bin / "initdb"), "-D", str(self.data), "-U", PG_ROLE, f"--pwfile={pwfile}",
                      "--auth=scram-sha-256", "-E", "UTF8", "--no-locale"], self.user, "initdb")
            finally:
                pwfile.unlink(missing_ok=True)
        else:
            self.password = password_file.read_text().strip()
        self.port = free_port()
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.run_dir} "
                "-c max_connections=200")
        _run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60",
              "start"], self.user, f"pg_ctl start (log {self.log})")

    def ensure_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=PG_ROLE, password=self.password,
                             dbname="postgres", autocommit=True, connect_timeout=10) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{name}"')

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://{PG_ROLE}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        try:
            _run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop"],
                 self.user, "pg_ctl stop")
        except (SegarenaError, subprocess.TimeoutExpired):
            _run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"], self.user,
                 "pg_ctl stop -m immediate")


def stop_postgres(directory: str | Path) -> None:
    """Stop the PostgreSQL of ``directory`` if one is still running (after a killed server)."""
    if (Path(directory) / "pg" / "data" / "postmaster.pid").exists():
        _Postgres(Path(directory).resolve()).stop()


def allowed_hosts(host: str, port: int) -> str:
    """Host headers MLflow accepts (DNS-rebinding guard): loopback names, plus this machine's names
    when bound beyond loopback."""
    names = ["127.0.0.1", "localhost"]
    if host not in ("127.0.0.1", "localhost"):
        names += [host, socket.gethostname(), socket.getfqdn()]
    return ",".join(dict.fromkeys(f"{n}:{port}" for n in names if n and n not in ("0.0.0.0", "::")))


def _auth_env(directory: Path, pg: _Postgres) -> dict[str, str]:
    password = os.environ.get(ADMIN_PASSWORD_ENV, "")
    if not password:
        raise SegarenaError(f"--auth needs the MLflow admin password in ${ADMIN_PASSWORD_ENV} (there is no default)")
    auth_dir = directory / "auth"
    key_file = auth_dir / "secret_key"
    if not key_file.exists():
        _write_private(key_file, secrets.token_hex(32))
    pg.ensure_database(PG_AUTH_DB)
    ini = auth_dir / "basic_auth.ini"
    _write_private(ini, "[mlflow]\ndefault_permission = READ\n"
                        f"database_uri = {pg.url(PG_AUTH_DB)}\nadmin_username = {ADMIN_USER}\n"
                        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": key_file.read_text().strip()}


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            lines = log.read_text(errors="replace").splitlines() if log.exists() else []
            tail = [ln for ln in lines if ln.strip()][-1:]
            raise SegarenaError(f"mlflow server exited with code {proc.returncode} ({tail[0][:200] if tail else ''}; "
                                f"log {log})")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SegarenaError(f"mlflow server did not answer {url}/health within {timeout:.0f} s (log {log})")


def _stop_process(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # the uvicorn workers share the group: make sure none outlives its parent
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """One server per folder: a PostgreSQL still running there without the lock was left by a killed server."""
    with (directory / "server.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SegarenaError(f"--dir {directory} is in use by a running `segarena server`; stop it first") from None
        yield


@contextmanager
def serve(directory: str | Path, port: int | None = None, auth: bool = False, host: str = "127.0.0.1",
          workers: int = 2, allowed: str | None = None) -> Iterator[ServerHandle]:
    """Start PostgreSQL and MLflow under ``directory``; stop both on exit, whatever happens."""
    t0 = time.time()
    directory = Path(directory).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host if host not in ("0.0.0.0", "::") else "127.0.0.1")
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise SegarenaError(f"--port {port} on {host} is not free ({exc.strerror})") from None
    if auth and not os.environ.get(ADMIN_PASSWORD_ENV):
        raise SegarenaError(f"--auth needs the MLflow admin password in ${ADMIN_PASSWORD_ENV} (there is no default)")
    artifacts = directory / "artifacts"
    artifacts.mkdir(exist_ok=True)
    log = directory / "logs" / "mlflow.log"
    with ExitStack() as stack:
        stack.enter_context(_dir_lock(directory))
        pg = _Postgres(directory)
        stack.callback(pg.stop)
        pg.start()
        pg.ensure_database(PG_DB)
        pgpass = pg.root / "pgpass"
        _write_private(pgpass, f"127.0.0.1:*:*:{PG_ROLE}:{pg.password}\n")
        env = {**os.environ, "PGPASSFILE": str(pgpass), "MLFLOW_LOGGING_LEVEL": "WARNING"}
        if auth:
            env.update(_auth_env(directory, pg))
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", pg.url(PG_DB), "--serve-artifacts",
               "--artifacts-destination", str(artifacts), "--host", host, "--port", str(port),
               "--allowed-hosts", allowed or allowed_hosts(host, port), "--workers", str(workers)]
        if auth:
            cmd += ["--app-name", "basic-auth"]
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    cwd=str(directory), start_new_session=True)
        stack.callback(_stop_process, proc)
        client_host = "127.0.0.1" if host in ("0.0.0.0", "::", "127.0.0.1") else host
        uri = f"http://{client_host}:{port}"
        _wait_ready(uri, proc, log, START_TIMEOUT_S)
        yield ServerHandle(uri, host, port, pg.port, pg.url(PG_DB), directory, artifacts, auth,
                           ADMIN_USER if auth else None, proc.pid, time.time() - t0, proc)
