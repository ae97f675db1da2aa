"""Blocks shared by the cDAL generator and discriminator: FIR/avg-pool resampling, time embedding.

``resample="fir"`` is the released [1, 3, 3, 1] FIR filter (depthwise strided conv / transposed
conv, equivalent to upfirdn with the official padding); ``"avgpool"`` is the cheap switch
(2x2 average pooling, nearest upsampling).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from torch import nn

SQRT2 = math.sqrt(2.0)
FIR_KERNEL = (1.0, 3.0, 3.0, 1.0)
RESAMPLE_KINDS = ("fir", "avgpool")


class Resample(nn.Module):
    """Halve (``down``) or double (``up``) the resolution, channels unchanged."""

    def __init__(self, direction: str, kind: str = "fir") -> None:
        super().__init__()
        if direction not in ("up", "down") or kind not in RESAMPLE_KINDS:
            raise ValueError(f"bad resample {direction!r}/{kind!r}; kinds {RESAMPLE_KINDS}")
        self.direction, self.kind = direction, kind
        k = torch.tensor(FIR_KERNEL)
        k2d = torch.outer(k, k) / k.sum() ** 2
        self.register_buffer("kernel", k2d[None, None] * (4 if direction == "up" else 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "avgpool":
            return F.avg_pool2d(x, 2) if self.direction == "down" else F.interpolate(x, scale_factor=2.0)
        c = x.shape[1]
        weight = self.kernel.to(x.dtype).expand(c, 1, 4, 4)
        if self.direction == "down":
            return F.conv2d(x, weight, stride=2, padding=1, groups=c)
        return F.conv_transpose2d(x, weight, stride=2, padding=1, groups=c)


def conv(cin: int, cout: int, kernel: int = 3, zero: bool = False, bias: bool = True) -> nn.Conv2d:
    """'Same' convolution; ``zero`` = zero-initialised weights (residual branches start as identity)."""
    layer = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias)
    if zero:
        nn.init.zeros_(layer.weight)
        if bias:
            nn.init.zeros_(layer.bias)
    return layer


def groups(channels: int) -> int:
    """NCSN++ group count: min(C/4, 32)."""
    return max(1, min(channels // 4, 32))


class TimeEmbedding(nn.Module):
    """Sinusoidal(index) → Dense → act → Dense, as both networks embed the integer step."""

    def __init__(self, sin_dim: int, dim: int, act: nn.Module) -> None:
        super().__init__()
        self.sin_dim = sin_dim
        self.mlp = nn.Sequential(nn.Linear(sin_dim, dim), act, nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(get_timestep_embedding(t, self.sin_dim))
