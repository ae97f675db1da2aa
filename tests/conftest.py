"""Shared fixtures: one Ray instance per test run (session), folder-plugin factories."""

from __future__ import annotations

import importlib.util
import os
import sys
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

if "segarena_test_fakes" not in sys.modules:  # tests/fakes.py, importable as segarena_test_fakes
    _spec = importlib.util.spec_from_file_location("segarena_test_fakes", Path(__file__).with_name("fakes.py"))
    sys.modules["segarena_test_fakes"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["segarena_test_fakes"])

FOLDER_METHOD = '''
import torch
from segarena.platform.plugin import Budget, MethodPlugin, Prediction


class {cls}(MethodPlugin):
    """A one-layer method for tests; `fail`: nan | raise (training), lie | logits (prediction)."""
    name = "{name}"
    version = "0.0.1"
    paper = "test plugin"
    denoiser = "net"

    def __init__(self, hparams, task):
        super().__init__(hparams, task)
        self.net = torch.nn.Conv2d(task.in_channels, task.num_classes, 3, padding=1)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=hparams["lr"])

    @classmethod
    def profiles(cls):
        return {{"tiny": {{"lr": 0.1, "batch_size": 4, "fail": "{fail}"}}, "paper": {{"lr": 0.1, "batch_size": 4,
                "fail": "{fail}"}}}}

    def modules(self):
        return {{"net": self.net}}

    def optimizers(self):
        return {{"opt": self.opt}}

    def training_step(self, batch):
        if self.hparams["fail"] == "raise":
            raise ValueError("boom from a plugin")
        loss = torch.nn.functional.binary_cross_entropy_with_logits(self.net(batch["image"]), batch["mask"])
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {{"loss": float("nan") if self.hparams["fail"] == "nan" else loss.item()}}

    def predict(self, images, budget, generator=None):
        if self.hparams["fail"] == "lie":  # five denoiser passes, one reported
            logits = sum(self.net(images) for _ in range(5 * budget.nfe)) / 5
            return Prediction(probs=logits.sigmoid(), mask=logits > 0, nfe=budget.nfe)
        logits = sum(self.net(images) for _ in range(budget.nfe)).div(budget.nfe)  # nfe counted passes
        if self.hparams["fail"] == "logits":  # logits × 3 handed over as probabilities
            return Prediction(probs=logits * 3, mask=logits > 0, nfe=budget.nfe)
        probs = logits.sigmoid()
        return Prediction(probs=probs, mask=probs > 0.5, nfe=budget.nfe)
'''


@pytest.fixture
def make_plugin_dir(tmp_path: Path):
    """Write a folder plugin: ``make_plugin_dir(name, fail="")`` → the folder."""

    def make(name: str, fail: str = "", folder: str = "plugins", filename: str | None = None) -> Path:
        d = tmp_path / folder
        d.mkdir(exist_ok=True)
        cls = "".join(p.capitalize() for p in name.replace("-", "_").split("_")) + "Method"
        (d / (filename or f"{name.replace('-', '_')}.py")).write_text(
            textwrap.dedent(FOLDER_METHOD.format(cls=cls, name=name, fail=fail)))
        return d

    return make


@pytest.fixture(scope="session")
def ray_session():
    """The one Ray instance of this test run (2 CPUs, as on CI)."""
    import ray

    ray.init(num_cpus=2, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()
