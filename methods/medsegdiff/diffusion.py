"""Gaussian diffusion on MONAI's schedulers: linear β scaled to T (as the official code), ε-prediction.

Samplers get ε and return the sample (never the model output). DDPM runs all T steps (MONAI's DDPM
step always steps t → t-1, so a shorter DDPM chain would be wrong: refused). DDIM (η = 0) uses
evenly spaced "trailing" timesteps T-1, T-1-s, …, s-1 with s = T/k, which is exactly the stride
MONAI's ``DDIMScheduler.step`` assumes (its own linspace spacing disagrees with that stride).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from segarena.platform.plugin import Budget

SAMPLERS = ("ddim", "ddpm")


def schedule_args(timesteps: int) -> dict:
    """Linear β from 1e-4 to 0.02, rescaled by 1000/T (official) so that ᾱ_T ≈ 0; β_T ≤ 0.4 needs T ≥ 50."""
    if timesteps < 50:
        raise ValueError(f"timesteps {timesteps} < 50: the rescaled linear β would reach {20 / timesteps:.2f}")
    scale = 1000 / timesteps
    return {"schedule": "linear_beta", "beta_start": 1e-4 * scale, "beta_end": 0.02 * scale}


class StridedDDIMScheduler(DDIMScheduler):
    """DDIM with timesteps consistent with ``step``'s stride T // k; k must divide T."""

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        if not 0 < num_inference_steps <= self.num_train_timesteps or self.num_train_timesteps % num_inference_steps:
            raise ValueError(f"DDIM steps {num_inference_steps} must divide T = {self.num_train_timesteps}")
        self.num_inference_steps = num_inference_steps
        stride = self.num_train_timesteps // num_inference_steps
        self.timesteps = self.num_train_timesteps - 1 - torch.arange(num_inference_steps, device=device) * stride


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
    scheduler = sampling_scheduler(budget, timesteps)
    x = noise
    for t in scheduler.timesteps.tolist():
        eps = denoise(x, torch.full((1,), t, device=x.device, dtype=torch.long))
        if budget.sampler == "ddim":
            x, _ = scheduler.step(eps, t, x, eta=0.0)
        else:
            x, _ = scheduler.step(eps, t, x, generator=generator)
    return x
