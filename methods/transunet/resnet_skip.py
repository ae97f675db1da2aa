"""BiT-style ResNetV2 stem of the R50-ViT hybrid (GroupNorm + weight-standardised convs).

Not torchvision's ResNet-50: three stages only (units (3, 4, 9) in the paper model), each unit
conv1x1-GN-ReLU-conv3x3(stride)-GN-ReLU-conv1x1-GN, then ReLU(shortcut + branch). Returns the
1/16 map fed to the ViT and the skips at 1/8, 1/4 and 1/2 for the cascaded upsampler.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StdConv2d(nn.Conv2d):
    """Conv with per-filter weight standardisation (zero mean, unit variance), as BiT uses with GroupNorm."""

    def __init__(self, *args, standardize: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.standardize = standardize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.standardize:
            return super().forward(x)
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
        weight = (self.weight - mean) / torch.sqrt(var + 1e-5)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Bottleneck(nn.Module):
    """One ResNetV2 unit; a projection shortcut (conv1x1 + per-channel GroupNorm) when shape changes."""

    def __init__(self, cin: int, cout: int, cmid: int, stride: int = 1, groups: int = 32, ws: bool = True) -> None:
        super().__init__()
        self.conv1 = StdConv2d(cin, cmid, 1, bias=False, standardize=ws)
        self.gn1 = nn.GroupNorm(groups, cmid, eps=1e-6)
        self.conv2 = StdConv2d(cmid, cmid, 3, stride=stride, padding=1, bias=False, standardize=ws)
        self.gn2 = nn.GroupNorm(groups, cmid, eps=1e-6)
        self.conv3 = StdConv2d(cmid, cout, 1, bias=False, standardize=ws)
        self.gn3 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(StdConv2d(cin, cout, 1, stride=stride, bias=False, standardize=ws),
                                            nn.GroupNorm(cout, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.gn1(self.conv1(x)))
        y = self.relu(self.gn2(self.conv2(y)))
        return self.relu(shortcut + self.gn3(self.conv3(y)))


class ResNetSkip(nn.Module):
    """Root (7x7 s2) + max-pool + three stages; stage widths 4w, 8w, 16w with bottleneck w, 2w, 4w."""

    def __init__(self, in_channels: int, width: int = 64, block_units: tuple[int, ...] = (3, 4, 9),
                 groups: int = 32, weight_std: bool = True) -> None:
        super().__init__()
        self.root = nn.Sequential(StdConv2d(in_channels, width, 7, stride=2, padding=3, bias=False,
                                            standardize=weight_std),
                                  nn.GroupNorm(groups, width, eps=1e-6), nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(3, stride=2, padding=0)
        stages, cin = [], width
        for i, units in enumerate(block_units):
            cmid, cout = width * 2**i, width * 4 * 2**i
            stages.append(nn.Sequential(*[
                Bottleneck(cin if u == 0 else cout, cout, cmid, stride=2 if (u == 0 and i > 0) else 1,
                           groups=groups, ws=weight_std) for u in range(units)]))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.out_channels = cin
        self.skip_channels = [width * 8, width * 4, width]  # 1/8, 1/4, 1/2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, w = x.shape[-2:]
        x = self.root(x)
        skips = [x]
        x = self.pool(x)  # padding 0: 1/4 map is one pixel short, zero-padded below for the skip only
        for i, stage in enumerate(self.stages[:-1]):
            x = stage(x)
            th, tw = h // (4 * 2**i), w // (4 * 2**i)
            skips.append(F.pad(x, (0, tw - x.shape[-1], 0, th - x.shape[-2])))
        return self.stages[-1](x), skips[::-1]
