"""Exponential moving average of parameters, kept as plain tensors (not a module, so the harness
never wraps or moves it) and used at inference through ``torch.func.functional_call``.
Shared by the diffusion methods whose papers sample from EMA weights (SDSeg, MedSegDiff)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call


class ParamEMA:
    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.shadow: dict[str, dict[str, torch.Tensor]] = {}

    @property
    def enabled(self) -> bool:
        return self.decay > 0

    @torch.no_grad()
    def update(self, modules: dict[str, nn.Module]) -> None:
        for key, module in modules.items():
            params = dict(module.named_parameters())
            if key not in self.shadow:
                self.shadow[key] = {n: p.detach().clone() for n, p in params.items()}
                continue
            for n, p in params.items():
                s = self.shadow[key][n]
                if s.device != p.device:
                    s = self.shadow[key][n] = s.to(p.device)
                s.lerp_(p.detach(), 1 - self.decay)

    def params(self, key: str, module: nn.Module) -> dict[str, torch.Tensor] | None:
        """The averaged parameters of ``module`` on its device, or None before the first update."""
        if not self.enabled or key not in self.shadow:
            return None
        device = next(module.parameters()).device
        return {n: s.to(device) for n, s in self.shadow[key].items()}

    def model(self, key: str, module: nn.Module) -> Callable[..., Any]:
        """``module`` itself, or a callable that runs it with the averaged parameters (forward hooks,
        such as the conformance nfe counter, still fire)."""
        params = self.params(key, module)
        if params is None:
            return module
        return lambda *args, **kwargs: functional_call(module, params, args, kwargs)

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        return {k: {n: s.detach().cpu().clone() for n, s in v.items()} for k, v in self.shadow.items()}

    def load(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        self.shadow = {k: {n: s.clone() for n, s in v.items()} for k, v in state.items()}
