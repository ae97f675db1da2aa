"""What the in-process fake methods of the evaluation tests share: nothing to train, and an identity
``net`` as the denoiser the harness counts (each fake calls it nfe times per image).

Loaded by tests/conftest.py as the module ``segarena_test_fakes`` (the tests run with
``--import-mode=importlib``, so this folder is not on ``sys.path``)."""

from __future__ import annotations

from typing import Any

import torch

from segarena.platform.plugin import MethodPlugin, Task


class UntrainedMethod(MethodPlugin):
    paper = "test"
    denoiser = "net"

    def __init__(self, hparams: dict[str, Any], task: Task) -> None:
        super().__init__(hparams, task)
        self.net = torch.nn.Identity()

    @classmethod
    def profiles(cls) -> dict[str, dict[str, Any]]:
        return {"tiny": {}, "paper": {}}

    def modules(self) -> dict[str, torch.nn.Module]:
        return {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"loss": 0.0}
