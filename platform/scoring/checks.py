"""What the harness checks itself instead of trusting a plugin: denoiser passes counted with a forward
hook, and the contract of a ``Prediction`` (shapes, finite probabilities in [0, 1], binary masks).

The conformance class (``segarena plugins check``) and the evaluation harness use the same rules, so a
plugin ranked on the leaderboard passed exactly the checks its author could run beforehand.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from segarena.platform.errors import PluginError
from segarena.platform.plugin import Budget, MethodPlugin, Prediction, unwrap


class PredictionError(PluginError, RuntimeError):
    """A prediction breaks the contract (wrong nfe, shape, range or dtype): the cell fails, never ranks.
    Still a RuntimeError for code written when it was one."""


@dataclass
class DenoiserCounter:
    """Rows that entered the denoiser since the last ``reset``: a batch of B images through one pass adds B,
    an ensemble of E members batched together adds E·B, so rows / images = passes per image."""

    name: str
    rows: int = 0
    calls: int = 0

    def reset(self) -> None:
        self.rows = self.calls = 0

    def per_image(self, images: int) -> float:
        """Denoiser passes per image of a ``predict`` call on ``images`` images."""
        return self.rows / images if images else 0.0


def _rows(args: tuple, kwargs: dict | None) -> int:
    """Rows of the first tensor argument of a forward call (positional first, then keyword)."""
    for a in list(args) + list((kwargs or {}).values()):
        if isinstance(a, torch.Tensor):
            return int(a.shape[0]) if a.dim() else 1
    raise PredictionError("the denoiser was called without a tensor argument: its passes cannot be counted")


def denoiser_module(method: MethodPlugin) -> torch.nn.Module:
    """The network whose forward passes count as nfe: the attribute the class names in ``denoiser``."""
    attr = getattr(type(method), "denoiser", None)
    if not isinstance(attr, str) or not attr:
        raise PluginError(f"method {method.name!r}: set the class attribute `denoiser` to the attribute name of "
                          "the network whose forward passes count as nfe")
    module = getattr(method, attr, None)
    if not isinstance(module, torch.nn.Module):
        raise PluginError(f"method {method.name!r}: denoiser {attr!r} is not an nn.Module attribute "
                          f"(got {type(module).__name__})")
    return unwrap(module)


@contextmanager
def count_denoiser_calls(method: MethodPlugin) -> Iterator[DenoiserCounter]:
    """Count the denoiser's rows while the block runs (a forward pre-hook, removed on exit whatever happens).
    Hooks fire through ``torch.func.functional_call`` too, so EMA sampling is counted."""
    module = denoiser_module(method)
    counter = DenoiserCounter(getattr(type(method), "denoiser", ""))

    def hook(_module: torch.nn.Module, args: tuple, kwargs: dict | None = None) -> None:
        counter.rows += _rows(args, kwargs)
        counter.calls += 1

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield counter
    finally:
        handle.remove()


def _is_binary(t: torch.Tensor) -> bool:
    if t.dtype == torch.bool:
        return True
    if t.is_floating_point() or t.is_complex():
        if not torch.isfinite(t).all():
            return False
    return bool(((t == 0) | (t == 1)).all())


def _probabilities(name: str, t: torch.Tensor, where: str) -> None:
    if not t.is_floating_point():
        raise PredictionError(f"{where}: {name} dtype {t.dtype} is not floating point")
    finite = torch.isfinite(t)
    if not finite.all():
        bad = int((~finite).sum())
        raise PredictionError(f"{where}: {name} hold {bad} NaN/inf value(s) of {t.numel()}")
    lo, hi = float(t.min()), float(t.max())
    if lo < 0 or hi > 1:
        raise PredictionError(f"{where}: {name} range [{lo:.4g}, {hi:.4g}] is outside [0, 1] "
                              "(probabilities, not logits)")


def check_prediction(pred: Prediction, budget: Budget, counted_nfe: float, images: torch.Tensor | int,
                     num_classes: int) -> None:
    """Raise ``PredictionError`` (one line naming the numbers) unless ``pred`` is a valid prediction of
    ``budget`` on ``images`` (the input batch, or its size): ``nfe`` equals the passes the harness counted
    (``counted_nfe``, per image), probs (B, C, H, W) finite in [0, 1], mask (B, C, H, W) bool or {0, 1},
    members / member_probs (E, B, C, H, W) under the same rules with E = ``budget.ensemble``."""
    where = f"budget {budget.name}"
    if not isinstance(pred, Prediction):
        raise PredictionError(f"{where}: predict returned {type(pred).__name__}, not a Prediction")
    if not isinstance(pred.nfe, int | float) or isinstance(pred.nfe, bool):
        raise PredictionError(f"{where}: nfe {pred.nfe!r} is not a number")
    if abs(float(pred.nfe) - float(counted_nfe)) > 1e-9:
        raise PredictionError(f"{where}: the plugin reports nfe {pred.nfe:g} but the harness counted "
                              f"{counted_nfe:g} denoiser pass(es) per image")
    if isinstance(images, torch.Tensor):
        expect: tuple[int, ...] = (images.shape[0], num_classes, *images.shape[-2:])
    else:
        expect = (int(images), num_classes)
    for name in ("probs", "mask"):
        t = getattr(pred, name)
        if not isinstance(t, torch.Tensor):
            raise PredictionError(f"{where}: {name} is {type(t).__name__}, not a tensor")
        if tuple(t.shape[:len(expect)]) != expect or t.dim() != 4:
            raise PredictionError(f"{where}: {name} shape {tuple(t.shape)}, expected {expect}")
    _probabilities("probs", pred.probs, where)
    if not _is_binary(pred.mask):
        raise PredictionError(f"{where}: mask dtype {pred.mask.dtype} holds values other than 0/1")
    for name in ("members", "member_probs"):
        t = getattr(pred, name)
        if t is None:
            continue
        members = (budget.ensemble, *expect)
        if not isinstance(t, torch.Tensor) or t.dim() != 5 or tuple(t.shape[:len(members)]) != members:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise PredictionError(f"{where}: {name} shape {shape}, expected {members}")
        if name == "members" and not _is_binary(t):
            raise PredictionError(f"{where}: members dtype {t.dtype} hold values other than 0/1")
        if name == "member_probs":
            _probabilities("member_probs", t, where)
