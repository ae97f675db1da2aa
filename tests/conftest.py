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

# Test helpers importable by name from every test (tests/ is not a package: --import-mode=importlib).
for _name, _file in (("segarena_test_fakes", "fakes.py"), ("segarena_test_report_fixtures", "report_fixtures.py")):
    if _name not in sys.modules:
        _spec = importlib.util.spec_from_file_location(_name, Path(__file__).with_name(_file))
        sys.modules[_name] = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(sys.modules[_name])


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
