"""Suite spec validation (errors name file, field, value) and cell expansion."""

from __future__ import annotations

import pytest

from segarena.platform.errors import SpecError
from segarena.platform.plugins.registry import discover
from segarena.platform.records import Budget
from segarena.platform.spec.suite import expand, load_suite

GOOD = """
name: t
methods:
  - name: unet
    profile: tiny
    hparams: {lr: 0.01}
datasets:
  - name: synthetic
    params: {size: 32}
seeds: [0, 1]
epochs: 2
"""


def write(tmp_path, text):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def cells(tmp_path, text):
    spec, path = load_suite(write(tmp_path, text))
    return expand(spec, discover(use_env=False), path)


def test_expands_method_dataset_seed(tmp_path):
    out = cells(tmp_path, GOOD)
    assert [(c.method, c.dataset, c.seed) for c in out] == [("unet", "synthetic", 0), ("unet", "synthetic", 1)]
    assert out[0].hparams["lr"] == 0.01 and out[0].hparams["batch_size"] == 4  # profile + override
    assert out[0].budgets == (Budget(steps=1, ensemble=1, sampler="direct"),)


def test_cell_hash_is_stable_and_sensitive(tmp_path):
    a = cells(tmp_path, GOOD)[0].key
    assert a == cells(tmp_path, GOOD)[0].key
    assert a == cells(tmp_path, GOOD.replace("name: t", "name: other"))[0].key  # suite name is not the result
    assert a != cells(tmp_path, GOOD.replace("lr: 0.01", "lr: 0.02"))[0].key
    assert a != cells(tmp_path, GOOD.replace("epochs: 2", "epochs: 3"))[0].key


def test_shipped_suite_by_name():
    spec, path = load_suite("smoke")
    assert spec.name == "smoke" and path.name == "smoke.yaml"


@pytest.mark.parametrize("text, pattern", [
    ("name: t\nmethods: [\n", r"suite\.yaml: line \d+, column \d+ malformed YAML"),
    ("- just a list", "must be a YAML mapping"),
    (GOOD + "colour: red\n", "unknown field 'colour'"),
    (GOOD.replace("epochs: 2", "epochs: zero"), r"field epochs: .* \(got 'zero'\)"),
    (GOOD.replace("seeds: [0, 1]", "seeds: [1, 1]"), r"field seeds: .*repeat"),
    (GOOD.replace("profile: tiny", "profile: tinyy"), r"methods\[0\]\.profile: unknown profile 'tinyy'"),
    (GOOD.replace("{lr: 0.01}", "{lrr: 0.01}"), r"methods\[0\]\.hparams: unknown hyperparameter 'lrr'"),
    (GOOD.replace("name: unet", "name: unett"), r"methods\[0\]\.name: unknown method 'unett'; did you mean 'unet'"),
    (GOOD.replace("name: synthetic", "name: synthtic"), r"datasets\[0\]\.name: unknown dataset 'synthtic'"),
    (GOOD.replace("    params: {size: 32}", "    parms: {size: 32}"), r"unknown field 'datasets\[0\]\.parms'"),
])
def test_bad_suites_name_file_field_and_value(tmp_path, text, pattern):
    with pytest.raises(SpecError, match=pattern) as err:
        cells(tmp_path, text)
    assert "suite.yaml" in str(err.value)


def test_unknown_suite_name_suggests():
    with pytest.raises(SpecError, match="did you mean 'smoke'"):
        load_suite("smok")


def test_missing_suite_file(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_suite(tmp_path / "none.yaml")


def test_method_epochs_override_and_steps_per_epoch(tmp_path):
    text = GOOD.replace("    hparams: {lr: 0.01}", "    hparams: {lr: 0.01}\n    epochs: 7") + "steps_per_epoch: 5\n"
    out = cells(tmp_path, text)
    assert out[0].epochs == 7 and out[0].steps_per_epoch == 5
    assert out[0].key != cells(tmp_path, GOOD)[0].key
