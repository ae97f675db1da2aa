"""Dynamic conditional encoding (MedSegDiff §2.1) split into its x_t-free and x_t-dependent halves.

Paper:          A(m_I, m_x) = (LN(m_I) ⊙ LN(FFP(m_x))) ⊙ m_I, rewritten as [LN(m_I) ⊙ m_I] ⊙ LN(FFP(m_x)).
Official gate:  A = m_I · conv1x1→1(h) · GAP(h), h = FFP(conv1x1(m_x))  (official V1 highway, l.2460-2502).
The bracketed image term depends only on the image, so ``ImageTerm`` runs once per sample inside the
condition branch; ``Fusion`` (inside the denoiser) runs every step. Our reading of E^I + E^x: the
result is added to the denoiser's encoder features at that stage. Every layer is built in ``__init__``.
"""

from __future__ import annotations

import torch
from torch import nn

from segarena.methods.medsegdiff.ffparser import FFParser

CONDITIONINGS = ("paper", "official_gate")


def _check(mode: str) -> None:
    if mode not in CONDITIONINGS:
        raise ValueError(f"conditioning {mode!r} not in {CONDITIONINGS}")


class ImageTerm(nn.Module):
    """Condition features at one stage → the image factor of the fusion, at the denoiser's width."""

    def __init__(self, cond_channels: int, channels: int, mode: str) -> None:
        super().__init__()
        _check(mode)
        self.proj = nn.Conv2d(cond_channels, channels, 1)
        self.norm = nn.GroupNorm(1, channels) if mode == "paper" else None  # learnable LN over (C, H, W)

    def forward(self, m_i: torch.Tensor) -> torch.Tensor:
        m_i = self.proj(m_i)
        return self.norm(m_i) * m_i if self.norm is not None else m_i


class Fusion(nn.Module):
    """The x_t-dependent half: FF-Parser on the denoiser features, then the paper product or the gate."""

    def __init__(self, channels: int, height: int, width: int, mode: str, ffparser_init: str) -> None:
        super().__init__()
        _check(mode)
        self.mode = mode
        self.ffparser = FFParser(channels, height, width, ffparser_init)
        if mode == "paper":
            self.norm = nn.GroupNorm(1, channels)
        else:
            self.squeeze = nn.Conv2d(channels, channels, 1)
            self.gate = nn.Conv2d(channels, 1, 1)

    def forward(self, m_x: torch.Tensor, image_term: torch.Tensor) -> torch.Tensor:
        if self.mode == "paper":
            return m_x + image_term * self.norm(self.ffparser(m_x))
        h = self.ffparser(self.squeeze(m_x))
        return m_x + image_term * self.gate(h) * h.mean((-2, -1), keepdim=True)
