"""Runner pieces that need no Ray: the suite lock, equal DDP step counts, plugin folders for workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segarena.platform.errors import SegarenaError
from segarena.platform.metrics import per_case_metrics
from segarena.platform.registry import plugin_folders
from segarena.platform.runner import suite_lock
from segarena.platform.suite import Cell
from segarena.platform.worker import train_epoch


def test_second_driver_of_a_suite_is_refused(tmp_path):
    with suite_lock(tmp_path, "s"):
        with pytest.raises(SegarenaError, match="already running"):
            with suite_lock(tmp_path, "s"):
                pass
        with suite_lock(tmp_path, "other"):  # other suites are independent
            pass
    with suite_lock(tmp_path, "s"):  # released
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
                steps_per_epoch=None, evaluation={})
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
