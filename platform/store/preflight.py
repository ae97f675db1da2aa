"""Environment checks before anything starts: one line naming what is wrong, never a traceback, never a hang.

``segarena run`` calls ``check_run`` first (work dir usable, tracking URI supported and reachable, store
writable); the read-only commands call ``check_tracking_uri``; ``check_output_file`` guards ``--output``.
A tracking server is probed with one short HTTP request, so a server that is down costs seconds, not
MLflow's minutes of retries. Nothing here imports mlflow or torch.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from importlib.metadata import entry_points
from pathlib import Path
from urllib.parse import urlparse

from segarena.platform.errors import SegarenaError
from segarena.platform.store.workdir import WorkDir

PROBE_TIMEOUT_S = 5.0
# the schemes MLflow's tracking-store registry answers (`+driver` suffixes of SQLAlchemy URIs aside)
MLFLOW_SCHEMES = ("", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks",
                  "databricks-uc", "uc")
TRACKING_PLUGIN_GROUP = "mlflow.tracking_store"  # MLflow plugins add schemes through this entry-point group


class EnvironmentFault(SegarenaError):
    """The machine, not the suite, is at fault (work dir, store, tracking server, output folder)."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return _reason(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _dir_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot take new files (a real write probe: permissions, read-only mounts, immutable)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".segarena-probe-", dir=folder)
    except OSError as exc:
        return _reason(exc)
    os.close(fd)
    os.unlink(name)
    return None


def _file_problem(file: Path) -> str | None:
    """Why ``file`` cannot be written (opened for appending, nothing changed)."""
    try:
        fd = os.open(file, os.O_WRONLY | os.O_APPEND)
    except OSError as exc:
        return _reason(exc)
    os.close(fd)
    return None


def check_workdir(root: Path) -> None:
    """The work dir is a writable folder, or can be created as one."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise EnvironmentFault(f"work dir {root} is not a directory: give --workdir a folder (it is created if "
                               "missing)")
    existing = root
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise EnvironmentFault(f"work dir {root}: {existing} is a file, so the folder cannot be created")
    problem = _dir_problem(existing)
    if problem:
        what = "work dir" if existing == root else f"work dir {root} cannot be created: its parent"
        raise EnvironmentFault(f"{what} {existing} is not writable ({problem}): give --workdir a folder you can "
                               "write to")


def tracking_scheme(uri: str) -> str:
    return urlparse(uri).scheme.lower().split("+")[0]


def _known_schemes() -> set[str]:
    return set(MLFLOW_SCHEMES) | {ep.name for ep in entry_points(group=TRACKING_PLUGIN_GROUP)}


def probe_http(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """One GET of the server's ``/health``; any HTTP answer means it is up (auth is MLflow's business)."""
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise EnvironmentFault(f"tracking server {uri} is unreachable: tried GET {url} with a {timeout:g} s "
                               f"timeout: {_reason(exc)}; start it (`segarena server`) or fix --tracking-uri") \
            from None


def check_tracking_uri(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """A scheme MLflow can open, and for ``http(s)://`` a server that answers within ``timeout``."""
    scheme = tracking_scheme(uri)
    if scheme not in _known_schemes():
        raise EnvironmentFault(f"tracking URI {uri!r}: unsupported scheme {scheme!r} (use sqlite:///FILE, a "
                               "folder path or file:///DIR, http(s)://HOST:PORT, postgresql://, mysql://, "
                               "mssql:// or databricks)")
    if scheme == "sqlite":
        check_sqlite_file(local_store_path(uri))
    if scheme in ("http", "https"):
        if not urlparse(uri).hostname:
            raise EnvironmentFault(f"tracking URI {uri!r} names no host")
        probe_http(uri, timeout)


def local_store_path(uri: str) -> Path | None:
    """The file (sqlite) or folder (file:, plain path) a local tracking URI writes to, else None."""
    scheme = tracking_scheme(uri)
    if scheme == "sqlite":
        rest = uri.split(":///", 1)[1] if ":///" in uri else ""
        return Path(rest) if rest and rest != ":memory:" else None
    if scheme == "file":
        return Path(urlparse(uri).path)
    if scheme == "":
        return Path(uri)
    return None


SQLITE_HEADER = b"SQLite format 3\x00"


def check_sqlite_file(path: Path | None) -> None:
    """An existing, non-empty store file is an SQLite database (not some other file under that name)."""
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise EnvironmentFault(f"tracking store {path} cannot be read ({_reason(exc)})") from None
    if header != SQLITE_HEADER:
        raise EnvironmentFault(f"tracking store {path} is not an SQLite database: move it away or give another "
                               "--workdir / --tracking-uri")


def check_store_writable(uri: str, workdir: WorkDir | None = None) -> None:
    """A local store can be written: its database file (if any) and the folder that holds it (SQLite writes
    journal files beside the database). The work dir's own store folder is checked by ``check_workdir``."""
    path = local_store_path(uri)
    if path is None:
        return
    is_db = tracking_scheme(uri) == "sqlite"
    folder = path.parent if is_db else path
    if is_db and path.exists():
        if not path.is_file():
            raise EnvironmentFault(f"tracking store {path} is not a file")
        problem = _file_problem(path)
        if problem:
            raise EnvironmentFault(f"tracking store {path} is read-only ({problem}): runs cannot be recorded; "
                                   "make it writable or give another --workdir / --tracking-uri")
    if not is_db:  # MLflow creates a file store's folders: the nearest existing one must take files
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
    if folder.is_dir():
        problem = _dir_problem(folder)
        if problem:
            raise EnvironmentFault(f"tracking store folder {folder} is not writable ({problem})")
    elif folder.exists():
        raise EnvironmentFault(f"tracking store folder {folder} is not a directory")
    elif workdir is None or folder.resolve() != workdir.root:  # SQLite never creates its folder
        raise EnvironmentFault(f"tracking store folder {folder} does not exist")


def check_run(workdir: WorkDir, tracking_uri: str | None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Everything ``segarena run`` needs from the machine, checked before the suite is even read."""
    check_workdir(workdir.root)
    uri = tracking_uri or workdir.tracking_uri
    check_tracking_uri(uri, timeout)
    check_store_writable(uri, workdir)


def check_output_file(output: str | os.PathLike | None) -> None:
    """``--output FILE`` can be written: its folder exists and the file is not a folder."""
    if output is None:
        return
    path = Path(output)
    if path.is_dir():
        raise EnvironmentFault(f"--output {path} is a directory: give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise EnvironmentFault(f"--output {path}: folder {folder} does not exist (create it first)")
    problem = _dir_problem(folder)
    if problem:
        raise EnvironmentFault(f"--output {path}: folder {folder} is not writable ({problem})")
