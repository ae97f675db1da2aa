"""cDAL spatial attention: channel-mean of one discriminator feature map, upsampled to the mask.

Released code uses the raw map (``none``: unbounded, can be negative); ``sigmoid`` and ``minmax``
(per image to [0, 1]) are the normalisation switches. The map weights the clean mask before it is
re-noised into the generator's training input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ATTN_NORMS = ("none", "sigmoid", "minmax")


def spatial_attention(features: list[torch.Tensor], level: int, size: tuple[int, int],
                      norm: str = "none") -> torch.Tensor:
    """(B, 1, H, W) map from ``features[level]`` (bilinear to ``size``), normalised per ``norm``."""
    if norm not in ATTN_NORMS:
        raise ValueError(f"attn_norm {norm!r} not in {ATTN_NORMS}")
    if not 0 <= level < len(features):
        raise ValueError(f"attn_level {level} outside the discriminator's {len(features)} feature levels")
    attn = F.interpolate(features[level].float().mean(1, keepdim=True), size=size, mode="bilinear",
                         align_corners=False)
    if norm == "sigmoid":
        return attn.sigmoid()
    if norm == "minmax":
        lo = attn.amin((2, 3), keepdim=True)
        hi = attn.amax((2, 3), keepdim=True)
        return (attn - lo) / (hi - lo).clamp_min(1e-8)
    return attn
