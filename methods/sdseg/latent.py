"""Latent diffusion pieces: the denoiser, SDSeg's noise schedule, the clean-latent estimate and samplers.

The denoiser input is [z_t, c] (noisy latent first, then the condition latent), as in SDSeg's
``conditioning_key: concat``. Single-step inference runs one ε prediction at t = T - 1 from pure
noise and keeps the estimated clean latent. Multi-step samplers (``SAMPLERS``): ``ddim`` (η = 0,
deterministic), ``ancestral`` (DDIM with η = 1, the official code's multi-step sampler), both on
the shared strided DDIM grid, and diffusers' ``dpmpp2m`` / ``unipc`` ODE solvers on the same betas.
No clipping anywhere: latents are not bounded to [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler

from segarena.methods.common.ddim import StridedDDIMScheduler, ddim_sample
from segarena.methods.common.ode_samplers import ODE_SAMPLERS, ode_sample

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z_t, t) → ε̂, condition bound in
DDIM_ETA = {"ddim": 0.0, "ancestral": 1.0}
SAMPLERS = ("direct", *DDIM_ETA, *ODE_SAMPLERS)


def build_denoiser(hp: dict[str, Any], latent_channels: int, num_classes: int) -> DiffusionModelUNet:
    """LDM UNet on [z_t, c]; class embeddings only when one model serves several classes."""
    levels = len(hp["unet_channels"])
    heads = hp["unet_head_channels"]
    return DiffusionModelUNet(
        spatial_dims=2, in_channels=2 * latent_channels, out_channels=latent_channels,
        channels=tuple(hp["unet_channels"]), num_res_blocks=(hp["unet_res_blocks"],) * levels,
        attention_levels=tuple(hp["unet_attention"]),
        num_head_channels=tuple(heads) if isinstance(heads, list) else heads,
        norm_num_groups=hp["unet_norm_groups"], resblock_updown=hp["unet_resblock_updown"],
        num_class_embeds=num_classes if num_classes > 1 else None,
    )


def schedule_args(hp: dict[str, Any]) -> dict[str, Any]:
    """SDSeg's schedule: T = 1000, betas = linspace(√0.0015, √0.0155)², ε-prediction, no clipping
    (latents are not bounded to [-1, 1])."""
    return {"num_train_timesteps": hp["num_train_timesteps"], "schedule": "scaled_linear_beta",
            "beta_start": hp["beta_start"], "beta_end": hp["beta_end"], "prediction_type": "epsilon",
            "clip_sample": False}


def build_scheduler(hp: dict[str, Any]) -> DDPMScheduler:
    return DDPMScheduler(**schedule_args(hp))


def estimate_clean_latent(alphas_cumprod: torch.Tensor, z_t: torch.Tensor, eps: torch.Tensor,
                          t: torch.Tensor) -> torch.Tensor:
    """ẑ0 = (z_t - √(1 - ᾱ_t)·ε̂) / √ᾱ_t, per sample; differentiable in ε̂ (the latent loss needs it)."""
    a = alphas_cumprod.to(device=z_t.device, dtype=z_t.dtype)[t].view(-1, *([1] * (z_t.dim() - 1)))
    return (z_t - (1 - a).sqrt() * eps) / a.sqrt()


def sample_direct(denoise: Denoise, z_T: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """SDSeg's single reverse step: ε̂ at t = T - 1 on pure noise, return ẑ0 (one denoiser pass)."""
    t = torch.full((z_T.shape[0],), len(alphas_cumprod) - 1, device=z_T.device, dtype=torch.long)
    return estimate_clean_latent(alphas_cumprod, z_T, denoise(z_T, t), t)


def sample_multistep(denoise: Denoise, z_T: torch.Tensor, hp: dict[str, Any], sampler: str, steps: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``steps`` denoiser passes with one of the multi-step samplers; ``generator`` (on ``z_T``'s
    device) draws the ancestral noise."""
    if sampler in DDIM_ETA:
        scheduler = StridedDDIMScheduler(**schedule_args(hp))
        return ddim_sample(denoise, z_T, scheduler, steps, eta=DDIM_ETA[sampler], generator=generator)
    if sampler in ODE_SAMPLERS:
        return ode_sample(denoise, z_T, sampler, steps, build_scheduler(hp).betas, clip_x0=False)
    raise ValueError(f"sdseg: unknown sampler {sampler!r} {SAMPLERS}")
