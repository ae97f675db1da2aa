"""Plugin discovery: entry points, folders, env var, duplicates, suggestions, import failures."""

from __future__ import annotations

import pytest

from segarena.platform.errors import PluginError
from segarena.platform.plugins.registry import discover


def test_builtins_come_from_entry_points():
    reg = discover(use_env=False)
    unet = reg.get("method", "unet")
    assert unet.source == "built-in" and unet.cls.__name__ == "UNetMethod"
    assert reg.get("dataset", "synthetic").kind == "dataset"


def test_folder_plugin_is_found_with_its_source(make_plugin_dir):
    folder = make_plugin_dir("lab-net")
    reg = discover([folder], use_env=False)
    info = reg.get("method", "lab-net")
    assert info.source.startswith("folder ") and str(folder) in info.source
    assert info.version == "0.0.1"


def test_plugin_path_env_var(make_plugin_dir, monkeypatch):
    folder = make_plugin_dir("env-net")
    monkeypatch.setenv("SEGARENA_PLUGIN_PATH", str(folder))
    assert discover().get("method", "env-net").name == "env-net"


def test_folder_plugins_are_imported_in_isolation(make_plugin_dir):
    """What isolation promises: the folder never joins sys.path, two folders may hold files of the same
    name without one replacing the other, and a plugin file named like a real module shadows nothing."""
    import json
    import sys

    a = make_plugin_dir("iso-a", folder="a", filename="plugin.py")
    b = make_plugin_dir("iso-b", folder="b", filename="plugin.py")
    c = make_plugin_dir("iso-c", folder="c", filename="json.py")
    reg = discover([a, b, c], use_env=False)
    assert {reg.method("iso-a").name, reg.method("iso-b").name, reg.method("iso-c").name} == {"iso-a", "iso-b", "iso-c"}
    assert reg.method("iso-a").__module__ != reg.method("iso-b").__module__
    assert not {str(a), str(b), str(c)} & set(sys.path)
    assert sys.modules["json"] is json and hasattr(json, "dumps")  # the standard library's, untouched
    assert "plugin" not in sys.modules


@pytest.mark.parametrize("bad", ["../../../../x", "Upper", "a b", "-lead", ""])
def test_plugin_names_must_be_safe(make_plugin_dir, bad):
    """Names become folder and file names (splits, caches, artifacts): only [a-z0-9][a-z0-9_.-]*."""
    folder = make_plugin_dir("safe-name", filename="bad.py")
    text = (folder / "bad.py").read_text().replace('name = "safe-name"', f"name = {bad!r}")
    (folder / "bad.py").write_text(text)
    with pytest.raises(PluginError, match="name"):
        discover([folder], use_env=False)


def test_duplicate_name_names_both_sources(make_plugin_dir):
    a = make_plugin_dir("twin", folder="a")
    b = make_plugin_dir("twin", folder="b")
    with pytest.raises(PluginError) as err:
        discover([a, b], use_env=False)
    assert str(a) in str(err.value) and str(b) in str(err.value)


def test_folder_plugin_clashing_with_builtin(make_plugin_dir):
    folder = make_plugin_dir("unet")
    with pytest.raises(PluginError, match="built-in"):
        discover([folder], use_env=False)


def test_unknown_name_suggests_closest():
    with pytest.raises(PluginError, match="did you mean 'unet'"):
        discover(use_env=False).method("unte")


def test_broken_folder_plugin_is_a_clear_error(tmp_path):
    (tmp_path / "broken.py").write_text("import not_a_module_anywhere\n")
    with pytest.raises(PluginError, match=r"broken\.py failed to import: ModuleNotFoundError"):
        discover([tmp_path], use_env=False)


def test_missing_folder(tmp_path):
    with pytest.raises(PluginError, match="does not exist"):
        discover([tmp_path / "nope"], use_env=False)


def test_wrong_api_version_is_rejected(make_plugin_dir):
    folder = make_plugin_dir("old-net")
    path = folder / "old_net.py"
    path.write_text(path.read_text().replace('paper = "test plugin"', 'paper = "x"\n    api_version = 0'))
    with pytest.raises(PluginError, match="api_version"):
        discover([folder], use_env=False)
