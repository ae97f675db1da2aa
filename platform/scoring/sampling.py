"""Sampling a budget grid for the evaluation: seeds per batch and per repeat, the contract checks on every
output, and smaller ensembles fused from prefixes of one draw.

Budgets sharing sampler and steps are sampled once, at their largest ensemble; each smaller ensemble is
scored on the first members of that draw, fused by the plugin's ``fuse`` (members are independent, so a
prefix is a valid smaller ensemble). Prefix scoring is used only when ``fuse`` reproduces the method's own
fused output on the full draw; otherwise every size is sampled on its own. Reported nfe stays
steps × size. ``predict_as_evaluated`` replays the same batches and seeds for ``segarena predict``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from segarena.platform.dataset import Case
from segarena.platform.errors import PluginError
from segarena.platform.plugin import Budget, MethodPlugin, Prediction, Task
from segarena.platform.scoring.checks import PredictionError, check_prediction, count_denoiser_calls

REPEAT_SEED_STRIDE = 7919  # repeat r > 0 samples with seed + r·stride (repeat 0 is the reported evaluation)


class EvaluationError(PluginError, RuntimeError):
    """The method's output breaks the contract (NaN, wrong shape, wrong nfe): the cell fails, never ranks.
    Still a RuntimeError for code written when it was one."""


def batches(cases: Sequence[Case], size: int) -> list[list[Case]]:
    return [list(cases[i:i + size]) for i in range(0, len(cases), size)]


def repeat_seed(seed: int, repeat: int) -> int:
    """The sampling seed of stability repeat ``repeat`` (0 = the cell's seed)."""
    return seed if repeat == 0 else seed + REPEAT_SEED_STRIDE * repeat


def batch_seed(seed: int, index: int) -> int:
    """The generator seed of batch ``index`` of an evaluation pass: every batch starts from its own state,
    so a batch's members do not depend on how many members earlier batches drew (prefixes stay exact)."""
    return (seed * 1_000_003 + index) % 2**63


def check_output(method: MethodPlugin, out: Prediction, budget: Budget, images: torch.Tensor, task: Task) -> None:
    """Shapes of the task and finite probabilities, or an ``EvaluationError`` naming the method and budget."""
    expect = (images.shape[0], task.num_classes, *images.shape[-2:])
    if tuple(out.mask.shape) != expect:
        raise EvaluationError(f"{method.name}: mask shape {tuple(out.mask.shape)}, expected {expect}")
    if tuple(out.probs.shape) != expect:
        raise EvaluationError(f"{method.name}: probs shape {tuple(out.probs.shape)}, expected {expect} "
                              f"({budget.name})")
    if not torch.isfinite(out.probs).all():
        raise EvaluationError(f"{method.name}: NaN or inf in predicted probabilities ({budget.name})")
    for name in ("members", "member_probs"):
        t = getattr(out, name)
        if t is not None and tuple(t.shape[1:]) != expect:
            raise EvaluationError(f"{method.name}: {name} shape {tuple(t.shape)}, expected (E, *{expect})")
    if out.member_probs is not None and not torch.isfinite(out.member_probs).all():
        raise EvaluationError(f"{method.name}: NaN or inf in member probabilities ({budget.name})")


def _verified(method: MethodPlugin, out: Prediction, budget: Budget, counted: float, images: torch.Tensor,
              task: Task) -> None:
    """The contract checks of platform/scoring/checks.py: counted nfe = reported nfe, probabilities in [0, 1],
    binary masks, shapes; a breach fails the cell with one line (it is never ranked)."""
    try:
        check_prediction(out, budget, counted, images, task.num_classes)
    except PredictionError as exc:
        raise EvaluationError(f"{method.name}: {exc}") from exc
    check_output(method, out, budget, images, task)


@dataclass(frozen=True)
class Output:
    """One budget's prediction for one batch, on CPU."""

    probs: torch.Tensor
    mask: torch.Tensor
    members: torch.Tensor | None
    member_probs: torch.Tensor | None


def _cpu(out: Prediction) -> Output:
    return Output(out.probs.detach().float().cpu(), out.mask.detach().bool().cpu(),
                  None if out.members is None else out.members.detach().bool().cpu(),
                  None if out.member_probs is None else out.member_probs.detach().float().cpu())


class Sink(Protocol):
    """Where one budget's batch outputs go (the evaluation's scorer)."""

    def add(self, batch: Sequence[Case], out: Output) -> None: ...


def _fuse_reproduces(method: MethodPlugin, out: Prediction, top: Budget) -> bool:
    """Whether the plugin's ``fuse`` on all members gives back exactly its own fused output."""
    if out.member_probs is None or out.members is None or out.member_probs.shape[0] != top.ensemble:
        return False
    try:
        probs, mask = method.fuse(out.member_probs)
    except NotImplementedError:
        return False
    return (tuple(mask.shape) == tuple(out.mask.shape) and torch.equal(mask.bool(), out.mask.bool())
            and torch.equal(probs.float(), out.probs.float()))


def prefix_prediction(method: MethodPlugin, out: Prediction, size: int, nfe: int) -> Prediction:
    """The prediction of an ensemble of the first ``size`` members of ``out``, fused by ``method.fuse``."""
    member_probs = out.member_probs[:size]
    probs, mask = method.fuse(member_probs)
    return Prediction(probs=probs, mask=mask.bool(), nfe=nfe, members=out.members[:size], member_probs=member_probs)


def budget_groups(budgets: Sequence[Budget]) -> list[tuple[Budget, list[Budget]]]:
    """(largest budget, the smaller ensembles of the same sampler and steps), in first-seen order."""
    by_key: dict[tuple[str, int], list[Budget]] = {}
    for b in budgets:
        by_key.setdefault((b.sampler, b.steps), []).append(b)
    out = []
    for group in by_key.values():
        top = max(group, key=lambda b: b.ensemble)
        out.append((top, [b for b in group if b is not top]))
    return out


def sample(method: MethodPlugin, cases: Sequence[Case], top: Budget, derived: Sequence[Budget], task: Task,
           device: torch.device, seed: int, batch_size: int, sinks: Mapping[str, Sink]) -> tuple[dict[str, int], bool]:
    """One pass over ``cases`` predicting ``top`` (batch i sampled from ``batch_seed(seed, i)``); ``derived``
    budgets are fused from prefixes of its members.

    Returns the reported nfe per budget and whether prefix scoring held on every batch (if not, the
    caller discards the derived sinks and samples those budgets on their own).
    """
    method.eval()
    nfe: dict[str, int] = {}
    prefix_ok = bool(derived)
    with count_denoiser_calls(method) as counter, torch.inference_mode():
        for index, batch in enumerate(batches(cases, batch_size)):
            images = torch.stack([c.image for c in batch]).to(device)
            counter.reset()
            out = method.predict(images, top, torch.Generator(device=device).manual_seed(batch_seed(seed, index)))
            counted = counter.per_image(images.shape[0])  # the harness counts what it ranks
            _verified(method, out, top, counted, images, task)
            nfe[top.name] = out.nfe
            sinks[top.name].add(batch, _cpu(out))
            prefix_ok = prefix_ok and _fuse_reproduces(method, out, top)
            if not prefix_ok:
                continue
            for b in derived:
                sub = prefix_prediction(method, out, b.ensemble, out.nfe * b.ensemble // top.ensemble)
                _verified(method, sub, b, counted * b.ensemble / top.ensemble, images, task)
                nfe[b.name] = sub.nfe
                sinks[b.name].add(batch, _cpu(sub))
    return nfe, prefix_ok


def predict_as_evaluated(method: MethodPlugin, images: torch.Tensor, budget: Budget, seed: int, batch_size: int,
                         members_from: Budget | None = None, device: torch.device | None = None,
                         on_batch: Callable[[], None] | None = None) -> torch.Tensor:
    """The hard masks (N, C, H, W) ``evaluate`` stored for ``images`` (N, Cin, H, W) in test order: same
    batches and per-batch seeds; a budget scored on a prefix (its ``members_from`` tag, as a Budget) is
    drawn at that size and fused from the first ``budget.ensemble`` members. For ``segarena predict``."""
    device = device or images.device
    source = members_from or budget
    method.eval()
    masks = []
    with torch.inference_mode():
        for index, start in enumerate(range(0, len(images), batch_size)):
            batch = images[start:start + batch_size].to(device)
            out = method.predict(batch, source, torch.Generator(device=device).manual_seed(batch_seed(seed, index)))
            if source.ensemble != budget.ensemble:
                out = prefix_prediction(method, out, budget.ensemble, out.nfe * budget.ensemble // source.ensemble)
            masks.append(out.mask.bool().cpu())
            if on_batch is not None:
                on_batch()
    return torch.cat(masks)
