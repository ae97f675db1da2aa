"""Taking turns on a store: SQLite allows one writer at a time and one process creating a new store.

``retry`` re-runs a store call that met a locked database (with jitter, so two writers that collided do not
retry in step); ``store_creation_lock`` serialises opening a fresh SQLite store (MLflow's migrations).
"""

from __future__ import annotations

import fcntl
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from segarena.platform.store.preflight import local_store_path, tracking_scheme

T = TypeVar("T")


def is_locked(text: str) -> bool:
    """The default retriable error: the text of a "database is locked" error (lower case)."""
    return "locked" in text


def retry(fn: Callable[[], T], attempts: int = 10, retriable: Callable[[str], bool] = is_locked) -> T:
    """SQLite allows one writer at a time; concurrent trials retry a locked database. MLflow passes some
    of SQLAlchemy's errors through unwrapped, so any error whose type, text or cause says "database is
    locked" is retried (``retriable`` widens that for a known race)."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # MlflowException, sqlalchemy.exc.OperationalError, sqlite3.OperationalError
            if not retriable(f"{type(exc).__name__} {exc} {exc.__cause__ or ''}".lower()) or i == attempts - 1:
                raise
            time.sleep(0.1 * 2**i + random.random() * 0.1)  # jitter: two trials that collided do not retry in step
    raise AssertionError("unreachable")


@contextmanager
def store_creation_lock(uri: str) -> Iterator[None]:
    """Opening a fresh SQLite store runs MLflow's schema migrations; two processes running them at once both
    fail ("table _alembic_tmp_… already exists"), e.g. two drivers started together on a new work dir. They
    take turns on a lock file beside the database (no lock where the store's folder cannot take one)."""
    path = local_store_path(uri) if tracking_scheme(uri) == "sqlite" else None
    try:
        handle = open(path.with_name(path.name + ".lock"), "a") if path is not None and path.parent.is_dir() else None
    except OSError:  # a read-only store folder: no process can create the store there either
        handle = None
    if handle is None:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield
