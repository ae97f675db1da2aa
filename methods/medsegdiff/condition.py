"""Condition branch E^I: everything that sees only the image, run once per sample.

nnU-Net-style encoder (as the official highway, §1.2): per stage two conv3x3 → Dropout2d → norm →
LeakyReLU(0.01) blocks, max-pool between stages, one stage per denoiser resolution. It returns the
fusion image terms, the image's share of the denoiser's first conv when ``concat_image`` (the
concatenation cat(I, x_t) → conv equals conv_I(I) + conv_x(x_t), so the image half is computed once)
and, optionally, calibration logits. The official random per-call 1x1 conv is not reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from segarena.methods.medsegdiff.fusion import ImageTerm


@dataclass
class ConditionFeatures:
    """Per-image condition, reused by every sampling step and ensemble member."""

    terms: dict[int, torch.Tensor] = field(default_factory=dict)  # denoiser stage → image term
    image_in: torch.Tensor | None = None  # image share of the denoiser's first conv
    cal_logits: torch.Tensor | None = None

    def repeat(self, members: int) -> ConditionFeatures:
        """Tile for ``members`` ensemble members laid out member-major (row e·B + b)."""
        if members == 1:
            return self

        def tile(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.repeat(members, *([1] * (x.dim() - 1)))

        return ConditionFeatures({k: tile(v) for k, v in self.terms.items()}, tile(self.image_in),
                                 tile(self.cal_logits))


def _block(cin: int, cout: int, dropout: float, norm: str) -> Convolution:
    return Convolution(2, cin, cout, kernel_size=3, adn_ordering="DNA", act=("leakyrelu", {"negative_slope": 0.01}),
                       norm=norm, dropout=dropout or None, dropout_dim=2)


class ConditionEncoder(nn.Module):
    """Image → ``ConditionFeatures`` for the denoiser stages in ``denoiser_channels``."""

    def __init__(self, in_channels: int, out_channels: int, base: int, max_channels: int, stages: int,
                 denoiser_channels: dict[int, int], mode: str, dropout: float = 0.0, norm: str = "instance",
                 image_in_channels: int | None = None, cal_head: bool = False) -> None:
        super().__init__()
        if denoiser_channels and max(denoiser_channels) >= stages:
            raise ValueError(f"fusion stages {sorted(denoiser_channels)} need ≥ {max(denoiser_channels) + 1} "
                             f"condition stages, got {stages}")
        # Without a calibration head, stages deeper than the last fusion stage would be dead weight.
        built = stages if cal_head else (max(denoiser_channels) + 1 if denoiser_channels else 0)
        widths = [min(base * 2**k, max_channels) for k in range(built)]
        self.stages = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.stages.append(nn.Sequential(_block(cin, w, dropout, norm), _block(w, w, dropout, norm)))
            cin = w
        self.terms = nn.ModuleDict({str(k): ImageTerm(widths[k], c, mode) for k, c in denoiser_channels.items()})
        self.image_in = nn.Conv2d(in_channels, image_in_channels, 3, padding=1, bias=False) \
            if image_in_channels else None
        self.cal = nn.Conv2d(sum(widths), out_channels, 1) if cal_head else None

    def forward(self, image: torch.Tensor) -> ConditionFeatures:
        feats, h = [], image
        for k, stage in enumerate(self.stages):
            h = stage(F.max_pool2d(h, 2) if k else h)
            feats.append(h)
        out = ConditionFeatures(terms={int(k): term(feats[int(k)]) for k, term in self.terms.items()})
        if self.image_in is not None:
            out.image_in = self.image_in(image)
        if self.cal is not None:
            size = image.shape[-2:]
            up = [F.interpolate(f, size=size, mode="bilinear", align_corners=False) if f.shape[-2:] != size else f
                  for f in feats]
            out.cal_logits = self.cal(torch.cat(up, 1))
        return out
