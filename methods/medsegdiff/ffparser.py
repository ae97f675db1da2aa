"""FF-Parser (MedSegDiff §2.2): a learnable complex filter on the 2D spectrum of a feature map.

m' = IFFT2(A ⊙ FFT2(m)) with real FFTs and ``norm="ortho"`` as in the official code. ``identity``
init (A = 1 + 0i, ours) starts as an exact pass-through; ``official`` init (randn·0.02) starts near
zero, i.e. the parser initially suppresses the x_t features it filters.
"""

from __future__ import annotations

import torch
from torch import nn

FFPARSER_INITS = ("identity", "official")


class FFParser(nn.Module):
    """Filters (B, C, H, W) features in frequency space; the weight is sized at construction."""

    def __init__(self, channels: int, height: int, width: int, init: str = "identity") -> None:
        super().__init__()
        if init not in FFPARSER_INITS:
            raise ValueError(f"ffparser_init {init!r} not in {FFPARSER_INITS}")
        shape = (channels, height, width // 2 + 1, 2)  # (real, imag) pairs, like torch.view_as_real
        if init == "identity":
            weight = torch.zeros(shape)
            weight[..., 0] = 1.0
        else:
            weight = torch.randn(shape) * 0.02
        self.weight = nn.Parameter(weight)
        self.size = (height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            raise ValueError(f"FFParser built for {self.size}, got {tuple(x.shape[-2:])}")
        dtype = x.dtype
        spectrum = torch.fft.rfft2(x.float(), dim=(-2, -1), norm="ortho")
        spectrum = spectrum * torch.view_as_complex(self.weight)
        return torch.fft.irfft2(spectrum, s=self.size, dim=(-2, -1), norm="ortho").to(dtype)
