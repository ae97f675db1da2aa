"""Validation-only selection of a search's configs: every (trial, budget) point, the Pareto front over the
objectives (directions from the metric catalogue), and the best point or a spread of the front."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from segarena.platform.run.search.plan import POINT_FIELD, TrialRecord, best_point
from segarena.platform.scoring.catalog import mode
from segarena.platform.spec.suite import SearchSpec


def all_points(records: list[TrialRecord]) -> list[dict[str, Any]]:
    return [{**p, "config": r.config, "trial": i} for i, r in enumerate(records) if r.status == "finished"
            for p in r.points]


def dominates(a: dict[str, Any], b: dict[str, Any], objectives: Sequence[str]) -> bool:
    sign = {o: 1.0 if mode(o) == "max" else -1.0 for o in objectives}
    ge = all(sign[o] * a[POINT_FIELD[o]] >= sign[o] * b[POINT_FIELD[o]] for o in objectives)
    return ge and any(sign[o] * a[POINT_FIELD[o]] > sign[o] * b[POINT_FIELD[o]] for o in objectives)


def pareto_front(points: list[dict[str, Any]], objectives: Sequence[str]) -> list[dict[str, Any]]:
    """The non-dominated points (exact duplicates keep the first), best Dice first."""
    front: list[dict[str, Any]] = []
    for p in points:
        if any(dominates(q, p, objectives) for q in points):
            continue
        if any(all(q[POINT_FIELD[o]] == p[POINT_FIELD[o]] for o in objectives) for q in front):
            continue
        front.append(p)
    return sorted(front, key=lambda p: (-p["dice"], p["latency_ms"]))


def select(records: list[TrialRecord], search: SearchSpec) -> list[dict[str, Any]]:
    """Validation-only choice: the best point, or up to ``max_selected`` Pareto points spread along
    the front from the best Dice to the cheapest."""
    points = all_points(records)
    if not points:
        return []
    if search.select == "best":
        return [best_point(points)]
    front = pareto_front(points, search.objectives)
    k = min(search.max_selected, len(front))
    if k == 1:
        return front[:1]
    picks = sorted({round(i * (len(front) - 1) / (k - 1)) for i in range(k)})
    return [front[i] for i in picks]
