"""Harness-side evaluation: run a method's ``predict`` on test cases per budget, score per case
(volumes re-assembled from slices), variability of ensemble members, and timing.

Plugins never evaluate themselves: binarisation is theirs, scoring is ours.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from segarena.platform.dataset import Case
from segarena.platform.metrics import aggregate, overlap, per_case_metrics
from segarena.platform.plugin import Budget, MethodPlugin, Task
from segarena.platform.timing import time_method


class EvaluationError(RuntimeError):
    """The method's output breaks the contract (NaN, wrong shape, wrong nfe)."""


def _batches(cases: Sequence[Case], size: int) -> list[list[Case]]:
    return [list(cases[i:i + size]) for i in range(0, len(cases), size)]


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
        for batch in _batches(cases, batch_size):
            images = torch.stack([c.image for c in batch]).to(device)
            out = method.predict(images, budget, gen)
            expect = (len(batch), task.num_classes, *images.shape[-2:])
            if tuple(out.mask.shape) != expect:
                raise EvaluationError(f"{method.name}: mask shape {tuple(out.mask.shape)}, expected {expect}")
            if not torch.isfinite(out.probs).all():
                raise EvaluationError(f"{method.name}: NaN or inf in predicted probabilities ({budget.name})")
            nfe = out.nfe
            hard = out.mask.bool().cpu()
            for i, case in enumerate(batch):
                masks[case.case_id] = hard[i]
            if out.members is not None and out.members.shape[0] > 1:
                members = out.members.bool().cpu()
                for i, case in enumerate(batch):
                    pairs = itertools.combinations(range(members.shape[0]), 2)
                    pairwise[case.case_id] = float(np.mean([_dice(members[a, i], members[b, i]) for a, b in pairs]))
    return masks, pairwise, nfe


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


def evaluate(method: MethodPlugin, cases: Sequence[Case], budgets: Sequence[Budget], task: Task,
             device: torch.device, seed: int, cfg: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Per-case table (all budgets, ``budget`` column) and per-budget summary metrics."""
    class_names = list(task.class_names) or [str(i + 1) for i in range(task.num_classes)]
    tables, results = [], {}
    for budget in budgets:
        masks, pairwise, nfe = predict_cases(method, cases, budget, task, device, seed, cfg.get("batch_size", 8))
        # nfe = steps × ensemble per mask; a method that runs its denoiser once per class (SDSeg's
        # class-conditioned multi-class mode) honestly reports a whole multiple of it.
        if nfe < budget.nfe or nfe % budget.nfe:
            raise EvaluationError(f"{method.name}: reported nfe {nfe} for budget {budget.name} "
                                  f"(expected {budget.nfe} or a whole multiple for per-class passes)")
        table = score_cases(cases, masks, class_names)
        table.insert(0, "budget", budget.name)
        tables.append(table)
        metrics = aggregate(table)
        metrics["nfe"] = float(nfe)
        if pairwise:
            metrics["member_pairwise_dice"] = float(np.mean(list(pairwise.values())))
        n_time = min(len(cases), max(1, cfg.get("timing_repeats", 10)))
        images = torch.stack([c.image for c in cases[:n_time]]).to(device)
        timing = time_method(method, images, budget, warmup=cfg.get("timing_warmup", 2),
                             repeats=cfg.get("timing_repeats", 10), throughput_batch=cfg.get("throughput_batch", 8),
                             seed=seed)
        metrics.update(timing.metrics())
        results[budget.name] = {"metrics": metrics, "budget": budget.as_dict(),
                                "tags": {"peak_mem_kind": timing.peak_mem_kind, "hd95_unit": table["hd95_unit"].iloc[0],
                                         "throughput_batch": timing.throughput_batch}}
    return pd.concat(tables, ignore_index=True), results


def quick_dice(method: MethodPlugin, cases: Sequence[Case], budget: Budget, task: Task, device: torch.device,
               seed: int, batch_size: int) -> float:
    """Mean Dice over cases and classes, no HD95: the cheap per-epoch ``val/dice`` curve."""
    masks, _, _ = predict_cases(method, cases, budget, task, device, seed, batch_size)
    scores = [_dice(masks[c.case_id][k], c.mask[k].bool()) for c in cases for k in range(task.num_classes)]
    return float(np.mean(scores))
