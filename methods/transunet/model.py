"""TransUNet2D: ResNetV2 stem → ViT over the 1/16 map → cascaded upsampler → conv3x3 head."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from segarena.methods.transunet.decoder import DecoderCup
from segarena.methods.transunet.resnet_skip import ResNetSkip
from segarena.methods.transunet.vit import HybridViT


class TransUNet2D(nn.Module):
    """R50-ViT-B/16 TransUNet (Chen et al. 2021) with every size exposed; inputs H, W divisible by 16.

    ``grey_to_rgb`` builds a 3-channel stem and repeats 1-channel inputs, as the official
    ``VisionTransformer.forward`` does (needed to load ImageNet-shaped weights).
    """

    def __init__(self, in_channels: int, out_channels: int, image_size: tuple[int, int] = (224, 224),
                 width: int = 64, block_units: tuple[int, ...] = (3, 4, 9), gn_groups: int = 32,
                 weight_std: bool = True, hidden_size: int = 768, mlp_dim: int = 3072, vit_layers: int = 12,
                 num_heads: int = 12, dropout: float = 0.1, attention_dropout: float = 0.0,
                 head_channels: int = 512, decoder_channels: tuple[int, ...] = (256, 128, 64, 16),
                 n_skip: int = 3, grey_to_rgb: bool = False) -> None:
        super().__init__()
        check_size(image_size)
        self.repeat = 3 if grey_to_rgb and in_channels == 1 else 1
        self.cnn = ResNetSkip(in_channels * self.repeat, width, tuple(block_units), gn_groups, weight_std)
        grid = (image_size[0] // 16, image_size[1] // 16)
        self.vit = HybridViT(self.cnn.out_channels, grid, hidden_size, mlp_dim, vit_layers, num_heads, dropout,
                             attention_dropout)
        self.decoder = DecoderCup(hidden_size, head_channels, tuple(decoder_channels), self.cnn.skip_channels,
                                  n_skip)
        self.head = nn.Conv2d(self.decoder.out_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_size(x.shape[-2:])
        if self.repeat > 1:
            x = x.repeat(1, self.repeat, 1, 1)
        feat, skips = self.cnn(x)
        tokens = self.vit(feat)
        return self.head(self.decoder(tokens, tuple(feat.shape[-2:]), skips))


def check_size(size: tuple[int, ...] | torch.Size) -> None:
    if any(s % 16 or s < 32 for s in size):
        raise ValueError(f"TransUNet needs H and W divisible by 16 and >= 32, got {tuple(size)}")


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a local torch checkpoint of this architecture: a bare state dict, ``{"state_dict": …}``,
    or a segarena plugin checkpoint (``{"modules": {"net": …}}``). Strict: every key and shape must match."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TransUNet pretrained_path {str(path)!r} does not exist (nothing is downloaded)")
    if path.suffix == ".npz":
        raise ValueError(f"{path.name}: Google/BiT .npz checkpoints are not converted by segarena; "
                         "convert them to a TransUNet2D state dict first")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "modules" in state:
        state = state["modules"].get("net", state["modules"])
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path.name}: not a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{path.name} does not match this TransUNet configuration: "
                         f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:3]}), {len(shapes)} shape mismatches (e.g. {shapes[:3]})")
    model.load_state_dict(state)
