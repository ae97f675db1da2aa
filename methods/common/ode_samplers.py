"""Fast ODE samplers for ε-prediction diffusion from diffusers: DPM-Solver++ 2M and UniPC.

Both are driven by the method's own training betas (``trained_betas``), use the same "trailing"
timestep grid as ``StridedDDIMScheduler`` (T-1, T-1-s, ..., so at equal steps only the solver
differs) and end at σ = 0. Each step calls the denoiser exactly once (UniPC's corrector reuses the
next step's model output), so nfe = steps. ``clip_x0`` clips the data prediction to [-1, 1]
(diffusers' dynamic thresholding with ``sample_max_value`` 1 is exactly that clip), as the
pixel-space methods' DDIM does; latent methods leave it off. diffusers is imported lazily: it
costs seconds and only these samplers need it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

ODE_SAMPLERS = ("dpmpp2m", "unipc")

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t of shape (N,)) → ε̂


def ode_scheduler(sampler: str, betas: torch.Tensor, clip_x0: bool) -> Any:
    """A fresh diffusers multistep scheduler (it keeps past model outputs: one per sampling run)."""
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    common = {"num_train_timesteps": len(betas), "trained_betas": betas.detach().double().cpu().numpy(),
              "prediction_type": "epsilon", "solver_order": 2, "thresholding": clip_x0, "sample_max_value": 1.0,
              "timestep_spacing": "trailing", "final_sigmas_type": "zero", "lower_order_final": True}
    if sampler == "dpmpp2m":
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_type="midpoint", **common)
    if sampler == "unipc":
        return UniPCMultistepScheduler(predict_x0=True, solver_type="bh2", **common)
    raise ValueError(f"ODE sampler {sampler!r} not in {ODE_SAMPLERS}")


def ode_sample(denoise: Denoise, x_T: torch.Tensor, sampler: str, steps: int, betas: torch.Tensor,
               clip_x0: bool = False) -> torch.Tensor:
    """``steps`` denoiser passes from pure noise ``x_T`` (``init_noise_sigma`` is 1 in this
    variance-preserving form); returns the sample at σ = 0."""
    if steps < 1:
        raise ValueError(f"{sampler}: steps must be >= 1, not {steps}")
    scheduler = ode_scheduler(sampler, betas, clip_x0)
    scheduler.set_timesteps(steps, device=x_T.device)
    x = x_T * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = denoise(x, torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long))
        x = scheduler.step(eps, t, x).prev_sample
    return x
