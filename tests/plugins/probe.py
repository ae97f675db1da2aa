"""The one test method: a single 3×3 conv whose behaviour the tests switch on, so each test names what it
needs instead of carrying its own copy of a one-layer method.

Switches are profile keys (every one is read, so ``segarena plugins check`` passes an honest probe):

- ``fail``: ``nan`` (training loss NaN), ``raise`` (training raises), ``lie`` (predict runs five denoiser
  passes per step and reports one), ``logits`` (predict hands logits × 3 over as probabilities); anything
  else is honest.
- ``sleep``: seconds slept per training step; ``hang``: a training step that never returns.
- ``trace``: a file that gets one line ``step <pid>`` per training step.
- ``spy``: a file that gets the SHA-1 of every image ``predict`` is asked to segment, one per line.

Class attributes a test plugin sets beside its ``name``: ``switches`` (profile defaults), ``fails`` (a
search space over ``fail``), ``stochastic`` (a little generator noise per member, ensembles allowed) and
``returns_members`` (members handed back, so the harness may fuse smaller ensembles from them).

This class has no ``name``: discovery skips it. ``segarena_test_fakes.write_probe`` writes a folder plugin
(this file plus a named subclass, self-contained for Ray workers and cluster nodes);
``segarena_test_fakes.probe_class`` makes a named subclass in-process.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any, ClassVar

import torch

from segarena.platform.plugin import MethodPlugin, Prediction
from segarena.platform.search_space import Choice, LogUniform

PROFILE: dict[str, Any] = {"lr": 0.1, "batch_size": 4, "fail": "", "sleep": 0.0, "hang": False, "trace": "",
                           "spy": ""}


class Probe(MethodPlugin):
    version = "0.0.1"
    paper = "test plugin"
    denoiser = "net"
    switches: ClassVar[dict[str, Any]] = {}
    fails: ClassVar[tuple[str, ...]] = ()
    returns_members: ClassVar[bool] = False

    def __init__(self, hparams: dict[str, Any], task: Any) -> None:
        super().__init__(hparams, task)
        self.net = torch.nn.Conv2d(task.in_channels, task.num_classes, 3, padding=1)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=hparams["lr"])

    @classmethod
    def profiles(cls) -> dict[str, dict[str, Any]]:
        return {"tiny": {**PROFILE, **cls.switches}, "paper": {**PROFILE, **cls.switches}}

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        space: dict[str, Any] = {"lr": LogUniform(1e-3, 1.0)}
        if cls.fails:
            space["fail"] = Choice(list(cls.fails))
        return space

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"net": self.net}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt": self.opt}

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        hp = self.hparams
        if hp["trace"]:
            with open(hp["trace"], "a") as f:
                f.write(f"step {os.getpid()}\n")
        while hp["hang"]:
            time.sleep(1)
        time.sleep(hp["sleep"])
        if hp["fail"] == "raise":
            raise ValueError("boom from a plugin")
        loss = torch.nn.functional.binary_cross_entropy_with_logits(self.net(batch["image"]), batch["mask"])
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": float("nan") if hp["fail"] == "nan" else loss.item()}

    def predict(self, images: torch.Tensor, budget: Any, generator: torch.Generator | None = None) -> Prediction:
        if self.hparams["spy"]:
            with open(self.hparams["spy"], "a") as f:
                f.writelines(hashlib.sha1(im.cpu().numpy().tobytes()).hexdigest() + "\n" for im in images)
        fail, e, b = self.hparams["fail"], budget.ensemble, images.shape[0]
        x = images.repeat(e, 1, 1, 1)  # members batched: E·B rows per pass count E passes per image
        passes = budget.steps * (5 if fail == "lie" else 1)  # a liar runs five passes per step, reports one
        logits = sum(self.net(x) for _ in range(passes)) / passes
        if self.stochastic:
            logits = logits + torch.rand(e * b, 1, 1, 1, generator=generator, device=x.device) * 0.01
        members = logits.view(e, b, *logits.shape[1:])
        if fail == "logits":  # logits × 3 handed over as probabilities
            probs = members.mean(0) * 3
            return Prediction(probs=probs, mask=probs > 0, nfe=budget.nfe)
        member_probs = members.sigmoid()
        probs = member_probs.mean(0)
        if not self.returns_members:
            return Prediction(probs=probs, mask=probs > 0.5, nfe=budget.nfe)
        return Prediction(probs=probs, mask=probs > 0.5, nfe=budget.nfe, members=member_probs > 0.5,
                          member_probs=member_probs)
