"""What the search stage plans and records: one ``SearchPlan`` per method entry × dataset (its space, its
candidate budgets, its key), the ``TrialRecord`` of each trial, the ``SearchOutcome`` of a search, and the
tuned cells that the selected configs become (run/search/stage.py ties them together).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from segarena.platform.errors import SpecError
from segarena.platform.records import Budget, Cell, Job, Settings, stable_hash
from segarena.platform.search_space import Distribution
from segarena.platform.spec.search import method_space
from segarena.platform.spec.suite import SearchSpec

TRIAL_STATUSES = ("finished", "stopped", "failed")  # counted; "interrupted" (killed driver) is rerun
POINT_FIELD = {"val/dice": "dice", "latency_ms": "latency_ms", "nfe": "nfe"}  # objective → a scored point's key


@dataclass
class SearchPlan:
    """One search: a method entry × dataset, on its first seed's split."""

    method: str
    dataset: str
    cells: list[Cell]  # the default cells of this entry × dataset, one per seed (tuned cells copy them)
    space: dict[str, Distribution]
    candidates: list[Budget]
    search: SearchSpec

    @property
    def base(self) -> Cell:
        return self.cells[0]

    @property
    def key(self) -> str:
        """What defines the search's outcome; the suite's epochs and other seeds are not in it."""
        fields = self.base.training_fields()
        fields.pop("epochs")
        return stable_hash({"search": self.search.model_dump(),
                            "space": {k: repr(v) for k, v in sorted(self.space.items())}, "cell": fields,
                            "candidates": [b.as_dict() for b in self.candidates],
                            "evaluation": self.base.evaluation.model_dump()})[:20]

    @property
    def label(self) -> str:
        return f"{self.method} × {self.dataset}"

    def trial_job(self, settings: Settings) -> Job:
        cell = replace(self.base, epochs=self.search.epochs, budgets=tuple(self.candidates))
        return Job("train", cell, tuple(self.candidates), settings)


def best_point(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The best scored point: highest Dice, lower latency breaking ties (a trial's headline for the searcher,
    and the search's choice under ``select: best``)."""
    return max(points, key=lambda p: (p["dice"], -p["latency_ms"]))



@dataclass
class TrialRecord:
    config: dict[str, Any]
    status: str  # finished | stopped | failed
    curve: list[float] = field(default_factory=list)  # val/dice per epoch
    points: list[dict[str, Any]] = field(default_factory=list)  # finished trials: one per candidate budget
    trial_s: float = 0.0
    error: str = ""
    run_id: str = ""

    def objective(self, objectives: Sequence[str]) -> list[float] | None:
        if self.status != "finished" or not self.points:
            return None
        best = best_point(self.points)
        return [float(best[POINT_FIELD[o]]) for o in objectives]


@dataclass
class SearchOutcome:
    plan: SearchPlan
    run_id: str
    records: list[TrialRecord]
    selected: list[dict[str, Any]]  # points: config, budget, name, dice, latency_ms, nfe, trial
    searcher_trials: int
    searcher_states: dict[str, int]
    skipped: bool = False
    wall_s: float = 0.0

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.records) for s in TRIAL_STATUSES}

    def trial_s(self) -> float:
        return sum(r.trial_s for r in self.records)

    def line(self) -> str:
        c = self.counts()
        head = (f"search {self.plan.label}: {len(self.records)}/{self.plan.search.trials} trials "
                f"({c['finished']} finished, {c['stopped']} stopped early, {c['failed']} failed; "
                f"{self.trial_s():.0f} trial-s)")
        if not self.selected:
            return head + "; nothing selected (no finished trial)"
        chosen = "; ".join(f"{fmt_config(p['config'])} at {p['name']}: val/dice {p['dice']:.4f}, "
                           f"{p['latency_ms']:.1f} ms" for p in self.selected)
        return f"{head}; chosen {chosen}" + (" (finished earlier, skipped)" if self.skipped else "")


def fmt_config(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(config.items()))


def plans(spec: Any, cells: list[Cell], registry: Any, path: Path | str) -> list[SearchPlan]:
    """One plan per method entry × dataset. ``cells`` come from ``expand`` (methods × datasets × seeds)."""
    n_d, n_s = len(spec.datasets), len(spec.seeds)
    if len(cells) != len(spec.methods) * n_d * n_s:
        raise SpecError(f"{path}: {len(cells)} cells do not match methods × datasets × seeds")
    out = []
    for i, m in enumerate(spec.methods):
        space = method_space(registry.method(m.name), m.search, f"{path}: field methods[{i}].search")
        for j in range(n_d):
            group = cells[(i * n_d + j) * n_s:(i * n_d + j + 1) * n_s]
            assert all(c.method == m.name for c in group)
            budgets = list(group[0].budgets)
            candidates = budgets if spec.search.budgets else [min(budgets, key=lambda b: b.nfe)]
            out.append(SearchPlan(m.name, group[0].dataset_label or group[0].dataset, group, space, candidates,
                                  spec.search))
    return out



def tuned_cells(plan: SearchPlan, selected: list[dict[str, Any]]) -> list[Cell]:
    """The selected configs as ordinary cells over the suite's seeds: one training per selected
    trial, evaluated at its selected budgets (all the entry's budgets when budgets are not searched)."""
    by_trial: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for p in selected:
        key = json.dumps(p["config"], sort_keys=True, default=str)
        by_trial.setdefault(key, (p["config"], []))[1].append(Budget.from_dict(p["budget"]))
    out = []
    for config, budgets in by_trial.values():
        for cell in plan.cells:
            chosen = tuple(budgets) if plan.search.budgets else cell.budgets
            out.append(replace(cell, hparams={**cell.hparams, **config}, budgets=chosen))
    return out
