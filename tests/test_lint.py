"""The tree stays ruff-clean (pyproject.toml [tool.ruff])."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_namespace_folders_have_no_init():
    """A regular `platform` package at the root would shadow the standard library (DESIGN.md)."""
    for folder in ("platform", "methods", "datasets", "benchmarks", "dashboards"):
        assert not (ROOT / folder / "__init__.py").exists(), folder
