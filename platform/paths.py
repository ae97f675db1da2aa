"""Every default location segarena uses, in one place (nnU-Net's ``paths`` idea): the runs folder, the
shipped suites and the dataset cache root. The work dir's inner layout belongs to ``store/workdir.py``."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_WORKDIR = "segarena-runs"
"""Runs folder of every command when ``--workdir`` is not given (relative to the current directory)."""

SUITES_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "suites"
"""The shipped suites, found by path beside this package (``segarena/benchmarks/suites`` in a wheel and in
the repository alike): ``platform/`` never imports ``benchmarks/``."""


def shipped_suites() -> dict[str, Path]:
    """Shipped suite name → its YAML file."""
    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.yaml"))}


def cache_root() -> Path:
    """Where datasets cache decoded arrays and splits when no work dir says otherwise: ``$SEGARENA_CACHE``,
    else ``~/.cache/segarena``. Runs of a suite use their work dir's ``cache/`` instead."""
    return Path(os.environ.get("SEGARENA_CACHE", Path.home() / ".cache" / "segarena"))
