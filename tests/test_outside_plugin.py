"""Outside plugins keep working: a lab's plugin package written against the README before the platform was
split into stage folders (tests/plugins/outside/, the README's own examples, verbatim) runs unchanged —
a method from a ``--plugins`` folder and installed under the ``segarena.methods`` entry point, a dataset from
a ``--plugins`` folder. Each passes ``segarena plugins check`` and the conformance classes a lab's own tests
subclass. The plugins import only the public paths: ``segarena.platform.plugin``, ``.dataset``,
``.search_space``, ``.errors``; their tests ``segarena.platform.conformance``."""

from __future__ import annotations

import ast
import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from segarena.platform.cli import main
from segarena.platform.conformance import DatasetConformance, MethodConformance

OUTSIDE = Path(__file__).with_name("plugins") / "outside"
PUBLIC = {"segarena.platform.plugin", "segarena.platform.dataset", "segarena.platform.search_space",
          "segarena.platform.errors", "segarena.platform.conformance"}


def _load(path: Path) -> ModuleType:
    """A plugin module as the lab's own tests import it (by path here: the folder is not a package)."""
    name = f"segarena_outside_{path.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def write_scans(root: Path, patients: int = 8, slices: int = 2) -> Path:
    """LabScans' documented layout: ``<patient>_<slice>/image.npy`` and ``mask.npy``, a bright disc each."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :40]
    for p in range(patients):
        for s in range(slices):
            folder = root / f"p{p:02d}_{s}"
            folder.mkdir(parents=True)
            cy, cx, r = rng.integers(12, 28), rng.integers(12, 28), rng.integers(5, 10)
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8)
            np.save(folder / "image.npy", (mask + 0.3 * rng.standard_normal((40, 40))).astype(np.float32))
            np.save(folder / "mask.npy", mask)
    return root


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


@pytest.fixture(autouse=True)
def _no_plugin_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGARENA_PLUGIN_PATH", raising=False)


def test_the_outside_plugins_import_only_the_public_paths():
    for path in OUTSIDE.glob("*.py"):
        imported = {n.module for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Import)
                     for a in n.names}
        ours = {m for m in imported if m and m.startswith("segarena")}
        assert ours and ours <= PUBLIC, (path.name, ours - PUBLIC)


def test_a_method_from_a_plugins_folder_passes_plugins_check(capsys, tmp_path):
    folder = tmp_path / "lab"
    folder.mkdir()
    shutil.copy(OUTSIDE / "my_net.py", folder)
    code, out = run_cli(capsys, "plugins", "list", "--plugins", str(folder))
    assert code == 0 and any(ln.startswith("my-net") and "folder" in ln for ln in out.splitlines()), out
    code, out = run_cli(capsys, "plugins", "check", "my-net", "--plugins", str(folder))
    assert code == 0, out
    assert "checking method plugin 'my-net' (folder" in out and "PASS  test_nfe_matches_budget" in out
    assert " 0 failed" in out


def test_a_method_installed_under_the_entry_point_passes_plugins_check(capsys, tmp_path, monkeypatch):
    """``pip install`` of a lab package, simulated: the package and its dist-info (entry_points.txt naming
    ``segarena.methods``) in a folder on ``sys.path``."""
    site = tmp_path / "site"
    (site / "lab_plugins").mkdir(parents=True)
    (site / "lab_plugins" / "__init__.py").write_text("")
    shutil.copy(OUTSIDE / "my_net.py", site / "lab_plugins" / "mynet.py")
    info = site / "lab_plugins-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-plugins\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[segarena.methods]\nmy-net = lab_plugins.mynet:MyNet\n")
    monkeypatch.syspath_prepend(str(site))
    try:
        code, out = run_cli(capsys, "plugins", "list")
        assert code == 0 and any(ln.startswith("my-net") and "entry point" in ln for ln in out.splitlines()), out
        code, out = run_cli(capsys, "plugins", "check", "my-net")
        assert code == 0, out
        assert "checking method plugin 'my-net' (entry point lab-plugins)" in out
        assert "PASS  test_checkpoint_round_trip" in out and " 0 failed" in out
    finally:
        for name in [m for m in sys.modules if m == "lab_plugins" or m.startswith("lab_plugins.")]:
            del sys.modules[name]


def test_a_dataset_from_a_plugins_folder_passes_plugins_check(capsys, tmp_path, monkeypatch):
    folder = tmp_path / "lab"
    folder.mkdir()
    shutil.copy(OUTSIDE / "lab_scans.py", folder)
    monkeypatch.setenv("LAB_SCANS_ROOT", str(write_scans(tmp_path / "scans")))  # its documented root_env
    code, out = run_cli(capsys, "plugins", "check", "lab-scans", "--plugins", str(folder))
    assert code == 0, out
    assert "checking dataset plugin 'lab-scans' (folder" in out and " 0 failed" in out


def test_a_suite_names_the_folder_method_and_dataset(tmp_path, monkeypatch):
    """Both plugins in one lab folder: the driver's validation accepts a suite of them (no training)."""
    from segarena.platform.plugins.registry import discover
    from segarena.platform.spec.suite import expand, load_suite

    folder = tmp_path / "lab"
    folder.mkdir()
    for name in ("my_net.py", "lab_scans.py"):
        shutil.copy(OUTSIDE / name, folder)
    write_scans(tmp_path / "data" / "scans")
    suite = tmp_path / "lab.yaml"
    suite.write_text("name: lab\nmethods:\n  - name: my-net\ndatasets:\n  - name: lab-scans\n    path: data/scans\n"
                     "    params: {size: 32}\nseeds: [0]\nepochs: 1\n")
    spec, path = load_suite(suite)
    (cell,) = expand(spec, discover([folder], use_env=False), path)
    assert (cell.method, cell.dataset, cell.dataset_path) == ("my-net", "lab-scans", str(tmp_path / "data" / "scans"))
    assert cell.plugin_version == "0.1.0" and cell.plugin_source_hash


# what a lab's own test module holds: the shared conformance classes, subclassed ----------------------------

class TestMyNet(MethodConformance):
    method_cls = _load(OUTSIDE / "my_net.py").MyNet


class TestLabScans(DatasetConformance):
    dataset_cls = _load(OUTSIDE / "lab_scans.py").LabScans

    @pytest.fixture(autouse=True, scope="class")
    def _scans(self, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
        request.cls.params = {"root": write_scans(tmp_path_factory.mktemp("scans")), "size": 32}
