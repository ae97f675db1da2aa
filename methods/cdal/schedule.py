"""Discretised variance-preserving schedule of DDGAN/cDAL (few steps, x0-parameterised).

Indices follow the official code: ``q_sample(x0, t)`` gives x_t for t ∈ [0, T); a pair adds one
forward step to x_{t+1}; ``posterior_sample(x̂0, x_{t+1}, t)`` draws x_t from q(x_t | x_{t+1}, x̂0)
and adds no noise at t = 0. Coefficients are float32 tensors moved to the sample's device on use,
so the schedule needs no ``nn.Module`` for the harness to move.
"""

from __future__ import annotations

import torch

EPS_T = 1e-3  # smallest continuous time, as released


def randn(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise drawn on the generator's device (seeded sampling), moved to ``like``."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def _at(coef: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return coef.to(x.device, x.dtype)[t.to(x.device)].view(-1, *([1] * (x.dim() - 1)))


class VPSchedule:
    """β_k from the continuous VP-SDE evaluated at T + 1 points (β_0 = 1e-8 prepended)."""

    def __init__(self, steps: int, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.steps = steps
        t = torch.arange(steps + 1, dtype=torch.float64) / steps * (1 - EPS_T) + EPS_T
        var = 1 - torch.exp(-0.5 * t**2 * (beta_max - beta_min) - t * beta_min)
        alpha_bar = 1 - var
        betas = torch.cat([torch.tensor([1e-8], dtype=torch.float64), 1 - alpha_bar[1:] / alpha_bar[:-1]])
        # forward chain, indexed 0..T
        self.a = (1 - betas).sqrt().float()
        self.sigma = betas.sqrt().float()
        a_cum = (1 - betas).sqrt().cumprod(0)
        self.a_cum = a_cum.float()
        self.sigma_cum = (1 - a_cum**2).sqrt().float()
        # posterior q(x_t | x_{t+1}, x0), indexed 0..T-1 (the 1e-8 step dropped)
        b = betas[1:]
        abar = (1 - b).cumprod(0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        var_post = b * (1 - abar_prev) / (1 - abar)
        self.post_c0 = (b * abar_prev.sqrt() / (1 - abar)).float()
        self.post_ct = ((1 - abar_prev) * (1 - b).sqrt() / (1 - abar)).float()
        self.post_logvar = var_post.clamp(min=1e-20).log().float()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        noise = randn(x0.shape, x0, generator) if noise is None else noise
        return _at(self.a_cum, t, x0) * x0 + _at(self.sigma_cum, t, x0) * noise

    def q_sample_pairs(self, x0: torch.Tensor, t: torch.Tensor,
                       noise: tuple[torch.Tensor, torch.Tensor] | None = None,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, x_{t+1}): x_t from the marginal, then one forward step."""
        if noise is None:
            noise = (randn(x0.shape, x0, generator), randn(x0.shape, x0, generator))
        x_t = self.q_sample(x0, t, noise[0])
        return x_t, _at(self.a, t + 1, x0) * x_t + _at(self.sigma, t + 1, x0) * noise[1]

    def posterior_sample(self, x0: torch.Tensor, x_next: torch.Tensor, t: torch.Tensor,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """x_t ~ q(x_t | x_{t+1}, x̂0), clipped log-variance, deterministic at t = 0."""
        mean = _at(self.post_c0, t, x0) * x0 + _at(self.post_ct, t, x0) * x_next
        noisy = (t.to(x0.device) > 0).to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        return mean + noisy * (0.5 * _at(self.post_logvar, t, x0)).exp() * randn(x0.shape, x0, generator)
