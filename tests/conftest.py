"""Shared fixtures: one Ray instance per test run (session), the probe test method as a folder plugin."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

if "segarena_test_fakes" not in sys.modules:  # tests/fakes.py, importable as segarena_test_fakes
    _spec = importlib.util.spec_from_file_location("segarena_test_fakes", Path(__file__).with_name("fakes.py"))
    sys.modules["segarena_test_fakes"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["segarena_test_fakes"])


@pytest.fixture
def make_plugin_dir(tmp_path: Path):
    """Write the probe (tests/plugins/probe.py) as a folder plugin: ``make_plugin_dir(name, fail="")`` → the
    folder; ``fail`` as the probe's switch (nan | raise | lie | logits)."""
    from segarena_test_fakes import write_probe

    def make(name: str, fail: str = "", folder: str = "plugins", filename: str | None = None) -> Path:
        return write_probe(tmp_path / folder, name, filename=filename, fail=fail)

    return make


@pytest.fixture(scope="session")
def ray_session():
    """The one Ray instance of this test run (2 CPUs, as on CI)."""
    import ray

    ray.init(num_cpus=2, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()
