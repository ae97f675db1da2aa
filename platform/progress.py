"""What a person sees while a suite runs: cells done/total, current cell and epoch, elapsed, ETA."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ray.tune import Callback


def _fmt(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress(Callback):
    """A Tune callback printing one line per event instead of Tune's status table."""

    def __init__(self, total: int, concurrency: int, echo: Callable[[str], None] = print) -> None:
        self.total, self.concurrency, self.echo = total, max(1, concurrency), echo
        self.t0 = time.time()
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.done = self.failed = 0
        self.failures: list[tuple[str, str]] = []

    def _label(self, trial: Any) -> str:
        cell = trial.config["cell"]
        return f"{cell['method']} × {cell['dataset']} · seed {cell['seed']}"

    def _eta(self) -> str:
        remaining = self.total - self.done - self.failed
        if not self.durations or remaining <= 0:
            return "?" if remaining > 0 else "0:00"
        return _fmt(sum(self.durations) / len(self.durations) * remaining / self.concurrency)

    def _line(self, text: str) -> None:
        finished = self.done + self.failed
        self.echo(f"[{finished}/{self.total} cells · {_fmt(time.time() - self.t0)} elapsed · ETA {self._eta()}] {text}")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started[trial.trial_id] = time.time()
        self._line(f"start  {self._label(trial)}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        cell = trial.config["cell"]
        status = result.get("cell_status")
        if status == "finished":
            self.done += 1
            self.durations.append(time.time() - self.started.get(trial.trial_id, self.t0))
            self._line(f"done   {self._label(trial)} in {_fmt(self.durations[-1])}")
        elif status == "failed":
            self.failed += 1
            self.durations.append(time.time() - self.started.get(trial.trial_id, self.t0))
            self.failures.append((self._label(trial), str(result.get("error"))))
            self._line(f"FAILED {self._label(trial)}: {result.get('error')}")
        elif result.get("phase") == "train":
            loss = next((f" {k}={v:.4g}" for k, v in result.items() if k.startswith("train/") and k != "train/steps"
                         and isinstance(v, float)), "")
            val = f" val/dice={result['val/dice']:.3f}" if isinstance(result.get("val/dice"), float) else ""
            self._line(f"       {self._label(trial)}: epoch {int(result['epoch']) + 1}/{cell['epochs']}{loss}{val}")
        elif result.get("phase") == "evaluated":
            self._line(f"       {self._label(trial)}: evaluated, logging")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.failed += 1
        self.failures.append((self._label(trial), "trial crashed (see Ray logs)"))
        self._line(f"FAILED {self._label(trial)}: trial crashed")
