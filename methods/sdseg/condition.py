"""SDSeg's trainable condition encoder (official ``AEEncoderEmbedder``).

A copy of the mask autoencoder's encoder, initialised from it once stage 1 ends, followed by a
new random 1x1 convolution to the latent channels; deterministic (no sampling, no scale factor).
Its output is concatenated after the noisy latent.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ConditionEncoder(nn.Module):
    """Image (B, Cin, H, W) → condition latent (B, latent_channels, h, w)."""

    def __init__(self, ae_encoder: nn.Module, in_channels: int, latent_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(ae_encoder)
        first = self.encoder.blocks[0].conv
        self.mask_in_channels = first.in_channels
        if in_channels != first.in_channels:  # grey or multi-modal images: new first conv, weights set by init_from
            self.encoder.blocks[0].conv = nn.Conv2d(in_channels, first.out_channels, first.kernel_size,
                                                    first.stride, first.padding)
        out_channels = self.encoder.blocks[-1].conv.out_channels
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Conv2d(out_channels, latent_channels, kernel_size=1)

    @torch.no_grad()
    def init_from(self, ae_encoder: nn.Module) -> None:
        """Copy the (trained) autoencoder encoder in place, so optimizer state keeps pointing at our params.

        A first conv over a different channel count gets the mask conv's weights summed over its
        input channels and spread evenly: the image's channel mean then plays the role of a mask."""
        for ours, theirs in zip(self.encoder.state_dict().values(), ae_encoder.state_dict().values(),
                                    strict=True):
            if ours.shape == theirs.shape:
                ours.copy_(theirs)
            else:
                cin = ours.shape[1]
                ours.copy_(theirs.sum(1, keepdim=True).expand_as(ours) / cin)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(self.encoder(image)))
