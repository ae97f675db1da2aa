"""Harness-side evaluation: run a method's ``predict`` on test cases per budget, score per case
(volumes re-assembled from slices), the diffusion-aware metrics, stability over sampling seeds, and timing.

Plugins never evaluate themselves: binarisation and fusion are theirs, scoring is ours.

Budgets sharing sampler and steps are sampled once, at their largest ensemble; each smaller ensemble is
scored on the first members of that draw, fused by the plugin's ``fuse`` (members are independent, so a
prefix is a valid smaller ensemble). Prefix scoring is used only when ``fuse`` reproduces the method's own
fused output on the full draw; otherwise every size is sampled on its own. Reported nfe stays
steps × size and latency is still timed per budget at batch 1. Scoring runs in a background thread
while the next batch predicts; the rows are the same as scored inline (tested).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from segarena.platform.dataset import Case
from segarena.platform.plugin import Budget, MethodPlugin, Prediction, Task
from segarena.platform.scoring.checks import PredictionError, check_prediction, count_denoiser_calls
from segarena.platform.scoring.metrics import (
    aggregate,
    class_surfaces,
    distribution_metrics,
    nsd_tolerance,
    overlap,
    per_case_metrics,
)
from segarena.platform.scoring.timing import time_method

REPEAT_SEED_STRIDE = 7919  # repeat r > 0 samples with seed + r·stride (repeat 0 is the reported evaluation)


class EvaluationError(RuntimeError):
    """The method's output breaks the contract (NaN, wrong shape, wrong nfe)."""


def _batches(cases: Sequence[Case], size: int) -> list[list[Case]]:
    return [list(cases[i:i + size]) for i in range(0, len(cases), size)]


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return overlap(a, b)[0]


def repeat_seed(seed: int, repeat: int) -> int:
    """The sampling seed of stability repeat ``repeat`` (0 = the cell's seed)."""
    return seed if repeat == 0 else seed + REPEAT_SEED_STRIDE * repeat


def batch_seed(seed: int, index: int) -> int:
    """The generator seed of batch ``index`` of an evaluation pass: every batch starts from its own state,
    so a batch's members do not depend on how many members earlier batches drew (prefixes stay exact)."""
    return (seed * 1_000_003 + index) % 2**63


def predict_cases(method: MethodPlugin, cases: Sequence[Case], budget: Budget, task: Task, device: torch.device,
                  seed: int, batch_size: int) -> tuple[dict[str, torch.Tensor], dict[str, float], int]:
    """Hard masks per case id, mean pairwise member Dice per case (stochastic methods), reported nfe."""
    method.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    masks: dict[str, torch.Tensor] = {}
    pairwise: dict[str, float] = {}
    nfe = budget.nfe
    with torch.inference_mode():
        for batch in _batches(cases, batch_size):
            images = torch.stack([c.image for c in batch]).to(device)
            out = method.predict(images, budget, gen)
            _check(method, out, budget, images, task)
            nfe = out.nfe
            hard = out.mask.bool().cpu()
            for i, case in enumerate(batch):
                masks[case.case_id] = hard[i]
            if out.members is not None and out.members.shape[0] > 1:
                pairwise.update(_pairwise(out.members.bool().cpu(), batch))
    return masks, pairwise, nfe


def _check(method: MethodPlugin, out: Prediction, budget: Budget, images: torch.Tensor, task: Task) -> None:
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


def _pairwise(members: torch.Tensor, batch: Sequence[Case]) -> dict[str, float]:
    """Mean pairwise Dice of the members (E, B, C, H, W) of each image (``member_pairwise_dice``)."""
    out = {}
    for i, case in enumerate(batch):
        pairs = itertools.combinations(range(members.shape[0]), 2)
        out[case.case_id] = float(np.mean([_dice(members[a, i], members[b, i]) for a, b in pairs]))
    return out


def score_cases(cases: Sequence[Case], masks: dict[str, torch.Tensor], class_names: Sequence[str]) -> pd.DataFrame:
    """Per-case rows; slices sharing a ``volume`` are stacked by ``slice_index`` and scored as one case."""
    rows: list[dict[str, Any]] = []
    volumes: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        if case.volume is not None:
            volumes[case.volume].append(case)
        else:
            rows += per_case_metrics(masks[case.case_id], case.mask, case.spacing, case.case_id, class_names,
                                     channels_first=True)
    for vol, slices in volumes.items():
        slices.sort(key=lambda c: c.slice_index or 0)
        pred = torch.stack([masks[c.case_id] for c in slices], -1)
        gt = torch.stack([c.mask.bool() for c in slices], -1)
        rows += per_case_metrics(pred, gt, slices[0].spacing, vol, class_names, channels_first=True)
    return pd.DataFrame(rows)


# Sampling ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Output:
    """One budget's prediction for one batch, on CPU."""

    probs: torch.Tensor
    mask: torch.Tensor
    members: torch.Tensor | None
    member_probs: torch.Tensor | None


def _cpu(out: Prediction) -> _Output:
    return _Output(out.probs.detach().float().cpu(), out.mask.detach().bool().cpu(),
                   None if out.members is None else out.members.detach().bool().cpu(),
                   None if out.member_probs is None else out.member_probs.detach().float().cpu())


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


def _groups(budgets: Sequence[Budget]) -> list[tuple[Budget, list[Budget]]]:
    """(largest budget, the smaller ensembles of the same sampler and steps), in first-seen order."""
    by_key: dict[tuple[str, int], list[Budget]] = {}
    for b in budgets:
        by_key.setdefault((b.sampler, b.steps), []).append(b)
    out = []
    for group in by_key.values():
        top = max(group, key=lambda b: b.ensemble)
        out.append((top, [b for b in group if b is not top]))
    return out


def _sample(method: MethodPlugin, cases: Sequence[Case], top: Budget, derived: Sequence[Budget], task: Task,
            device: torch.device, seed: int, batch_size: int, sinks: dict[str, _Scorer]) -> tuple[dict[str, int], bool]:
    """One pass over ``cases`` predicting ``top`` (batch i sampled from ``batch_seed(seed, i)``); ``derived``
    budgets are fused from prefixes of its members.

    Returns the reported nfe per budget and whether prefix scoring held on every batch (if not, the
    caller discards the derived sinks and samples those budgets on their own).
    """
    method.eval()
    nfe: dict[str, int] = {}
    prefix_ok = bool(derived)
    with count_denoiser_calls(method) as counter, torch.inference_mode():
        for index, batch in enumerate(_batches(cases, batch_size)):
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


def _verified(method: MethodPlugin, out: Prediction, budget: Budget, counted: float, images: torch.Tensor,
              task: Task) -> None:
    """The contract checks of platform/scoring/checks.py: counted nfe = reported nfe, probabilities in [0, 1],
    binary masks, shapes; a breach fails the cell with one line (it is never ranked)."""
    try:
        check_prediction(out, budget, counted, images, task.num_classes)
    except PredictionError as exc:
        raise EvaluationError(f"{method.name}: {exc}") from exc
    _check(method, out, budget, images, task)


# Scoring ----------------------------------------------------------------------------------------------------

def _score_unit(case_id: str, mask: torch.Tensor, gt: torch.Tensor, probs: torch.Tensor,
                samples: torch.Tensor | None, sample_probs: torch.Tensor | None, spacing: Sequence[float] | None,
                class_names: Sequence[str], tolerance: float) -> list[dict[str, Any]]:
    with torch.inference_mode():
        surface = class_surfaces(mask, gt, spacing)  # HD95 and NSD from one pass over the boundaries
        rows = per_case_metrics(mask, gt, spacing, case_id, class_names, channels_first=True, surface=surface)
        extra = distribution_metrics(mask, gt, probs, samples, sample_probs, spacing, tolerance, surface=surface)
    return [{**r, **x} for r, x in zip(rows, extra, strict=True)]


class _Scorer:
    """One budget × repeat: collects batch outputs and scores each case (a whole volume once its last slice
    arrives). ``full``: every metric as rows (repeat 0), else Dice per (case, class) only (repeats > 0)."""

    def __init__(self, cases: Sequence[Case], class_names: Sequence[str], full: bool, tolerance: float,
                 pool: ThreadPoolExecutor | None, keep: bool) -> None:
        self.class_names, self.full, self.tolerance, self.pool, self.keep = class_names, full, tolerance, pool, keep
        self.slices: dict[str, list[Case]] = defaultdict(list)
        for c in cases:
            if c.volume is not None:
                self.slices[c.volume].append(c)
        self.order = [c.case_id for c in cases if c.volume is None] + list(self.slices)
        self.pending: dict[str, dict[str, tuple[Case, _Output, int]]] = defaultdict(dict)
        self.units: dict[str, Future | list[dict[str, Any]]] = {}
        self.dice: dict[tuple[str, str], float] = {}
        self.pairwise: dict[str, float] = {}
        self.kept: list[Any] = []

    def add(self, batch: Sequence[Case], out: _Output) -> None:
        if self.full and out.members is not None and out.members.shape[0] > 1:
            self.pairwise.update(_pairwise(out.members, batch))
        for i, case in enumerate(batch):
            if self.keep:
                self._keep(case, out, i)
            if case.volume is None:
                self._submit(case.case_id, case.spacing, [(case, out, i)], stack=False)
                continue
            part = self.pending[case.volume]
            part[case.case_id] = (case, out, i)
            if len(part) == len(self.slices[case.volume]):
                items = sorted(part.values(), key=lambda t: t[0].slice_index or 0)
                self._submit(case.volume, items[0][0].spacing, items, stack=True)
                del self.pending[case.volume]

    def _keep(self, case: Case, out: _Output, i: int) -> None:
        from segarena.platform.scoring.predictions import CasePrediction

        vote = out.members[:, i].float().mean(0) if out.members is not None else out.mask[i].float()
        self.kept.append(CasePrediction(case.case_id, case.image.detach().cpu(), case.mask.bool().cpu(),
                                        out.mask[i], out.probs[i], vote, case.volume, case.slice_index))

    def _submit(self, unit: str, spacing: Sequence[float] | None, items: list[tuple[Case, _Output, int]],
                stack: bool) -> None:
        """Score one case: a 2D image, or a volume = its slices stacked on a last axis."""
        def cat(get) -> torch.Tensor | None:
            parts = [get(c, o, i) for c, o, i in items]
            if any(p is None for p in parts):
                return None
            return torch.stack(parts, -1) if stack else parts[0]

        mask = cat(lambda c, o, i: o.mask[i])
        gt = cat(lambda c, o, i: c.mask.bool())
        if not self.full:
            for k, name in enumerate(self.class_names):
                self.dice[(unit, name)] = _dice(mask[k], gt[k])
            return
        args = (unit, mask, gt, cat(lambda c, o, i: o.probs[i]),
                cat(lambda c, o, i: None if o.members is None else o.members[:, i]),
                cat(lambda c, o, i: None if o.member_probs is None else o.member_probs[:, i]),
                spacing, self.class_names, self.tolerance)
        self.units[unit] = self.pool.submit(_score_unit, *args) if self.pool is not None else _score_unit(*args)

    def table(self) -> pd.DataFrame:
        rows: list[dict[str, Any]] = []
        for unit in self.order:
            r = self.units[unit]
            rows += r.result() if isinstance(r, Future) else r
        return pd.DataFrame(rows)

    def dice_by_row(self) -> dict[tuple[str, str], float]:
        return self.dice


# Entry points -----------------------------------------------------------------------------------------------

def evaluate(method: MethodPlugin, cases: Sequence[Case], budgets: Sequence[Budget], task: Task,
             device: torch.device, seed: int, cfg: dict[str, Any], *, predictions_dir: Path | None = None,
             score_workers: int = 1) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Per-case table (all budgets, ``budget`` column) and per-budget summary metrics.

    cfg: the suite's ``evaluation`` block (batch_size, timing_*, throughput_batch, nsd_tolerance_mm,
    repeats, save_predictions). ``predictions_dir``: where saved predictions go (``<budget>/...``), None =
    save nothing. ``score_workers``: 1 = score in a background thread while predicting, 0 = inline.
    """
    class_names = list(task.class_names) or [str(i + 1) for i in range(task.num_classes)]
    tolerance = nsd_tolerance(cfg.get("nsd_tolerance_mm"))
    repeats = max(1, int(cfg.get("repeats", 1)))
    mode = cfg.get("save_predictions", "overlays") if predictions_dir is not None else "none"
    batch_size = cfg.get("batch_size", 8)
    scorers: dict[str, list[_Scorer]] = {b.name: [] for b in budgets}
    nfe: dict[str, int] = {}
    source: dict[str, str] = {}
    pool = ThreadPoolExecutor(max_workers=1) if score_workers else None
    try:
        for top, derived in _groups(budgets):
            for r in range(repeats):
                sinks = {b.name: _Scorer(cases, class_names, r == 0, tolerance, pool, r == 0 and mode != "none")
                         for b in (top, *derived)}
                got, prefix_ok = _sample(method, cases, top, derived, task, device, repeat_seed(seed, r),
                                         batch_size, sinks)
                alone = [] if prefix_ok else list(derived)
                for b in alone:  # fuse cannot reproduce the method: sample this size on its own
                    sinks[b.name] = _Scorer(cases, class_names, r == 0, tolerance, pool, r == 0 and mode != "none")
                    got.update(_sample(method, cases, b, [], task, device, repeat_seed(seed, r), batch_size,
                                       sinks)[0])
                for b in (top, *derived):
                    scorers[b.name].append(sinks[b.name])
                    if r == 0:
                        nfe[b.name] = got[b.name]
                        source[b.name] = top.name if b not in alone else b.name
        tables, results = [], {}
        for budget in budgets:
            table, metrics, written = _summarise(budget, scorers[budget.name], nfe[budget.name], method,
                                                 predictions_dir, mode, class_names)
            tables.append(table)
            timing = _time(method, cases, budget, device, seed, cfg)
            metrics.update(timing.metrics())
            results[budget.name] = {"metrics": metrics, "budget": budget.as_dict(),
                                    "tags": {"peak_mem_kind": timing.peak_mem_kind,
                                             "hd95_unit": table["hd95_unit"].iloc[0],
                                             "throughput_batch": timing.throughput_batch,
                                             "members_from": source[budget.name], "repeats": repeats}}
            if written:
                results[budget.name]["predictions"] = written
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return pd.concat(tables, ignore_index=True), results


def _summarise(budget: Budget, runs: list[_Scorer], nfe: int, method: MethodPlugin, predictions_dir: Path | None,
               mode: str, class_names: Sequence[str]) -> tuple[pd.DataFrame, dict[str, float], list[str]]:
    # nfe = steps × ensemble per mask; a method that runs its denoiser once per class (SDSeg's
    # class-conditioned multi-class mode) honestly reports a whole multiple of it.
    if nfe < budget.nfe or nfe % budget.nfe:
        raise EvaluationError(f"{method.name}: reported nfe {nfe} for budget {budget.name} "
                              f"(expected {budget.nfe} or a whole multiple for per-class passes)")
    first = runs[0]
    table = first.table()
    dice = [table["dice"].to_numpy()]
    for run in runs[1:]:
        by_row = run.dice_by_row()
        dice.append(np.array([by_row[(c, k)] for c, k in zip(table["case_id"], table["class"], strict=True)]))
    table["dice_repeat_std"] = np.stack(dice).std(0) if len(dice) > 1 else 0.0
    table.insert(0, "budget", budget.name)
    metrics = aggregate(table)
    metrics["nfe"] = float(nfe)
    if first.pairwise:
        metrics["member_pairwise_dice"] = float(np.mean(list(first.pairwise.values())))
    written: list[str] = []
    if predictions_dir is not None and mode != "none":
        from segarena.platform.scoring.predictions import save_predictions

        case_dice = table.groupby("case_id")["dice"].mean().to_dict()
        written = [f"{budget.name}/{p}" for p in save_predictions(Path(predictions_dir) / budget.name, first.kept,
                                                                   case_dice, mode, class_names, budget.name)]
    return table, metrics, written


def _time(method: MethodPlugin, cases: Sequence[Case], budget: Budget, device: torch.device, seed: int,
          cfg: dict[str, Any]) -> Any:
    n_time = min(len(cases), max(1, cfg.get("timing_repeats", 10)))
    images = torch.stack([c.image for c in cases[:n_time]]).to(device)
    return time_method(method, images, budget, warmup=cfg.get("timing_warmup", 2),
                       repeats=cfg.get("timing_repeats", 10), throughput_batch=cfg.get("throughput_batch", 8),
                       seed=seed)


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


def quick_dice(method: MethodPlugin, cases: Sequence[Case], budget: Budget, task: Task, device: torch.device,
               seed: int, batch_size: int) -> float:
    """Mean Dice over cases and classes, no HD95: the cheap per-epoch ``val/dice`` curve."""
    masks, _, _ = predict_cases(method, cases, budget, task, device, seed, batch_size)
    scores = [_dice(masks[c.case_id][k], c.mask[k].bool()) for c in cases for k in range(task.num_classes)]
    return float(np.mean(scores))
