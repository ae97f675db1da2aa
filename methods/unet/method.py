"""UNet baseline plugin.

Card: MONAI ``BasicUNet`` (Ronneberger et al. 2015 layout). ``paper`` = the classic 2D U-Net
widths (64…1024); trained from scratch exactly as our TransUNet (loss, SGD + poly), so the two
rows differ only in architecture. One-shot: nfe = 1.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from monai.networks.nets import BasicUNet

from segarena.methods.common.supervised import SupervisedTrainer
from segarena.platform.plugin import MethodPlugin, Task
from segarena.platform.search_space import Choice, LogUniform

PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {"features": [8, 16, 32, 64, 128, 8], "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4,
             "batch_size": 4, "max_iterations": 400, "dropout": 0.0},
    "paper": {"features": [64, 128, 256, 512, 1024, 128], "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4,
              "batch_size": 24, "max_iterations": 13950, "dropout": 0.0},
}


class UNetMethod(SupervisedTrainer, MethodPlugin):
    name: ClassVar[str] = "unet"
    version: ClassVar[str] = "0.2.0"
    paper: ClassVar[str] = ("Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical "
                            "Image Segmentation. MICCAI 2015")
    paper_augment: ClassVar[str] = "default"  # trained like TransUNet (rot90/flip/rotation)
    samplers: ClassVar[tuple[str, ...]] = ("direct",)  # one forward pass
    PROFILES = PROFILES

    def __init__(self, hparams: dict[str, Any], task: Task) -> None:
        MethodPlugin.__init__(self, hparams, task)
        out = self.out_channels(task)
        self.net: torch.nn.Module = BasicUNet(spatial_dims=2, in_channels=task.in_channels, out_channels=out,
                                              features=tuple(self.hparams["features"]),
                                              dropout=self.hparams.get("dropout", 0.0))
        self.setup_training(self.net)

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        return {"lr": LogUniform(1e-3, 1e-1), "batch_size": Choice([2, 4, 8])}
