"""The ETA model of a running suite: it comes from the work left, not from averaging finished cells.

A cell's remaining time = (planned steps − steps done) × the observed seconds per step *of its
method* + the observed evaluation-and-logging tail of its method (+ the observed worker start-up
for cells that have not reported yet). Cells are then laid on ``concurrency`` slots in launch
order, as Tune schedules them; the ETA is when the last slot frees. Every ``phase: train`` result
(``train/steps`` steps in ``epoch_s`` seconds) refines it (run/progress.py feeds it).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

RECENT = 20  # epochs of a method the step time is averaged over (recent load matters more)


class JobInfo(NamedTuple):
    """What the ETA and the display know of a trial before it reports (run/progress.py's job_info)."""

    label: str
    method: str
    planned_steps: int  # 0 when the suite leaves steps_per_epoch open (learned from the first epoch)
    epochs: int


def default_eta_prior() -> dict[str, Any]:
    """Step costs of the built-in methods measured on a 2-core CPU (``eta_prior.json`` beside this file):
    the first ETA of a fresh work dir, replaced by each method's own first epoch here."""
    data = json.loads((Path(__file__).with_name("eta_prior.json")).read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


@dataclass
class CellState:
    """One running cell as the callback has seen it."""

    info: JobInfo
    started_at: float
    epoch: int = -1  # last finished epoch (0-based), -1 before the first result
    steps_per_epoch: float = 0.0
    last_result_at: float | None = None
    trained_until: float | None = None  # time of the last train result
    evaluated: bool = False
    loss: str = ""
    stage: int | None = None
    val: float | None = None

    def planned(self, fallback_steps_per_epoch: float | None) -> float | None:
        if self.info.planned_steps:
            return float(self.info.planned_steps)
        spe = self.steps_per_epoch or fallback_steps_per_epoch
        return self.info.epochs * spe if spe else None

    def steps_done(self) -> float:
        spe = self.steps_per_epoch or (self.info.planned_steps / self.info.epochs if self.info.epochs else 0.0)
        return (self.epoch + 1) * spe


@dataclass
class EtaModel:
    """Observed costs: seconds per training step per method, worker start-up, evaluation tail."""

    step_obs: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # method → (seconds, steps)
    spe_obs: dict[str, list[float]] = field(default_factory=dict)  # method → steps per epoch seen
    startup_obs: list[float] = field(default_factory=list)
    tail_obs: dict[str, list[float]] = field(default_factory=dict)  # method → last epoch → finished
    eval_job_obs: dict[str, list[float]] = field(default_factory=dict)  # method → whole evaluate-only trial
    prior: dict[str, Any] = field(default_factory=dict)  # costs of an earlier run, used until observed here

    def costs(self) -> dict[str, Any]:
        """What this run measured, as plain data: save it, and pass it as ``prior`` to the next run."""
        methods = set(self.step_obs) | set(self.tail_obs)
        return {"step_s": {m: self.step_time(m) for m in methods if self.step_obs.get(m)},
                "steps_per_epoch": {m: self.steps_per_epoch(m) for m in self.spe_obs},
                "tail_s": {m: self._mean_of(self.tail_obs, m) for m in self.tail_obs},
                "startup_s": self.startup() if self.startup_obs else None}

    def observe_epoch(self, method: str, seconds: float, steps: float) -> None:
        if steps > 0 and seconds >= 0:
            self.step_obs.setdefault(method, []).append((seconds, steps))
            self.spe_obs.setdefault(method, []).append(steps)

    def step_time(self, method: str) -> float | None:
        obs = self.step_obs.get(method, [])[-RECENT:]
        if not obs and method in self.prior.get("step_s", {}):
            return float(self.prior["step_s"][method])
        if not obs:  # a method not seen yet: the mean over the methods seen (corrected at its first epoch)
            per = [self.step_time(m) for m in self.step_obs if self.step_obs[m]]
            return sum(per) / len(per) if per else None
        return sum(s for s, _ in obs) / sum(n for _, n in obs)

    def steps_per_epoch(self, method: str) -> float | None:
        if not self.spe_obs.get(method) and method in self.prior.get("steps_per_epoch", {}):
            return float(self.prior["steps_per_epoch"][method])
        obs = self.spe_obs.get(method) or [s for v in self.spe_obs.values() for s in v]
        return sorted(obs)[len(obs) // 2] if obs else None

    def startup(self) -> float:
        if self.startup_obs:
            return sum(self.startup_obs) / len(self.startup_obs)
        return float(self.prior.get("startup_s") or 0.0)

    @staticmethod
    def _mean_of(table: dict[str, list[float]], method: str) -> float | None:
        obs = table.get(method) or [t for v in table.values() for t in v]
        return sum(obs) / len(obs) if obs else None

    def tail(self, method: str) -> float:
        if not self.tail_obs.get(method) and method in self.prior.get("tail_s", {}):
            return float(self.prior["tail_s"][method])
        return self._mean_of(self.tail_obs, method) or 0.0

    def cell_remaining(self, cell: CellState, now: float) -> float | None:
        """Seconds until a running cell finishes; None while nothing has been observed at all."""
        method = cell.info.method
        if cell.info.epochs == 0:  # evaluate-only job
            whole = self._mean_of(self.eval_job_obs, method)
            whole = whole if whole is not None else self.startup() + self.tail(method)
            return max(0.0, whole - (now - cell.started_at))
        step = self.step_time(method)
        planned = cell.planned(self.steps_per_epoch(method))
        if step is None or planned is None:
            return None
        if cell.last_result_at is None:
            before = max(0.0, self.startup() - (now - cell.started_at))
            return before + planned * step + self.tail(method)
        left_steps = max(0.0, planned - cell.steps_done())
        since = now - cell.last_result_at
        if left_steps > 0:
            return max(0.0, left_steps * step - since) + self.tail(method)
        return max(0.0, self.tail(method) - since)

    def pending_cell(self, info: JobInfo) -> float | None:
        """Seconds a cell not started yet will take, start-up included."""
        if info.epochs == 0:
            whole = self._mean_of(self.eval_job_obs, info.method)
            return whole if whole is not None else self.startup() + self.tail(info.method)
        step = self.step_time(info.method)
        spe = self.steps_per_epoch(info.method)
        planned = info.planned_steps or (info.epochs * spe if spe else None)
        if step is None or planned is None:
            return None
        return self.startup() + planned * step + self.tail(info.method)


def schedule_end(running: Sequence[float], pending: Sequence[float], concurrency: int) -> float:
    """When the last cell ends if pending cells take the first free of ``concurrency`` slots in order."""
    slots = sorted(running)
    slots += [0.0] * max(0, concurrency - len(slots))
    heapq.heapify(slots)
    for p in pending:
        heapq.heappush(slots, heapq.heappop(slots) + p)
    return max(slots) if slots else 0.0


def eta_errors(samples: Sequence[tuple[float, float | None]], end: float) -> list[float | None]:
    """Per sample (elapsed, ETA): (ETA − true remaining) / true remaining, ``end`` = elapsed at the end."""
    out: list[float | None] = []
    for at, eta in samples:
        true = end - at
        out.append(None if eta is None or true <= 0 else (eta - true) / true)
    return out
