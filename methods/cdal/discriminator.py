"""Time-conditioned discriminator of DDGAN/cDAL: judges (candidate x_t, x_{t+1}) pairs at step t.

The image is not an input. ``features`` returns the start map and every block's output; the
spatial attention reads one of them (level 0 = full resolution, level k = 1/2^k). ``init_std``
> 0 re-initialises every conv N(0, init_std) as the MoNuSeg/CXR script does (0.02, which also
overrides the zero-init of each block's last conv); 0 keeps PyTorch's default init, used by the
narrow ``tiny`` profile where N(0, 0.02) convs shrink the signal to ~1e-7 logits at start.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from segarena.methods.cdal.layers import SQRT2, Resample, TimeEmbedding, conv


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class DownBlock(nn.Module):
    """LReLU → conv3x3 → +t-bias → LReLU → down → conv3x3; 1x1 skip on the downsampled input; /√2."""

    def __init__(self, cin: int, cout: int, t_dim: int, kind: str = "fir") -> None:
        super().__init__()
        self.conv1, self.conv2 = conv(cin, cout), conv(cout, cout)
        self.temb = nn.Linear(t_dim, cout)
        self.down = Resample("down", kind)
        self.skip = conv(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = _lrelu(self.conv1(_lrelu(x)) + self.temb(temb)[..., None, None])
        h = self.conv2(self.down(h))
        return (h + self.skip(self.down(x))) / SQRT2


def minibatch_stddev(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Append the mean per-group feature std as one channel (StyleGAN2); the group divides the batch."""
    b, _, hh, ww = h.shape
    g = max(d for d in range(1, min(group, b) + 1) if b % d == 0)
    std = (h.view(g, -1, *h.shape[1:]).var(0, unbiased=False) + 1e-8).sqrt().mean((1, 2, 3))
    return torch.cat([h, std.view(-1, 1, 1, 1).repeat(g, 1, hh, ww)], 1)


class TimeCondDiscriminator(nn.Module):
    """logit = D(x_t, t, x_{t+1}); ``d_mult`` gives each down block's width in units of ``ngf``."""

    def __init__(self, label_channels: int, *, ngf: int, d_mult: Sequence[int], t_emb: int,
                 resample: str = "fir", init_std: float = 0.02) -> None:
        super().__init__()
        self.time = TimeEmbedding(t_emb, t_emb, nn.LeakyReLU(0.2))
        self.start = conv(2 * label_channels, 2 * ngf, 1)
        widths = [2 * ngf] + [ngf * m for m in d_mult]
        self.blocks = nn.ModuleList(DownBlock(a, b, t_emb, resample) for a, b in pairwise(widths))
        self.final = conv(widths[-1] + 1, widths[-1])
        self.linear = nn.Linear(widths[-1], 1)
        for m in self.modules():
            if init_std > 0 and isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, init_std)

    @property
    def levels(self) -> int:
        """Number of feature maps ``features`` returns."""
        return len(self.blocks) + 1

    def features(self, x_t: torch.Tensor, t: torch.Tensor, x_next: torch.Tensor) -> list[torch.Tensor]:
        temb = _lrelu(self.time(t))
        hs = [self.start(torch.cat([x_t, x_next], 1))]
        for block in self.blocks:
            hs.append(block(hs[-1], temb))
        return hs

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        h = minibatch_stddev(self.features(x_t, t, x_next)[-1])  # the raw block output, as released
        return self.linear(_lrelu(self.final(h)).sum((2, 3))).squeeze(1)
