"""What a person sees while a suite runs: cells done/total, each running cell's epoch and headline
loss, elapsed time and an ETA that comes from the work left, not from averaging finished cells.

The ETA model: a cell's remaining time = (planned steps − steps done) × the observed seconds per
step *of its method* + the observed evaluation-and-logging tail of its method (+ the observed
worker start-up for cells that have not reported yet). Cells are then laid on ``concurrency``
slots in launch order, as Tune schedules them; the ETA is when the last slot frees. Every
``phase: train`` result (``train/steps`` steps in ``epoch_s`` seconds) refines it.

On a terminal, one pinned, updating line per running cell; in a pipe or log, plain lines only
(no cursor movement, no colour).
"""

from __future__ import annotations

import heapq
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TextIO

from ray.tune import Callback

from segarena.platform.log import use_colour

STAGE_KEY = "train/stage"
NOT_LOSSES = ("train/steps", STAGE_KEY)
RECENT = 20  # epochs of a method the step time is averaged over (recent load matters more)


def _fmt(seconds: float) -> str:
    seconds = int(max(0, round(seconds)))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class JobInfo(NamedTuple):
    label: str
    method: str
    planned_steps: int  # 0 when the suite leaves steps_per_epoch open (learned from the first epoch)
    epochs: int


def default_eta_prior() -> dict[str, Any]:
    """Step costs of the built-in methods measured on a 2-core CPU (``eta_prior.json`` beside this file):
    the first ETA of a fresh work dir, replaced by each method's own first epoch here."""
    import json
    from pathlib import Path

    data = json.loads((Path(__file__).with_name("eta_prior.json")).read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def job_info(config: dict[str, Any]) -> JobInfo:
    """The display facts of a trial, from ``config["job"]`` (a job record's wire dict), the older
    ``config["cell"]`` (a cell dict) or such a dict itself: all carry method, dataset, seed, epochs,
    steps_per_epoch (a job also ``kind``: ``evaluate`` jobs train nothing)."""
    d = config.get("job") or config.get("cell") or config
    method = str(d.get("method", "?"))
    label = f"{method} × {d.get('dataset', '?')} · seed {d.get('seed', '?')}"
    if d.get("kind") == "evaluate":
        return JobInfo(f"{label} (evaluate)", method, 0, 0)
    epochs = int(d.get("epochs") or 0)
    return JobInfo(label, method, epochs * int(d.get("steps_per_epoch") or 0), epochs)


def headline_key(result: dict[str, Any]) -> str | None:
    """The loss to show: the plugin's ``headline_loss`` (passed by the trial as ``headline``), else
    the first ``train/*`` float that is not a step count or a stage number."""
    named = result.get("headline")
    if isinstance(named, str) and named:
        key = named if named.startswith("train/") else f"train/{named}"
        if isinstance(result.get(key), float | int):
            return key
    return next((k for k, v in result.items() if k.startswith("train/") and k not in NOT_LOSSES
                 and isinstance(v, float)), None)


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


class _LiveBlock:
    """Pinned status lines at the bottom of a terminal; permanent lines are printed above them."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.drawn = stream, 0

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}A\r\x1b[J")
            self.drawn = 0

    def print(self, text: str, block: list[str]) -> None:
        self._clear()
        self.stream.write(text + "\n")
        self.draw(block, clear=False)

    def draw(self, block: list[str], clear: bool = True) -> None:
        if clear:
            self._clear()
        import shutil

        width = max(20, shutil.get_terminal_size().columns - 1)
        for line in block:  # never wider than the terminal: a wrapped line would break the cursor count
            self.stream.write(line[:width] + "\n")
        self.drawn = len(block)
        self.stream.flush()

    def close(self) -> None:
        self._clear()
        self.stream.flush()


class Progress(Callback):
    """A Tune callback printing progress instead of Tune's status table.

    ``plan``: the trial configs in launch order (``{"job": ...}`` or ``{"cell": ...}``), so cells not
    started yet are estimated from their own method and length; without it they are estimated as
    the average cell. ``live``: pinned per-cell lines (default: when stdout is a terminal and
    ``echo`` is ``print``). ``prior``: ``progress.model.costs()`` of an earlier run on this machine
    (per-method step time, evaluation tail, start-up), used for a method until this run measured it.
    """

    def __init__(self, total: int, concurrency: int, echo: Callable[[str], None] = print,
                 plan: Sequence[dict[str, Any]] | None = None, live: bool | None = None,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.time,
                 prior: dict[str, Any] | None = None, explain: Callable[[Any], str | None] | None = None) -> None:
        self.total, self.concurrency, self.echo = total, max(1, concurrency), echo
        self.explain = explain  # why a trial process died, when the driver knows (e.g. a cell timeout)
        self.clock = clock
        self.t0 = clock()
        self.model = EtaModel(prior=dict(prior or {}))
        self.cells: dict[str, CellState] = {}
        self.pending: list[tuple[str, JobInfo]] = [(_signature(c), job_info(c)) for c in plan or []]
        self.done = self.failed = 0
        self.failures: list[tuple[str, str]] = []
        self.eta_samples: list[tuple[float, float | None]] = []  # (elapsed, ETA) at each cell start
        self.stream = stream or sys.stdout
        if live is None:
            live = echo is print and bool(getattr(self.stream, "isatty", lambda: False)())
        self.live = _LiveBlock(self.stream) if live else None
        self.colour = bool(live) and use_colour(self.stream)
        self._last_draw = 0.0

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks with the experiment state: leave the terminal stream out."""
        state = dict(self.__dict__)
        state["stream"], state["live"] = None, None
        return state

    # ETA -----------------------------------------------------------------------------------
    def remaining(self) -> float | None:
        """Seconds until the last cell ends, or None before anything has been measured."""
        now = self.clock()
        running = [self.model.cell_remaining(c, now) for c in self.cells.values()]
        n_pending = max(0, self.total - self.done - self.failed - len(self.cells))
        if self.pending:
            pending = [self.model.pending_cell(info) for _, info in self.pending[:n_pending]]
        else:
            known = [self.model.pending_cell(c.info) for c in self.cells.values()]
            known = [k for k in known if k is not None]
            pending = [sum(known) / len(known) if known else None] * n_pending
        if any(r is None for r in running) or any(p is None for p in pending):
            return None
        return schedule_end(running, pending, self.concurrency)  # type: ignore[arg-type]

    def _eta(self) -> str:
        if self.done + self.failed >= self.total:
            return "0:00"
        left = self.remaining()
        return "?" if left is None else _fmt(left)

    # output --------------------------------------------------------------------------------
    def _head(self) -> str:
        return (f"[{self.done + self.failed}/{self.total} cells · {_fmt(self.clock() - self.t0)} elapsed · "
                f"ETA {self._eta()}]")

    def _paint(self, text: str, colour: str) -> str:
        return f"\x1b[{colour}m{text}\x1b[0m" if self.colour else text

    def _line(self, text: str, every_epoch: bool = False) -> None:
        """A permanent line (plain mode: every event; live mode: starts, ends and notes only)."""
        if self.live is None:
            self.echo(f"{self._head()} {text}")
        elif not every_epoch:
            self.live.print(f"{self._head()} {text}", self._block())
            self._last_draw = self.clock()

    def _block(self) -> list[str]:
        now = self.clock()
        lines = [self._head()]
        width = max((len(c.info.label) for c in self.cells.values()), default=0)
        for cell in self.cells.values():
            lines.append(f"  {cell.info.label.ljust(width)}  {self._status(cell, now)}")
        return lines

    def _status(self, cell: CellState, now: float) -> str:
        if cell.last_result_at is None:
            return f"starting workers… {_fmt(now - cell.started_at)}"
        if cell.evaluated:
            return "evaluated, logging"
        left = self.model.cell_remaining(cell, now)
        tail = f" · {_fmt(left)} left" if left is not None else ""
        if cell.epoch + 1 >= cell.info.epochs:
            return f"evaluating{tail}"
        bar = _bar((cell.epoch + 1) / max(1, cell.info.epochs))
        return f"epoch {cell.epoch + 1}/{cell.info.epochs} {bar}{cell.loss}{_val(cell.val)}{tail}"

    def _redraw(self) -> None:
        if self.live is not None:
            self.live.draw(self._block())
            self._last_draw = self.clock()

    # Tune callbacks ------------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._start(trial.trial_id, trial.config)

    def _start(self, trial_id: str, config: dict[str, Any]) -> None:
        info = job_info(config)
        sig = _signature(config)
        match = next((i for i, (s, _) in enumerate(self.pending) if s == sig), None)
        if match is None:
            match = next((i for i, (_, p) in enumerate(self.pending) if p == info), None)
        if match is not None:
            self.pending.pop(match)
        self.cells[trial_id] = CellState(info, self.clock())
        self.eta_samples.append((self.clock() - self.t0, self.remaining()))
        self._line(f"start  {info.label}: starting workers")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._result(trial.trial_id, trial.config, result)

    def _result(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        cell = self.cells.get(trial_id)
        if cell is None:  # a result from a trial we did not see start (restored): adopt it
            cell = self.cells[trial_id] = CellState(job_info(config), self.clock())
        now = self.clock()
        status = result.get("cell_status")
        if status in ("finished", "failed"):
            self.cells.pop(trial_id, None)
            if cell.trained_until is not None:
                self.model.tail_obs.setdefault(cell.info.method, []).append(now - cell.trained_until)
            elif status == "finished" and cell.info.epochs == 0:
                self.model.eval_job_obs.setdefault(cell.info.method, []).append(now - cell.started_at)
            if status == "finished":
                self.done += 1
                self._line(self._paint("done  ", "32") + f" {cell.info.label} in {_fmt(now - cell.started_at)}")
            else:
                self.failed += 1
                self.failures.append((cell.info.label, str(result.get("error"))))
                self._line(self._paint("FAILED", "31") + f" {cell.info.label}: {result.get('error')}")
        elif result.get("phase") == "train":
            self._train_result(cell, result, now)
        elif result.get("phase") == "evaluated":
            cell.evaluated, cell.last_result_at = True, now
            self._line(f"       {cell.info.label}: evaluated, logging", every_epoch=True)
            self._redraw()

    def _train_result(self, cell: CellState, result: dict[str, Any], now: float) -> None:
        steps = float(result.get("train/steps") or 0.0)
        since = now - (cell.last_result_at if cell.last_result_at is not None else cell.started_at)
        epoch_s = float(result["epoch_s"]) if isinstance(result.get("epoch_s"), float | int) else since
        if cell.last_result_at is None:  # the first result: what came before the epoch was start-up
            self.model.startup_obs.append(max(0.0, since - epoch_s))
        self.model.observe_epoch(cell.info.method, epoch_s, steps)
        cell.steps_per_epoch = steps or cell.steps_per_epoch
        cell.epoch = int(result.get("epoch", cell.epoch + 1))
        cell.last_result_at = cell.trained_until = now
        key = headline_key(result)
        cell.loss = f" {key.removeprefix('train/')}={result[key]:.4g}" if key else ""
        cell.val = float(result["val/dice"]) if isinstance(result.get("val/dice"), float | int) else cell.val
        stage = result.get(STAGE_KEY)
        if isinstance(stage, float | int):
            now_stage = math.ceil(float(stage) - 1e-9)  # a mixed epoch averages to e.g. 1.4: stage 2 has begun
            if cell.stage is not None and now_stage != cell.stage:
                self._line(f"note   {cell.info.label}: training stage {cell.stage} → {now_stage} "
                           f"in epoch {cell.epoch + 1}")
            cell.stage = now_stage
        val = _val(cell.val) if "val/dice" in result else ""
        self._line(f"       {cell.info.label}: epoch {cell.epoch + 1}/{cell.info.epochs}{cell.loss}{val}",
                   every_epoch=True)
        self._redraw()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        cell = self.cells.pop(trial.trial_id, None)
        label = cell.info.label if cell else job_info(trial.config).label
        self.failed += 1
        why = (self.explain(trial) if self.explain else None) or "trial crashed (see Ray logs)"
        self.failures.append((label, why))
        self._line(self._paint("FAILED", "31") + f" {label}: {why}")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.live is not None and self.clock() - self._last_draw >= 1.0:  # tick the clocks once a second
            self._redraw()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.live is not None:
            self.live.close()


def eta_errors(samples: Sequence[tuple[float, float | None]], end: float) -> list[float | None]:
    """Per sample (elapsed, ETA): (ETA − true remaining) / true remaining, ``end`` = elapsed at the end."""
    out: list[float | None] = []
    for at, eta in samples:
        true = end - at
        out.append(None if eta is None or true <= 0 else (eta - true) / true)
    return out


def _bar(frac: float, width: int = 10) -> str:
    filled = round(max(0.0, min(1.0, frac)) * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _val(val: float | None) -> str:
    return f" val/dice={val:.3f}" if val is not None else ""


def _signature(config: dict[str, Any]) -> str:
    d = config.get("job") or config.get("cell") or config
    return json.dumps(d, sort_keys=True, default=str)
