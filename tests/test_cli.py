"""The CLI: bad input gives one clear line, a non-zero exit, and nothing written to the store."""

from __future__ import annotations

import pytest

from segarena.platform.cli import main

SUITE = """
name: cli
methods:
  - name: {method}
datasets:
  - name: synthetic
seeds: [0]
"""


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("text, message", [
    ("name: cli\nmethods: [unet\n", "malformed YAML"),
    (SUITE.format(method="unet") + "colour: red\n", "unknown field 'colour'"),
    (SUITE.format(method="unetz"), "unknown method 'unetz'; did you mean 'unet'"),
])
def test_run_with_bad_suite(tmp_path, capsys, text, message):
    suite = tmp_path / "s.yaml"
    suite.write_text(text)
    code, _, err = run_cli(capsys, "run", str(suite), "--workdir", str(tmp_path / "w"))
    assert code == 2
    assert err.count("\n") == 1 and message in err and str(suite) in err
    assert not (tmp_path / "w").exists()


def test_run_with_a_plugin_folder_that_fails_to_import(tmp_path, capsys):
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "bad.py").write_text("raise RuntimeError('lab code broke')\n")
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.format(method="unet"))
    code, _, err = run_cli(capsys, "run", str(suite), "--workdir", str(tmp_path / "w"), "--plugins",
                           str(tmp_path / "plug"))
    assert code == 2 and "bad.py failed to import: RuntimeError: lab code broke" in err
    assert not (tmp_path / "w").exists()


def test_run_with_a_missing_dataset_folder(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.format(method="unet").replace("- name: synthetic",
                                                         f"- name: folder\n    path: {tmp_path / 'nodata'}"))
    code, _, err = run_cli(capsys, "run", str(suite), "--workdir", str(tmp_path / "w"))
    assert code == 2 and "nodata" in err
    assert not (tmp_path / "w" / "mlflow.db").exists()


def test_plugins_list_shows_kind_version_source_paper(capsys, make_plugin_dir):
    folder = make_plugin_dir("lab-net")
    code, out, _ = run_cli(capsys, "plugins", "list", "--plugins", str(folder))
    assert code == 0
    unet = next(ln for ln in out.splitlines() if ln.startswith("unet "))
    assert "method" in unet and "built-in" in unet and "U-Net" in unet
    assert any(ln.startswith("lab-net") and "folder" in ln for ln in out.splitlines())


def test_plugins_check_on_a_folder_plugin(capsys, make_plugin_dir):
    folder = make_plugin_dir("lab-net")
    code, out, _ = run_cli(capsys, "plugins", "check", "lab-net", "--plugins", str(folder))
    assert code == 0, out
    assert "PASS  test_nfe_matches_budget" in out and "0 failed" in out


def test_plugins_check_reports_failures(capsys, make_plugin_dir):
    folder = make_plugin_dir("nan-net", fail="nan")
    code, out, _ = run_cli(capsys, "plugins", "check", "nan-net", "--plugins", str(folder))
    assert code == 1
    assert "FAIL  test_training_steps_change_weights" in out


def test_leaderboard_without_a_store(tmp_path, capsys):
    code, _, err = run_cli(capsys, "leaderboard", "--workdir", str(tmp_path))
    assert code == 2 and "no tracking store" in err
