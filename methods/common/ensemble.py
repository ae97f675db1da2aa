"""Mask scaling and ensemble fusion shared by the stochastic methods.

Diffusion methods denoise masks in [-1, 1]; members of an ensemble are fused into one hard
mask by the method (the harness never thresholds). Members arrive as (E, B, C, H, W).
"""

from __future__ import annotations

import torch

FUSIONS = ("mean", "majority", "staple")


def to_signed(mask: torch.Tensor) -> torch.Tensor:
    """{0,1} mask → [-1, 1] diffusion target."""
    return mask.float() * 2 - 1


def to_prob(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] sample → foreground probability in [0, 1]."""
    return ((x.clamp(-1, 1) + 1) / 2).float()


def fuse(member_probs: torch.Tensor, how: str = "mean", threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Fuse (E, B, C, H, W) member probabilities → (probs, hard mask), each (B, C, H, W)."""
    if how not in FUSIONS:
        raise ValueError(f"fusion {how!r} not in {FUSIONS}")
    hard = member_probs > threshold
    if how == "mean":
        probs = member_probs.mean(0)
        return probs, probs > threshold
    if how == "majority":
        probs = hard.float().mean(0)
        return probs, probs > 0.5
    probs = staple(hard)
    return probs, probs > 0.5


def staple(members: torch.Tensor, iterations: int = 20) -> torch.Tensor:
    """Binary STAPLE (Warfield et al. 2004) per image and class: EM over member sensitivity p and
    specificity q; returns the posterior foreground probability (B, C, H, W)."""
    d = members.float()  # (E, B, C, H, W)
    e = d.shape[0]
    dims = (-2, -1)
    w = d.mean(0)  # initial posterior
    prior = w.mean(dims, keepdim=True).clamp(1e-6, 1 - 1e-6)
    p = torch.full((e, *w.shape[:-2], 1, 1), 0.99, dtype=d.dtype, device=d.device)
    q = p.clone()
    for _ in range(iterations):
        fg = prior * torch.prod(torch.where(d > 0, p, 1 - p), 0)
        bg = (1 - prior) * torch.prod(torch.where(d > 0, 1 - q, q), 0)
        w = fg / (fg + bg).clamp_min(1e-12)
        p = ((w * d).sum(dims, keepdim=True) / w.sum(dims, keepdim=True).clamp_min(1e-12)).clamp(1e-6, 1 - 1e-6)
        q = (((1 - w) * (1 - d)).sum(dims, keepdim=True)
             / (1 - w).sum(dims, keepdim=True).clamp_min(1e-12)).clamp(1e-6, 1 - 1e-6)
    return w
