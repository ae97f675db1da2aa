"""Validation before the first cell starts (issue 18, item 2), the plugin source hash in the training key
(item 4), plugin names that cannot climb out of the work dir (item 5) and the README's worked dataset plugin
(item 6). Every bad suite goes through the CLI: exit 2, one line naming file, field and value, store untouched.
No Ray: validation happens before Ray starts."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segarena.platform.cli import main
from segarena.platform.plugins.registry import discover
from segarena.platform.spec.suite import expand, load_suite

REPO = Path(__file__).resolve().parents[1]

SUITE = """
name: val
methods:
  - name: {method}
{method_extra}
datasets:
  - name: synthetic
    params: {params}
seeds: [0]
"""


def suite_text(method: str = "unet", method_extra: str = "", params: str = "{size: 32}") -> str:
    return SUITE.format(method=method, method_extra=textwrap.indent(method_extra, "    "), params=params)


def run_cli(capsys, tmp_path: Path, text: str, *extra: str) -> tuple[int, str]:
    suite = tmp_path / "s.yaml"
    suite.write_text(text)
    code = main(["run", str(suite), "--workdir", str(tmp_path / "w"), *extra])
    return code, capsys.readouterr().err


BAD = [
    # hparams against the profiles' value types and signs
    ("unet", "hparams: {lr: fast}", "{size: 32}", r"methods\[0\]\.hparams\.lr: expected a number .* got 'fast'"),
    ("unet", "hparams: {lr: 1e-4}", "{size: 32}", r"hparams\.lr: .*got '1e-4' \(YAML reads 1e-4 as text"),
    ("unet", "hparams: {lr: -0.1}", "{size: 32}", r"hparams\.lr: -0\.1 is negative"),
    ("unet", "hparams: {batch_size: 0}", "{size: 32}", r"hparams\.batch_size: expected an integer >= 1, got 0"),
    ("unet", "hparams: {batch_size: 2.5}", "{size: 32}", r"hparams\.batch_size: .* got 2\.5"),
    ("unet", "hparams: {features: [8, x, 32, 64, 128, 8]}", "{size: 32}",
     r"hparams\.features: element \[1\]: expected an integer .* got 'x'"),
    ("medsegdiff", "hparams: {mask_scale: signed}", "{size: 32}", r"hparams\.mask_scale: 'signed' not in"),
    ("medsegdiff", "hparams: {cal_head: 1}", "{size: 32}", r"hparams\.cal_head: expected a boolean"),
    # budgets against the samplers and limits the plugin declares
    ("medsegdiff", "budgets: [{sampler: euler, steps: 5}]", "{size: 32}",
     r"methods\[0\]\.budgets\[0\]: budget euler5-e1 .*sampler 'euler' is not one medsegdiff declares"),
    ("medsegdiff", "budgets: [{sampler: ddpm, steps: 5}]", "{size: 32}", r"budgets\[0\]: .*DDPM samples all T"),
    ("unet", "budgets: [{sampler: ddim, steps: 5}]", "{size: 32}", r"sampler 'ddim' is not one unet declares"),
    ("unet", "budgets: [{ensemble: 3}]", "{size: 32}", r"unet is deterministic: ensemble must be 1, not 3"),
    ("unet", "budgets: {sampler: ddim, steps: [1, 5], ensemble: [1]}", "{size: 32}",
     r"methods\[0\]\.budgets: budget ddim1-e1 .*not one unet declares"),
    ("cdal", "budgets: [{sampler: posterior, steps: 3}]", "{size: 32}", r"cDAL samples with the T=2 steps"),
    ("sdseg", "budgets: [{sampler: direct, steps: 3}]", "{size: 32}", r"direct sampler is one forward pass"),
    ("sdseg", "budgets: [{sampler: ddim, steps: 2000}]", "{size: 32}", r"2000 steps exceed the 1000"),
    # dataset params against the dataset's declared ones, and their values through its task
    ("unet", "", "{sise: 32}", r"datasets\[0\]\.params: unknown parameter 'sise' for dataset 'synthetic'; "
                               r"did you mean 'size'"),
    ("unet", "", "{size: -8}", r"datasets\[0\]\.params: .*invalid task: image_size \(-8, -8\)"),
    ("unet", "", "{size: big}", r"datasets\[0\]\.params: dataset 'synthetic' rejects \{'size': 'big'\}"),
    ("unet", "", "{path: data}", r"datasets\[0\]\.params\.path: give the dataset root as the entry's `path:`"),
]


@pytest.mark.parametrize("method, extra, params, pattern", BAD, ids=[f"{m}:{e or p}" for m, e, p, _ in BAD])
def test_each_bad_value_exits_2_naming_file_field_value_with_the_store_unchanged(tmp_path, capsys, method, extra,
                                                                                 params, pattern):
    code, err = run_cli(capsys, tmp_path, suite_text(method, extra, params))
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("segarena: error: ") and str(tmp_path / "s.yaml") in err
    assert re.search(pattern, err), err
    assert not (tmp_path / "w").exists()  # nothing written: no store, no cache, no lock


def test_the_default_budgets_and_hparams_of_every_built_in_profile_validate():
    """The declarations agree with the plugins' own defaults: no shipped profile is refused."""
    from segarena.platform.spec.validate import validate_method

    registry = discover(use_env=False)
    for info in registry.infos("method"):
        cls = info.cls
        assert cls.declared_samplers(), info.name
        for profile, hparams in cls.profiles().items():
            validate_method(cls, 0, profile, hparams, cls.budgets(profile), None, "<test>")


@pytest.mark.parametrize("name", ["default", "smoke", "real"])
def test_shipped_suites_pass_validation(name):
    spec, path = load_suite(name)
    assert expand(spec, discover(use_env=False), path)


def test_samplers_declared_by_the_diffusion_methods_are_the_ones_their_samplers_accept():
    from segarena.methods.medsegdiff.diffusion import SAMPLERS as MSD
    from segarena.methods.sdseg.latent import SAMPLERS as SDSEG

    registry = discover(use_env=False)
    assert registry.method("medsegdiff").declared_samplers() == MSD
    assert registry.method("sdseg").declared_samplers() == SDSEG
    assert registry.method("cdal").declared_samplers() == ("posterior",)
    assert registry.method("unet").declared_samplers() == registry.method("transunet").declared_samplers() == \
        ("direct",)


def test_samplers_default_to_those_of_the_plugins_own_budgets(make_plugin_dir):
    cls = discover([make_plugin_dir("lab-net")], use_env=False).method("lab-net")
    assert cls.samplers is None and cls.declared_samplers() == ("direct",)


def test_hparams_checks_are_loose_where_the_profiles_are():
    from segarena.platform.plugins.hparams import check_like_profiles

    profiles = {"tiny": {"lr": 1e-3, "path": None, "mult": [1, 2], "heads": 4, "opts": {"a": 1.0}},
                "paper": {"lr": 1e-4, "path": "/x", "mult": [1, 2, 4], "heads": [4, 8], "opts": {"a": 2.0}}}
    ok = [{"lr": 1}, {"path": None}, {"path": "/y"}, {"mult": [1, 2, 4, 8]}, {"heads": 2}, {"heads": [2, 2]},
          {"opts": {"a": 3, "b": "new"}}, {"lr": 0.0}]
    for hp in ok:
        check_like_profiles(hp, profiles)
    for hp, message in [({"lr": True}, "lr: expected a number"), ({"path": 3}, "path: expected a string"),
                        ({"mult": [1, "2"]}, r"mult: element \[1\]"), ({"heads": 2.5}, "heads: expected"),
                        ({"opts": {"a": "x"}}, "opts: key 'a'"), ({"mult": [-1]}, "negative")]:
        with pytest.raises(ValueError, match=message):
            check_like_profiles(hp, profiles)


def test_a_plugins_own_validate_hparams_hook_is_used(tmp_path, capsys, make_plugin_dir):
    folder = make_plugin_dir("lab-net")
    source = folder / "lab_net.py"
    source.write_text(source.read_text() + textwrap.dedent('''
        def _validate(cls, hparams):
            super(LabNetMethod, cls).validate_hparams(hparams)
            if hparams["lr"] > 1:
                raise ValueError(f"lr: {hparams['lr']} > 1 diverges")
        LabNetMethod.validate_hparams = classmethod(_validate)
    '''))
    code, err = run_cli(capsys, tmp_path, suite_text("lab-net", "hparams: {lr: 5.0}"), "--plugins", str(folder))
    assert code == 2 and "methods[0].hparams.lr: 5.0 > 1 diverges" in err
    assert not (tmp_path / "w").exists()


def test_dataset_params_come_from_the_constructor_signature():
    registry = discover(use_env=False)
    assert set(registry.dataset("synthetic").params_spec()) == {"path", "size", "n_cases", "seed", "noise"}
    folder = registry.dataset("folder").params_spec()
    assert {"size", "fit", "norm", "channels", "tile"} <= set(folder)  # Preprocess fields + tiling
    assert {"plane", "min_brain", "gm_threshold"} <= set(registry.dataset("mni152-gm").params_spec())


def test_relative_dataset_paths_are_resolved_once_against_the_suite_folder(tmp_path, monkeypatch):
    (tmp_path / "suites").mkdir()
    suite = tmp_path / "suites" / "s.yaml"
    suite.write_text(suite_text().replace("  - name: synthetic\n    params: {size: 32}",
                                          "  - name: folder\n    path: ../data/scans"))
    monkeypatch.chdir(tmp_path / "suites")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spec, path = load_suite(suite)
    monkeypatch.chdir(elsewhere)  # the driver's (or a worker's) cwd plays no part
    cells = expand(spec, discover(use_env=False), path)
    assert cells[0].dataset_path == str((tmp_path / "data" / "scans").resolve())


def _finish(tracker, exp: str, cell, dices: list[float]) -> None:
    from segarena.platform.records import Budget, BudgetResult, CellResult, Task, Timings
    from segarena.platform.store.tracking import cell_tags

    per_case = pd.DataFrame({"budget": "direct-e1", "case_id": [f"c{i}" for i in range(len(dices))], "class": "1",
                             "dice": dices, "iou": dices, "hd95": 1.0, "hd95_unit": "px", "gt_empty": False,
                             "pred_empty": False, "gt_voxels": 10, "pred_voxels": 10})
    result = CellResult(budgets=[BudgetResult(Budget(), {"dice": float(np.mean(dices)), "hd95": 1.0,
                                                         "latency_ms": 1.0, "nfe": 1.0})],
                        per_case=per_case, history=[], timings=Timings(), fingerprint={},
                        split={"train": [], "val": [], "test": []}, task=Task(1, 1, (8, 8)), parameters=1,
                        dataset_hash="h")
    tags = cell_tags(cell, "0", "sha")
    run_id = tracker.start_training(exp, cell, tags)
    tracker.finish_training(exp, run_id, cell, tags, result, {"config.json": {"cell": cell.as_dict()}}, {})


def test_two_entries_of_one_dataset_plugin_are_two_leaderboard_sections(tmp_path):
    """Two `folder` roots are two datasets: labelled apart by default, named by `label:` when given."""
    from segarena.platform.board.leaderboard import leaderboard
    from segarena.platform.store.tracking import Tracker
    from segarena.platform.store.workdir import WorkDir

    text = suite_text().replace("  - name: synthetic\n    params: {size: 32}",
                                "  - name: folder\n    path: /data/a\n  - name: folder\n    path: /data/b\n"
                                "    label: site-b")
    spec, path = load_suite(_write(tmp_path, text))
    cells = expand(spec, discover(use_env=False), path)
    assert [c.dataset_label for c in cells] == ["folder[path=/data/a]", "site-b"]
    assert cells[0].key != cells[1].key
    wd = WorkDir.at(tmp_path / "store")
    tracker = Tracker(wd.tracking_uri, wd)
    exp = tracker.experiment("val")
    _finish(tracker, exp, cells[0], [0.9, 0.8])
    _finish(tracker, exp, cells[1], [0.2, 0.3])
    board, _ = leaderboard(tracker, "val")
    assert sorted(board["dataset"]) == ["folder[path=/data/a]", "site-b"]
    assert set(board.groupby("dataset")["rank"].min()) == {1}  # each ranked in its own section


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


# item 4: stale results cannot hide behind an unchanged version -----------------------------------------------

def test_editing_a_plugins_code_without_bumping_its_version_changes_the_training_key(tmp_path, make_plugin_dir):
    folder = make_plugin_dir("lab-net")
    spec, path = load_suite(_write(tmp_path, suite_text("lab-net")))
    before = expand(spec, discover([folder], use_env=False), path)[0]
    source = folder / "lab_net.py"
    source.write_text(source.read_text().replace("binary_cross_entropy_with_logits", "mse_loss"))
    after = expand(spec, discover([folder], use_env=False), path)[0]
    assert before.plugin_version == after.plugin_version == "0.0.1"
    assert before.plugin_source_hash and before.plugin_source_hash != after.plugin_source_hash
    assert before.key != after.key and "plugin_source_hash" in before.training_fields()


def test_a_built_in_methods_source_hash_covers_its_package_and_the_shared_code_it_imports():
    from segarena.platform.plugins.source import plugin_source_files

    files = plugin_source_files(discover(use_env=False).method("medsegdiff"))
    assert {"medsegdiff/method.py", "medsegdiff/diffusion.py", "medsegdiff/__init__.py"} <= set(files)
    assert "common/ode_samplers.py" in files  # shared sampler code changes the result too
    assert not any(k.startswith(("platform/", "sdseg/", "cdal/")) for k in files)  # not the harness, not others
    assert all(p.is_file() for p in files.values())


# item 5: a plugin's name cannot make segarena write outside the work dir -------------------------------------

EVIL_DATASET = '''
import torch
from segarena.platform.dataset import Case, DatasetPlugin
from segarena.platform.plugin import Task


class Evil(DatasetPlugin):
    name = "../../../../x"
    modality = licence = citation = description = "test"

    def task(self):
        return Task(1, 1, (8, 8))

    def load(self):
        return [Case(f"c{i}", torch.zeros(1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.bool)) for i in range(10)]
'''


def test_a_dataset_plugin_named_to_climb_out_of_the_work_dir_writes_nothing_outside(tmp_path, capsys):
    plugins = tmp_path / "deep" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "evil.py").write_text(EVIL_DATASET)
    text = suite_text().replace("name: synthetic\n    params: {size: 32}", "name: ../../../../x")
    workdir = tmp_path / "deep" / "er" / "w"
    suite = _write(tmp_path, text)
    before = set(tmp_path.rglob("*"))
    code = main(["run", str(suite), "--workdir", str(workdir), "--plugins", str(plugins)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "name '../../../../x' must match" in err and str(plugins / "evil.py") in err  # names the source
    assert set(tmp_path.rglob("*")) == before  # nothing written anywhere
    # and past the registry (a class used directly): the split path is checked before anything is written
    from segarena.platform.errors import SegarenaError
    from segarena.platform.plugins.registry import _import_isolated

    evil = _import_isolated(plugins / "evil.py").Evil(cache_dir=workdir / "cache")
    with pytest.raises(SegarenaError, match="would leave"):
        evil.split(0)
    assert not list(tmp_path.rglob("x-*")) and not (tmp_path / "x").exists()


# item 6: the README's worked dataset plugin runs as written -------------------------------------------------

def readme_dataset_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Writing a dataset plugin"):]
    return section[section.index("```python\n") + len("```python\n"):section.index("\n```", section.index("```python"))]


def write_scans(root: Path, patients: int = 5, per_patient: int = 2) -> None:
    rng = np.random.default_rng(0)
    for p in range(patients):
        for s in range(per_patient):
            folder = root / f"p{p}_{s}"
            folder.mkdir(parents=True)
            mask = np.zeros((40, 48), np.uint8)
            y, x = rng.integers(5, 25, size=2)
            mask[y:y + 12, x:x + 15] = 1
            np.save(folder / "image.npy", (mask + 0.3 * rng.standard_normal(mask.shape)).astype(np.float32))
            np.save(folder / "mask.npy", mask)


def test_the_readme_dataset_plugin_passes_conformance_and_validation(tmp_path, capsys):
    from segarena.platform.conformance import run_dataset_checks

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "lab_scans.py").write_text(readme_dataset_example())
    write_scans(tmp_path / "data" / "scans")
    registry = discover([plugins], use_env=False)
    cls = registry.dataset("lab-scans")
    results = run_dataset_checks(cls, params={"root": tmp_path / "data" / "scans", "size": 32})
    failed = [f"{r.name}: {r.detail}" for r in results if not r.passed and not r.skipped]
    assert not failed and sum(r.passed for r in results) >= 8
    text = suite_text().replace("  - name: synthetic\n    params: {size: 32}",
                                "  - name: lab-scans\n    path: data/scans\n    params: {size: 32}")
    spec, path = load_suite(_write(tmp_path, text))
    (cell,) = expand(spec, registry, path)
    assert cell.dataset_path == str(tmp_path / "data" / "scans")
    code, err = run_cli(capsys, tmp_path, text.replace("{size: 32}", "{sise: 32}"), "--plugins", str(plugins))
    assert code == 2 and "unknown parameter 'sise' for dataset 'lab-scans'; did you mean 'size'" in err


class _Payload:
    """Would create a file if unpickled: a checkpoint must never run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_a_checkpoint_holding_pickled_objects_is_refused_without_running_them(tmp_path):
    import torch

    from segarena.platform.errors import StoreError
    from segarena.platform.plugins.weights import load_state

    marker = tmp_path / "pwned"
    torch.save({"modules": {}, "extra": _Payload(marker)}, tmp_path / "weights.pt")
    with pytest.raises(StoreError, match=r"weights\.pt: cannot load as plain weights") as err:
        load_state(tmp_path / "weights.pt")
    assert "\n" not in str(err.value) and not marker.exists()
    torch.save({"modules": {"net": {"w": torch.ones(2)}}, "extra": {"step": 3}}, tmp_path / "plain.pt")
    assert load_state(tmp_path / "plain.pt")["extra"] == {"step": 3}  # tensors and plain data still load
