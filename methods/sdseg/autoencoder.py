"""The mask autoencoder (MONAI ``AutoencoderKL``): build, mask codec, stage-1 loss (weights files: ae_weights.py).

Masks are binary images replicated to 3 channels in {-1, +1} (SDSeg feeds them to an RGB KL-f8
autoencoder); a decoded mask becomes a probability by (x + 1) / 2, clamp, channel mean.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import AutoencoderKL

from segarena.methods.common.ensemble import to_prob, to_signed

MASK_CHANNELS = 3


def build_autoencoder(hp: dict[str, Any]) -> AutoencoderKL:
    """KL autoencoder with downsampling factor 2^(levels-1); attention only in the mid block if asked."""
    levels = len(hp["ae_channels"])
    return AutoencoderKL(
        spatial_dims=2, in_channels=MASK_CHANNELS, out_channels=MASK_CHANNELS,
        channels=tuple(hp["ae_channels"]), num_res_blocks=(hp["ae_res_blocks"],) * levels,
        attention_levels=(False,) * levels, latent_channels=hp["latent_channels"],
        norm_num_groups=hp["ae_norm_groups"],
        with_encoder_nonlocal_attn=hp["ae_attention"], with_decoder_nonlocal_attn=hp["ae_attention"],
    )


def masks_to_ae_input(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) binary masks → (N, 3, H, W) in {-1, +1}."""
    return to_signed(masks)[:, None].expand(-1, MASK_CHANNELS, -1, -1).contiguous()


def ae_output_to_probs(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) decoded masks → (N, H, W) foreground probability (channel mean)."""
    return to_prob(x).mean(1)


def ae_loss(ae: torch.nn.Module, x: torch.Tensor, kl_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Stage 1: L1 reconstruction + kl_weight · KL(q(z|x) ‖ N(0, I)). Calls ``ae`` itself so DDP syncs."""
    recon, mu, sigma = ae(x)
    rec = (recon - x).abs().mean()
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-8) - 1).sum((1, 2, 3)).mean()
    loss = rec + kl_weight * kl
    return loss, {"ae/loss": loss.item(), "ae/l1": rec.item(), "ae/kl": kl.item()}
