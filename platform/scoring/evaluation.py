"""Harness-side evaluation: run a method's ``predict`` on test cases per budget, score per case
(volumes re-assembled from slices), the diffusion-aware metrics, stability over sampling seeds, and timing.

Plugins never evaluate themselves: binarisation and fusion are theirs, scoring is ours. How a budget grid
is sampled (one draw per sampler and steps, smaller ensembles fused from its prefixes) is
platform/scoring/sampling.py; latency is still timed per budget at batch 1. Scoring runs in a background
thread while the next batch predicts; the rows are the same as scored inline (tested).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from segarena.platform.dataset import Case
from segarena.platform.plugin import Budget, MethodPlugin, Task
from segarena.platform.records import Evaluation
from segarena.platform.scoring.metrics import (
    aggregate,
    class_surfaces,
    distribution_metrics,
    nsd_tolerance,
    overlap,
    per_case_metrics,
)
from segarena.platform.scoring.sampling import (
    EvaluationError,
    Output,
    batches,
    budget_groups,
    check_output,
    repeat_seed,
    sample,
)
from segarena.platform.scoring.timing import time_method


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return overlap(a, b)[0]


def predict_cases(method: MethodPlugin, cases: Sequence[Case], budget: Budget, task: Task, device: torch.device,
                  seed: int, batch_size: int) -> tuple[dict[str, torch.Tensor], dict[str, float], int]:
    """Hard masks per case id, mean pairwise member Dice per case (stochastic methods), reported nfe."""
    method.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    masks: dict[str, torch.Tensor] = {}
    pairwise: dict[str, float] = {}
    nfe = budget.nfe
    with torch.inference_mode():
        for batch in batches(cases, batch_size):
            images = torch.stack([c.image for c in batch]).to(device)
            out = method.predict(images, budget, gen)
            check_output(method, out, budget, images, task)
            nfe = out.nfe
            hard = out.mask.bool().cpu()
            for i, case in enumerate(batch):
                masks[case.case_id] = hard[i]
            if out.members is not None and out.members.shape[0] > 1:
                pairwise.update(_pairwise(out.members.bool().cpu(), batch))
    return masks, pairwise, nfe


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
        self.pending: dict[str, dict[str, tuple[Case, Output, int]]] = defaultdict(dict)
        self.units: dict[str, Future | list[dict[str, Any]]] = {}
        self.dice: dict[tuple[str, str], float] = {}
        self.pairwise: dict[str, float] = {}
        self.kept: list[Any] = []

    def add(self, batch: Sequence[Case], out: Output) -> None:
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

    def _keep(self, case: Case, out: Output, i: int) -> None:
        from segarena.platform.scoring.predictions import CasePrediction

        vote = out.members[:, i].float().mean(0) if out.members is not None else out.mask[i].float()
        self.kept.append(CasePrediction(case.case_id, case.image.detach().cpu(), case.mask.bool().cpu(),
                                        out.mask[i], out.probs[i], vote, case.volume, case.slice_index))

    def _submit(self, unit: str, spacing: Sequence[float] | None, items: list[tuple[Case, Output, int]],
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

@dataclass(frozen=True)
class BudgetEvaluation:
    """One budget's evaluation: its summary metrics (the eval run's metrics) and how they were measured
    (the eval run's tags)."""

    budget: Budget
    metrics: dict[str, float]    # aggregate() means and medians, nfe, member_pairwise_dice, timing
    peak_mem_kind: str           # what peak_mem_mb measured (scoring/timing.py)
    hd95_unit: str               # mm with spacing, px without
    throughput_batch: int
    members_from: str            # the budget whose draw its members are a prefix of (its own name if none)
    repeats: int                 # sampling seeds behind dice_repeat_std

    def tags(self) -> dict[str, str]:
        """The run tags it records, as strings."""
        return {"peak_mem_kind": self.peak_mem_kind, "hd95_unit": self.hd95_unit,
                "throughput_batch": str(self.throughput_batch), "members_from": self.members_from,
                "repeats": str(self.repeats)}


class Evaluated(NamedTuple):
    """What ``evaluate`` returns; unpacks as ``per_case, budgets``."""

    per_case: pd.DataFrame                  # every budget's per-case rows, ``budget`` column first
    budgets: dict[str, BudgetEvaluation]    # by budget name, in the order given


def evaluate(method: MethodPlugin, cases: Sequence[Case], budgets: Sequence[Budget], task: Task,
             device: torch.device, seed: int, cfg: Evaluation | dict[str, Any], *, predictions_dir: Path | None = None,
             score_workers: int = 1) -> Evaluated:
    """Per-case table (all budgets, ``budget`` column) and each budget's summary metrics.

    cfg: the suite's ``evaluation`` block (batch_size, timing_*, throughput_batch, nsd_tolerance_mm,
    repeats, save_predictions). ``predictions_dir``: where saved predictions go (``<budget>/...``), None =
    save nothing. ``score_workers``: 1 = score in a background thread while predicting, 0 = inline.
    """
    class_names = list(task.class_names) or [str(i + 1) for i in range(task.num_classes)]
    cfg = cfg if isinstance(cfg, Evaluation) else Evaluation(**cfg)  # a dict (scripts, tests): the model's defaults
    tolerance = nsd_tolerance(cfg.nsd_tolerance_mm)
    repeats = cfg.repeats
    mode = cfg.save_predictions if predictions_dir is not None else "none"
    batch_size = cfg.batch_size
    scorers: dict[str, list[_Scorer]] = {b.name: [] for b in budgets}
    nfe: dict[str, int] = {}
    source: dict[str, str] = {}
    pool = ThreadPoolExecutor(max_workers=1) if score_workers else None
    try:
        for top, derived in budget_groups(budgets):
            for r in range(repeats):
                sinks = {b.name: _Scorer(cases, class_names, r == 0, tolerance, pool, r == 0 and mode != "none")
                         for b in (top, *derived)}
                got, prefix_ok = sample(method, cases, top, derived, task, device, repeat_seed(seed, r),
                                         batch_size, sinks)
                alone = [] if prefix_ok else list(derived)
                for b in alone:  # fuse cannot reproduce the method: sample this size on its own
                    sinks[b.name] = _Scorer(cases, class_names, r == 0, tolerance, pool, r == 0 and mode != "none")
                    got.update(sample(method, cases, b, [], task, device, repeat_seed(seed, r), batch_size,
                                       sinks)[0])
                for b in (top, *derived):
                    scorers[b.name].append(sinks[b.name])
                    if r == 0:
                        nfe[b.name] = got[b.name]
                        source[b.name] = top.name if b not in alone else b.name
        tables: list[pd.DataFrame] = []
        results: dict[str, BudgetEvaluation] = {}
        for budget in budgets:
            table, metrics = _summarise(budget, scorers[budget.name], nfe[budget.name], method, predictions_dir,
                                        mode, class_names)
            tables.append(table)
            timing = _time(method, cases, budget, device, seed, cfg)
            metrics.update(timing.metrics())
            results[budget.name] = BudgetEvaluation(budget, metrics, timing.peak_mem_kind,
                                                    str(table["hd95_unit"].iloc[0]), timing.throughput_batch,
                                                    source[budget.name], repeats)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return Evaluated(pd.concat(tables, ignore_index=True), results)


def _summarise(budget: Budget, runs: list[_Scorer], nfe: int, method: MethodPlugin, predictions_dir: Path | None,
               mode: str, class_names: Sequence[str]) -> tuple[pd.DataFrame, dict[str, float]]:
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
    if predictions_dir is not None and mode != "none":  # files under predictions_dir/<budget>/
        from segarena.platform.scoring.predictions import save_predictions

        case_dice = table.groupby("case_id")["dice"].mean().to_dict()
        save_predictions(Path(predictions_dir) / budget.name, first.kept, case_dice, mode, class_names, budget.name)
    return table, metrics


def _time(method: MethodPlugin, cases: Sequence[Case], budget: Budget, device: torch.device, seed: int,
          cfg: Evaluation) -> Any:
    n_time = min(len(cases), cfg.timing_repeats)
    images = torch.stack([c.image for c in cases[:n_time]]).to(device)
    return time_method(method, images, budget, warmup=cfg.timing_warmup,
                       repeats=cfg.timing_repeats, throughput_batch=cfg.throughput_batch,
                       seed=seed)


def quick_dice(method: MethodPlugin, cases: Sequence[Case], budget: Budget, task: Task, device: torch.device,
               seed: int, batch_size: int) -> float:
    """Mean Dice over cases and classes, no HD95: the cheap per-epoch ``val/dice`` curve."""
    masks, _, _ = predict_cases(method, cases, budget, task, device, seed, batch_size)
    scores = [_dice(masks[c.case_id][k], c.mask[k].bool()) for c in cases for k in range(task.num_classes)]
    return float(np.mean(scores))
