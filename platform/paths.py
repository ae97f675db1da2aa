"""Every default location segarena uses, in one place (nnU-Net's ``paths`` idea): the runs folder, the
shipped suites and the dataset cache root. The work dir's inner layout belongs to ``store/workdir.py``."""

from __future__ import annotations

import os
from pathlib import Path

from segarena.platform.errors import SegarenaError

DEFAULT_WORKDIR = "segarena-runs"
"""Runs folder of every command when ``--workdir`` is not given (relative to the current directory)."""

SUITES_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "suites"
"""The shipped suites, found by path beside this package (``segarena/benchmarks/suites`` in a wheel and in
the repository alike): ``platform/`` never imports ``benchmarks/``."""


def shipped_suites() -> dict[str, Path]:
    """Shipped suite name → its YAML file."""
    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.yaml"))}


def cache_root() -> Path:
    """Where a dataset built without a ``cache_dir`` caches decoded arrays and splits: ``$SEGARENA_CACHE``,
    else the default work dir's ``cache/``, the folder ``segarena run`` and ``segarena datasets show`` use
    without ``--workdir`` (one cache root: everything segarena writes stays under one work dir)."""
    return Path(os.environ.get("SEGARENA_CACHE") or Path(DEFAULT_WORKDIR) / "cache")


def inside(base: Path, *parts: str) -> Path:
    """``base/parts`` after checking it stays inside ``base`` (names come from plugins and suites)."""
    path = Path(base).joinpath(*parts).resolve()
    if path != Path(base).resolve() and Path(base).resolve() not in path.parents:
        raise SegarenaError(f"path {'/'.join(parts)!r} would leave {base}")
    return path
