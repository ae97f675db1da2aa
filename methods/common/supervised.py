"""Supervised one-shot training shared by the baselines (UNet, TransUNet): TransUNet's recipe.

0.5·CE + 0.5·Dice (softmax over background + classes when exclusive, else sigmoid per class; batch-wide,
background included, squared denominator Σp² + Σt² as the official TransUNet loss),
SGD with momentum and poly decay lr·(1 − it/max_it)^0.9.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from segarena.platform.plugin import Budget, Prediction, Task, threshold_probs


class SupervisedTrainer:
    """Mixin: ``self.net`` maps images to logits; gives profiles/training_step/predict/optimizers.

    Subclasses set ``PROFILES`` (their defaults as data, next to the model)."""

    net: torch.nn.Module
    denoiser: ClassVar[str] = "net"  # the one network: nfe = 1 forward per image
    PROFILES: ClassVar[dict[str, dict[str, Any]]]

    @classmethod
    def profiles(cls) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(cls.PROFILES)

    @staticmethod
    def out_channels(task: Task) -> int:
        """Logit channels: background + classes under softmax, else one sigmoid channel per class."""
        return task.num_classes + 1 if task.exclusive and task.num_classes > 1 else task.num_classes

    def setup_training(self, net: torch.nn.Module) -> None:
        hp = self.hparams
        self.softmax = self.task.exclusive and self.task.num_classes > 1
        # Batch-wide Dice over every channel, background included when softmax: the official TransUNet loss.
        self.dice = DiceLoss(softmax=self.softmax, sigmoid=not self.softmax, include_background=True, batch=True,
                             squared_pred=True)  # the official Σp² + Σt² denominator
        self.opt = torch.optim.SGD(net.parameters(), lr=hp["lr"], momentum=hp.get("momentum", 0.9),
                                   weight_decay=hp.get("weight_decay", 1e-4))
        self.iteration = 0

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"net": self.net}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt": self.opt}

    def extra_state(self) -> dict:
        return {"iteration": self.iteration}

    def load_extra_state(self, state: dict) -> None:
        self.iteration = int(state.get("iteration", 0))

    def loss(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.softmax:
            labels = torch.cat([1 - mask.amax(1, keepdim=True), mask], 1)
            ce = F.cross_entropy(logits, labels.argmax(1))
        else:
            labels = mask
            ce = F.binary_cross_entropy_with_logits(logits, mask)
        return 0.5 * ce + 0.5 * self.dice(logits, labels)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        max_it = max(1, int(self.hparams.get("max_iterations", 1000)))
        lr = self.hparams["lr"] * max(0.0, 1 - self.iteration / max_it) ** 0.9
        for group in self.opt.param_groups:
            group["lr"] = lr
        loss = self.loss(self.net(batch["image"]), batch["mask"])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.iteration += 1
        return {"loss": loss.item(), "lr": lr}

    def predict(self, images: torch.Tensor, budget: Budget, generator: torch.Generator | None = None) -> Prediction:
        logits = self.net(images)
        probs = logits.softmax(1)[:, 1:] if self.softmax else logits.sigmoid()
        return Prediction(probs=probs, mask=threshold_probs(probs, self.task.exclusive), nfe=1)
