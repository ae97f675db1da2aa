"""TransUNet baseline plugin.

Card: README.md. R50-ViT-B/16 hybrid encoder + cascaded upsampler, trained from scratch with
UNet's recipe (``SupervisedTrainer``: 0.5 CE + 0.5 Dice, SGD + poly), so the two baseline rows
differ only in architecture. One-shot: nfe = 1, one budget.
"""

from __future__ import annotations

from collections import ChainMap
from typing import Any, ClassVar

import torch

from segarena.methods.common.supervised import SupervisedTrainer
from segarena.methods.transunet.model import TransUNet2D, load_checkpoint
from segarena.platform.plugin import MethodPlugin, Task
from segarena.platform.search_space import Choice, LogUniform

# Training keys mirror methods/unet profiles value for value, so the baseline rows differ only in architecture.
_SGD = {"momentum": 0.9, "weight_decay": 1e-4}
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {"image_size": 64, "width": 16, "block_units": [1, 1, 1], "gn_groups": 8, "weight_std": True,
             "hidden_size": 64, "mlp_dim": 128, "vit_layers": 2, "num_heads": 4, "dropout": 0.1,
             "attention_dropout": 0.0, "head_channels": 64, "decoder_channels": [32, 16, 8, 8], "n_skip": 3,
             "grey_to_rgb": False, "pretrained_path": None, **_SGD, "lr": 0.05, "batch_size": 4,
             "max_iterations": 400},
    "paper": {"image_size": 224, "width": 64, "block_units": [3, 4, 9], "gn_groups": 32, "weight_std": True,
              "hidden_size": 768, "mlp_dim": 3072, "vit_layers": 12, "num_heads": 12, "dropout": 0.1,
              "attention_dropout": 0.0, "head_channels": 512, "decoder_channels": [256, 128, 64, 16], "n_skip": 3,
              "grey_to_rgb": True, "pretrained_path": None, **_SGD, "lr": 0.01, "batch_size": 24,
              "max_iterations": 13950},
}
_ARCH_KEYS = ("width", "block_units", "gn_groups", "weight_std", "hidden_size", "mlp_dim", "vit_layers", "num_heads",
              "dropout", "attention_dropout", "head_channels", "decoder_channels", "n_skip", "grey_to_rgb")


class TransUNetMethod(SupervisedTrainer, MethodPlugin):
    name: ClassVar[str] = "transunet"
    version: ClassVar[str] = "0.2.0"
    paper: ClassVar[str] = ("Chen, Lu, Yu, Luo, Adeli, Wang, Lu, Yuille, Zhou. TransUNet: Transformers Make Strong "
                            "Encoders for Medical Image Segmentation. arXiv:2102.04306, 2021")
    paper_augment: ClassVar[str] = "default"  # official: random rot90 + flip, or rotation ±20° (no intensity jitter)
    samplers: ClassVar[tuple[str, ...]] = ("direct",)  # one forward pass
    PROFILES = PROFILES

    def __init__(self, hparams: dict[str, Any], task: Task) -> None:
        MethodPlugin.__init__(self, hparams, task)
        hp = ChainMap(self.hparams, PROFILES["paper"])  # read through, not copied: reads stay visible
        size = hp["image_size"] or task.image_size
        out = self.out_channels(task)
        self.net: torch.nn.Module = TransUNet2D(
            task.in_channels, out, (size, size) if isinstance(size, int) else tuple(size),
            **{k: tuple(hp[k]) if isinstance(hp[k], list) else hp[k] for k in _ARCH_KEYS})
        if hp.get("pretrained_path"):
            load_checkpoint(self.net, hp["pretrained_path"])
        self.setup_training(self.net)

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        return {"lr": LogUniform(1e-3, 5e-2), "batch_size": Choice([6, 12, 24]),
                "weight_decay": LogUniform(1e-5, 1e-3), "n_skip": Choice([0, 1, 2, 3])}
