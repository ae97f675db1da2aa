"""Runner pieces that need no Ray: the suite lock, equal DDP step counts, plugin folders for workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segarena.platform.errors import SegarenaError
from segarena.platform.plugins.registry import plugin_folders
from segarena.platform.records import Budget, Evaluation, stable_hash
from segarena.platform.run.driver import suite_lock
from segarena.platform.run.train_loop import train_epoch
from segarena.platform.scoring.metrics import per_case_metrics
from segarena.platform.spec.suite import Cell
from segarena.platform.store.workdir import WorkDir


def test_second_driver_of_a_suite_is_refused(tmp_path):
    wd = WorkDir.at(tmp_path)
    with suite_lock(wd, "s"):
        with pytest.raises(SegarenaError, match="already running"):
            with suite_lock(wd, "s"):
                pass
        with suite_lock(wd, "other"):  # other suites are independent
            pass
    with suite_lock(wd, "s"):  # released
        pass


class Counter:
    def __init__(self):
        self.steps = 0

    def train(self, mode=True):
        return self

    def training_step(self, batch):
        self.steps += 1
        return {"loss": 1.0}


@pytest.mark.parametrize("n, world, bs", [(9, 2, 4), (5, 3, 2), (1, 2, 4)])
def test_every_ddp_rank_runs_the_same_number_of_steps(n, world, bs):
    cell = Cell(suite="s", method="m", profile="tiny", hparams={"batch_size": bs}, plugin_version="1",
                dataset="d", dataset_path=None, dataset_params={}, seed=0, budgets=(), epochs=1,
                steps_per_epoch=None, evaluation=Evaluation())
    data = (torch.zeros(n, 1, 4, 4), torch.zeros(n, 1, 4, 4))
    counts = []
    for rank in range(world):
        method = Counter()
        train_epoch(method, data, cell, 0, rank, world, torch.device("cpu"))
        counts.append(method.steps)
    assert len(set(counts)) == 1, counts


def test_workers_get_the_env_var_plugin_folders_too(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("SEGARENA_PLUGIN_PATH", str(b))
    assert plugin_folders([a, a]) == [a.resolve(), b.resolve()]
    assert plugin_folders([a], use_env=False) == [a.resolve()]


def test_channels_first_never_merges_classes_into_a_volume():
    """(C, H, W) with a 3-value spacing: guessed as one 3D class without the flag; the harness passes
    channels_first=True, so it is scored per class or refused, never merged."""
    pred = np.zeros((3, 8, 8), bool)
    assert len(per_case_metrics(pred, pred, spacing=(1.0, 1.0), channels_first=True)) == 3
    with pytest.raises(ValueError, match="spacing"):
        per_case_metrics(pred, pred, spacing=(1.0, 1.0, 2.0), channels_first=True)


def _cell(**kw):
    base = dict(suite="s", method="m", profile="tiny", hparams={"lr": 0.1}, plugin_version="1", dataset="d",
                dataset_path=None, dataset_params={}, seed=0, budgets=(Budget(5, 1, "ddim"),),
                epochs=2, steps_per_epoch=None, evaluation=Evaluation(timing_repeats=10, val_cases=8, val_every=1))
    return Cell(**{**base, **kw})


def test_training_key_ignores_budgets_and_evaluation_settings_but_not_training():
    base = _cell()
    more_budgets = _cell(budgets=(*base.budgets, Budget(10, 1, "ddim")))
    other_timing = _cell(evaluation=base.evaluation.model_copy(update={"timing_repeats": 3}))
    assert base.key == more_budgets.key == other_timing.key
    for changed in (_cell(epochs=3), _cell(hparams={"lr": 0.2}), _cell(seed=1), _cell(augment="flips"),
                    _cell(dataset_hash="x"), _cell(evaluation=base.evaluation.model_copy(update={"val_cases": 2})),
                    _cell(plugin_version="2"), _cell(steps_per_epoch=5)):
        assert changed.key != base.key
    (b,) = base.budgets
    assert base.eval_key(b) != other_timing.eval_key(b)  # new evaluation settings re-evaluate
    assert base.eval_key(b) == more_budgets.eval_key(b)  # an added budget leaves the others alone


def test_plan_jobs_trains_evaluates_or_skips():
    from segarena.platform.records import Settings
    from segarena.platform.run.driver import plan_jobs

    s = Settings("sqlite:///x", "/tmp/x", "1", (), 1, 1.0, 0.0, 0, "cpu", "0", "sha", "drv")
    new, done, partial = _cell(seed=0), _cell(seed=1), _cell(seed=2, budgets=(Budget(5, 1, "ddim"),
                                                                               Budget(10, 1, "ddim")))
    trainings = {done.key: "r1", partial.key: "r2"}
    evaluations = {("r1", done.eval_key(Budget(5, 1, "ddim"))), ("r2", partial.eval_key(Budget(5, 1, "ddim")))}
    jobs, skipped = plan_jobs([new, done, partial], trainings, evaluations, s)
    assert [(j.kind, j.cell.seed, [b.name for b in j.budgets]) for j in jobs] == [
        ("train", 0, ["ddim5-e1"]), ("evaluate", 2, ["ddim10-e1"])]
    assert jobs[1].train_run_id == "r2" and skipped == [done]


def test_job_round_trips_through_the_wire():
    from segarena.platform.records import Job, Settings

    s = Settings("sqlite:///x", "/tmp/x", "1", ("/p",), 2, 1.0, 0.0, 1, "cpu", "0", "sha", "drv")
    job = Job("evaluate", _cell(), (Budget(5, 1, "ddim"),), s, train_run_id="r")
    assert Job.from_wire(job.to_wire()) == job
    assert not Job("train", _cell(), (), s).in_trial and job.in_trial  # 2 workers train through Ray Train


def _key_cell(**evaluation):
    return Cell(suite="s", method="unet", profile="tiny", hparams={"lr": 0.001, "batch_size": 4}, plugin_version="1",
                dataset="synthetic", dataset_path=None, dataset_params={"n": 12}, seed=3,
                budgets=(Budget(), Budget(5, 3, "ddim")), epochs=2, steps_per_epoch=None,
                evaluation=Evaluation(**evaluation), augment="flips", dataset_hash="d" * 8, plugin_source_hash="p" * 8)


def test_keys_are_those_of_the_dict_records():
    """Typed budgets and evaluation settings hash exactly as the dicts they replaced did, so finished
    cells in existing work dirs are still found: the values below were computed by the dict-based records
    (commit 83d8cc6); they change only with the API version or the key's definition (both retrain)."""
    cell, changed = _key_cell(), _key_cell(val_cases=4, timing_repeats=3, nsd_tolerance_mm=2.0)
    assert (cell.key, cell.variant) == ("8f3e0a640712eba499ea", "3bbefcea487a")
    assert [cell.eval_key(b) for b in cell.budgets] == ["ae85f067cecef7dffb70", "20283bc1201485eed305"]
    assert changed.key == "30a6e65e99bfe6d7a782"
    assert [changed.eval_key(b) for b in changed.budgets] == ["df53fe320a53bf0f55bb", "5f1f31e881d9abec1bae"]
    # and the same as a dict-based computation of the keys, whatever the API version
    ev = changed.evaluation.model_dump()
    fields = {**changed.training_fields(), "validation": {k: ev[k] for k in ("val_every", "val_cases")}}
    assert changed.key == stable_hash(fields)[:20]
    settings = {k: v for k, v in ev.items() if k not in ("val_every", "val_cases")}
    budget = {"sampler": "ddim", "steps": 5, "ensemble": 3}
    assert changed.eval_key(Budget(5, 3, "ddim")) == stable_hash({"train": changed.key, "budget": budget,
                                                                  "evaluation": settings})[:20]


def test_a_variant_spans_seeds_and_datasets_but_not_hyperparameters():
    """One variant is one leaderboard row per dataset and one entry of the mean rank across datasets."""
    base = _cell()
    assert base.variant == _cell(seed=4).variant == _cell(dataset="other", dataset_params={"size": 32}).variant
    assert base.variant != _cell(hparams={"lr": 0.2}).variant != _cell(epochs=9).variant


def test_two_suites_holding_one_training_never_share_its_checkpoint_folder(tmp_path):
    """The training key leaves the suite out (one training, many evaluations), but a half-written
    checkpoint belongs to the suite whose trial writes it: two suites of one work dir running the same
    cell at once must not resume from, or clear, each other's."""
    a, b = _cell(suite="suite-a"), _cell(suite="suite-b")
    assert a.key == b.key
    wd = WorkDir(tmp_path)
    assert wd.cell_checkpoint(a) != wd.cell_checkpoint(b)
    assert wd.timeout_marker(a) != wd.timeout_marker(b)
    wd.cell_checkpoint(a).mkdir(parents=True)
    wd.cell_checkpoint(b).mkdir(parents=True)
    wd.clear_cell_checkpoint(a)
    assert not wd.cell_checkpoint(a).exists() and wd.cell_checkpoint(b).exists()
