"""Cascaded upsampler (CUP): conv_more, then x2 bilinear upsampling blocks fed by the CNN skips."""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution, UpSample
from torch import nn


def conv_bn_relu(cin: int, cout: int) -> Convolution:
    """conv3x3 (no bias) → BatchNorm → ReLU, the official ``Conv2dReLU``."""
    return Convolution(2, cin, cout, kernel_size=3, act="RELU", norm="BATCH", bias=False)


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, skip: int) -> None:
        super().__init__()
        self.up = UpSample(2, scale_factor=2, mode="nontrainable", interp_mode="bilinear", align_corners=True)
        self.conv1 = conv_bn_relu(cin + skip, cout)
        self.conv2 = conv_bn_relu(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], 1)
        return self.conv2(self.conv1(x))


class DecoderCup(nn.Module):
    """Tokens at 1/16 → full-resolution features; the first ``n_skip`` blocks take skips (1/8, 1/4, 1/2)."""

    def __init__(self, hidden_size: int, head_channels: int, channels: tuple[int, ...],
                 skip_channels: list[int], n_skip: int) -> None:
        super().__init__()
        if not 0 <= n_skip <= min(len(skip_channels), len(channels)):
            raise ValueError(f"n_skip={n_skip} must be in [0, {len(skip_channels)}]")
        self.n_skip = n_skip
        self.conv_more = conv_bn_relu(hidden_size, head_channels)
        skips = [skip_channels[i] if i < n_skip else 0 for i in range(len(channels))]
        ins = [head_channels, *channels[:-1]]
        self.blocks = nn.ModuleList(DecoderBlock(i, o, s) for i, o, s in zip(ins, channels, skips))
        self.out_channels = channels[-1]

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int], skips: list[torch.Tensor]) -> torch.Tensor:
        x = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)
        x = self.conv_more(x)
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < self.n_skip else None)
        return x
