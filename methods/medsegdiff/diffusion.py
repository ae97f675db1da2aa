"""Gaussian diffusion on MONAI's schedulers: linear β scaled to T (as the official code), ε-prediction.

Samplers get ε and return the sample (never the model output). DDPM runs all T steps (MONAI's DDPM
step always steps t → t-1, so a shorter DDPM chain would be wrong: refused). DDIM (η = 0) uses the
shared ``StridedDDIMScheduler`` (timesteps T-1, T-1-s, …, s-1 with s = T/k, the stride MONAI's
``step`` assumes). ``dpmpp2m`` / ``unipc`` are diffusers' DPM-Solver++ 2M and UniPC on the same
training betas and timestep grid, x̂0 clipped to [-1, 1] like DDIM; one denoiser pass per step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from segarena.methods.common.ddim import StridedDDIMScheduler
from segarena.methods.common.ode_samplers import ODE_SAMPLERS, ode_sample
from segarena.platform.plugin import Budget

SAMPLERS = ("ddim", "ddpm", *ODE_SAMPLERS)


def schedule_args(timesteps: int) -> dict:
    """Linear β from 1e-4 to 0.02, rescaled by 1000/T (official) so that ᾱ_T ≈ 0; β_T ≤ 0.4 needs T ≥ 50."""
    if timesteps < 50:
        raise ValueError(f"timesteps {timesteps} < 50: the rescaled linear β would reach {20 / timesteps:.2f}")
    scale = 1000 / timesteps
    return {"schedule": "linear_beta", "beta_start": 1e-4 * scale, "beta_end": 0.02 * scale}


def training_scheduler(timesteps: int) -> DDPMScheduler:
    return DDPMScheduler(timesteps, **schedule_args(timesteps))


def sampling_scheduler(budget: Budget, timesteps: int) -> DDPMScheduler | DDIMScheduler:
    if budget.sampler == "ddim":
        scheduler = StridedDDIMScheduler(timesteps, **schedule_args(timesteps))
    elif budget.sampler == "ddpm":
        if budget.steps != timesteps:
            raise ValueError(f"DDPM samples all T = {timesteps} steps, budget asks {budget.steps}; use DDIM")
        scheduler = DDPMScheduler(timesteps, **schedule_args(timesteps))
    else:
        raise ValueError(f"sampler {budget.sampler!r} not in {SAMPLERS}")
    scheduler.set_timesteps(budget.steps)
    return scheduler


def sample(denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor, budget: Budget,
           timesteps: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Run the reverse chain from ``noise``; ``denoise(x_t, t)`` returns ε̂. Returns the final sample."""
    if budget.sampler in ODE_SAMPLERS:
        return ode_sample(denoise, noise, budget.sampler, budget.steps, training_scheduler(timesteps).betas,
                          clip_x0=True)
    scheduler = sampling_scheduler(budget, timesteps)
    x = noise
    for t in scheduler.timesteps.tolist():
        eps = denoise(x, torch.full((1,), t, device=x.device, dtype=torch.long))
        if budget.sampler == "ddim":
            x, _ = scheduler.step(eps, t, x, eta=0.0)
        else:
            x, _ = scheduler.step(eps, t, x, generator=generator)
    return x
