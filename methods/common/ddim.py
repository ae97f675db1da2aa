"""DDIM on MONAI's scheduler with timesteps that agree with its step stride (MedSegDiff and SDSeg).

MONAI's ``DDIMScheduler.set_timesteps`` spaces k timesteps by ``linspace(T-1, 0, k)``, while its
``step`` always moves from t to t - T//k. The two disagree: at T = 1000, k = 10 the model is told
t = 888 for a latent that is at level 899 after the first step, and the last call is at t = 0.
``StridedDDIMScheduler`` uses the "trailing" grid T-1, T-1-s, ..., s-1 with s = T/k instead,
exactly the grid ``step`` assumes (k must divide T). The chain starts at t = T-1 on pure noise,
where single-step SDSeg also starts, and ends at ᾱ = 1 (``set_alpha_to_one``).

With ``clip_sample`` (pixel-space masks in [-1, 1]) the ε that points back to x_t is recomputed from
the *clipped* x̂0, as guided-diffusion's DDIM does (MedSegDiff's official code base); MONAI's ``step``
pairs the clipped x̂0 with the raw ε̂, an inconsistent pair whose error grows with the number of steps.

η = 0 is deterministic DDIM; η = 1 adds the DDPM posterior noise at every step (the official SDSeg
sampler), which on the strided sub-chain is DDPM's ancestral step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.schedulers import DDIMScheduler

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t of shape (N,)) → ε̂


def strided_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """T-1, T-1-s, ..., s-1 with s = T / steps; steps must divide T."""
    if not 0 < steps <= num_train_timesteps or num_train_timesteps % steps:
        raise ValueError(f"DDIM steps {steps} must divide T = {num_train_timesteps}")
    stride = num_train_timesteps // steps
    return [num_train_timesteps - 1 - i * stride for i in range(steps)]


class StridedDDIMScheduler(DDIMScheduler):
    """DDIM with timesteps consistent with ``step``'s stride T // k; k must divide T."""

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.tensor(strided_timesteps(self.num_train_timesteps, num_inference_steps),
                                      dtype=torch.long, device=device)

    def step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor, eta: float = 0.0,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.clip_sample and self.prediction_type == "epsilon":
            a = self.alphas_cumprod[timestep].to(sample.device, sample.dtype)
            x0 = ((sample - (1 - a).sqrt() * model_output) / a.sqrt()).clamp(*self.clip_sample_values)
            model_output = (sample - a.sqrt() * x0) / (1 - a).sqrt()  # the ε of the clipped x̂0
        return super().step(model_output, timestep, sample, eta=eta, generator=generator)


def ddim_sample(denoise: Denoise, x_T: torch.Tensor, scheduler: StridedDDIMScheduler, steps: int, eta: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """``steps`` denoiser passes from ``x_T``; ``generator`` (on ``x_T``'s device) draws the η > 0 noise."""
    scheduler.set_timesteps(steps, device=x_T.device)
    x = x_T
    for t in scheduler.timesteps.tolist():
        eps = denoise(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long))
        x, _ = scheduler.step(eps, t, x, eta=eta, generator=generator)
    return x
