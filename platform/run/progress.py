"""What a person sees while a suite runs: cells done/total, each running cell's epoch and headline
loss, elapsed time and an ETA that comes from the work left (the model: run/eta.py).

On a terminal, one pinned, updating line per running cell; in a pipe or log, plain lines only
(no cursor movement, no colour).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ray.tune import Callback

from segarena.platform.log import use_colour
from segarena.platform.run import reports as R
from segarena.platform.run.eta import CellState, EtaModel, JobInfo, schedule_end

NOT_LOSSES = (R.TRAIN_STEPS, R.TRAIN_STAGE)


def _fmt(seconds: float) -> str:
    seconds = int(max(0, round(seconds)))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def job_info(config: dict[str, Any]) -> JobInfo:
    """The display facts of a trial, from ``config["job"]`` (``Job.to_wire()``: method, dataset, seed,
    epochs, steps_per_epoch and ``kind``; ``evaluate`` jobs train nothing)."""
    d = config["job"]
    method = str(d.get("method", "?"))
    label = f"{method} × {d.get('dataset', '?')} · seed {d.get('seed', '?')}"
    if d.get("kind") == "evaluate":
        return JobInfo(f"{label} (evaluate)", method, 0, 0)
    epochs = int(d.get("epochs") or 0)
    return JobInfo(label, method, epochs * int(d.get("steps_per_epoch") or 0), epochs)


def headline_key(result: dict[str, Any]) -> str | None:
    """The loss to show: the plugin's ``headline_loss`` (passed by the trial as ``headline``), else
    the first ``train/*`` float that is not a step count or a stage number."""
    named = result.get(R.HEADLINE)
    if isinstance(named, str) and named:
        key = named if named.startswith(R.TRAIN) else f"{R.TRAIN}{named}"
        if isinstance(result.get(key), float | int):
            return key
    return next((k for k, v in result.items() if k.startswith(R.TRAIN) and k not in NOT_LOSSES
                 and isinstance(v, float)), None)


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

    ``plan``: the trial configs in launch order (``{"job": Job.to_wire()}``), so cells not
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
        status = result.get(R.CELL_STATUS)
        if status in (R.FINISHED, R.FAILED):
            self.cells.pop(trial_id, None)
            if cell.trained_until is not None:
                self.model.tail_obs.setdefault(cell.info.method, []).append(now - cell.trained_until)
            elif status == R.FINISHED and cell.info.epochs == 0:
                self.model.eval_job_obs.setdefault(cell.info.method, []).append(now - cell.started_at)
            if status == R.FINISHED:
                self.done += 1
                self._line(self._paint("done  ", "32") + f" {cell.info.label} in {_fmt(now - cell.started_at)}")
            else:
                self.failed += 1
                self.failures.append((cell.info.label, str(result.get(R.ERROR))))
                self._line(self._paint("FAILED", "31") + f" {cell.info.label}: {result.get(R.ERROR)}")
        elif result.get(R.PHASE) == R.PHASE_TRAIN:
            self._train_result(cell, result, now)
        elif result.get(R.PHASE) == R.PHASE_EVALUATED:
            cell.evaluated, cell.last_result_at = True, now
            self._line(f"       {cell.info.label}: evaluated, logging", every_epoch=True)
            self._redraw()

    def _train_result(self, cell: CellState, result: dict[str, Any], now: float) -> None:
        steps = float(result.get(R.TRAIN_STEPS) or 0.0)
        since = now - (cell.last_result_at if cell.last_result_at is not None else cell.started_at)
        epoch_s = float(result[R.EPOCH_S]) if isinstance(result.get(R.EPOCH_S), float | int) else since
        if cell.last_result_at is None:  # the first result: what came before the epoch was start-up
            self.model.startup_obs.append(max(0.0, since - epoch_s))
        self.model.observe_epoch(cell.info.method, epoch_s, steps)
        cell.steps_per_epoch = steps or cell.steps_per_epoch
        cell.epoch = int(result.get(R.EPOCH, cell.epoch + 1))
        cell.last_result_at = cell.trained_until = now
        key = headline_key(result)
        cell.loss = f" {key.removeprefix(R.TRAIN)}={result[key]:.4g}" if key else ""
        cell.val = float(result[R.VAL_DICE]) if isinstance(result.get(R.VAL_DICE), float | int) else cell.val
        stage = result.get(R.TRAIN_STAGE)
        if isinstance(stage, float | int):
            now_stage = math.ceil(float(stage) - 1e-9)  # a mixed epoch averages to e.g. 1.4: stage 2 has begun
            if cell.stage is not None and now_stage != cell.stage:
                self._line(f"note   {cell.info.label}: training stage {cell.stage} → {now_stage} "
                           f"in epoch {cell.epoch + 1}")
            cell.stage = now_stage
        val = _val(cell.val) if R.VAL_DICE in result else ""
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


def _bar(frac: float, width: int = 10) -> str:
    filled = round(max(0.0, min(1.0, frac)) * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _val(val: float | None) -> str:
    return f" val/dice={val:.3f}" if val is not None else ""


def _signature(config: dict[str, Any]) -> str:
    return json.dumps(config["job"], sort_keys=True, default=str)
