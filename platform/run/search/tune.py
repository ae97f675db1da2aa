"""The Ray Tune side of a search: Optuna's sampler through Tune's ``OptunaSearch`` (tpe | random | nsga2)
over the plugin's space, ASHA on the per-epoch ``val/dice``, and a driver-side callback that records every
trial. Each Tune class is built on first use (importing this module never imports Ray or Optuna) and once.

A trial's state for the searcher: complete (its last epoch reported finite objectives), pruned (ASHA
stopped it) or failed (plugin error, NaN) — never an exception swallowed into a lost trial.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from segarena.platform.records import Settings
from segarena.platform.run.reports import (
    OBJECTIVE,
    SEARCH_ERROR,
    SEARCH_FINAL,
    SEARCH_POINTS,
    SEARCH_STATUS,
    SEARCH_TRIAL_S,
)
from segarena.platform.run.search.plan import SearchOutcome, SearchPlan, TrialRecord, fmt_config
from segarena.platform.run.search.select import select
from segarena.platform.run.search.store import SearchStore
from segarena.platform.scoring.catalog import mode
from segarena.platform.search_space import to_tune

REDUCTION_FACTOR = 2  # ASHA keeps the better half at each rung (a handful of trials per search)
COMPLETE, PRUNED, FAIL = "COMPLETE", "PRUNED", "FAIL"  # Optuna's TrialState names


def trial_state(result: dict[str, Any] | None, error: bool, metrics: list[str]) -> tuple[str, list[float] | None]:
    """A finished Tune trial as Optuna sees it: its state's name and, when complete, its objective values."""

    if error or not result or result.get(SEARCH_STATUS) == "failed":
        return FAIL, None
    if not result.get(SEARCH_FINAL):
        return PRUNED, None
    values = [result.get(m) for m in metrics]
    if any(v is None or not math.isfinite(float(v)) for v in values):
        return FAIL, None
    return COMPLETE, [float(v) for v in values]


def record_state(record: TrialRecord, objectives: list[str]) -> tuple[str, list[float] | None]:
    """A recorded trial (a killed driver's) as Optuna sees it, for the warm start."""
    values = record.objective(objectives)
    state = {"finished": COMPLETE, "stopped": PRUNED}.get(record.status, FAIL)
    if state == COMPLETE and values is None:
        state = FAIL
    return state, values if state == COMPLETE else None


@cache
def searcher_class() -> type:
    """OptunaSearch that records every trial with an explicit state, and takes a warm start."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    State = optuna.trial.TrialState

    class Searcher(OptunaSearch):
        def metrics(self) -> list[str]:
            return list(self._metric) if isinstance(self._metric, list) else [self._metric]

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            value = result.get("val/dice")
            if isinstance(self._metric, list) or value is None or not math.isfinite(value):
                return  # Optuna keeps no intermediate values for several objectives; NaN is a failure
            self._ot_trials[trial_id].report(float(value), int(result["training_iteration"]))

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if trial_id in self._completed_trials:
                return
            state, values = trial_state(result, error, self.metrics())
            self._ot_study.tell(self._ot_trials[trial_id], values, state=State[state])
            self._completed_trials.add(trial_id)

        def feed(self, records: list[TrialRecord], objectives: list[str]) -> None:
            """Warm start from a killed driver's trials, each with its recorded state."""
            for r in records:
                state, values = record_state(r, objectives)
                curve = dict(enumerate(r.curve, 1)) if len(objectives) == 1 and r.curve else None
                self._ot_study.add_trial(optuna.trial.create_trial(
                    state=State[state], values=values, params=r.config, distributions=self._space,
                    intermediate_values=curve))

        def states(self) -> dict[str, int]:
            out: dict[str, int] = {}
            for t in self._ot_study.trials:
                out[t.state.name] = out.get(t.state.name, 0) + 1
            return out

    return Searcher


@cache
def recorder_class() -> type:
    """A Tune callback: the driver-side MLflow record of each trial, and one progress line as each one ends."""
    from ray import tune

    class Recorder(tune.Callback):
        def __init__(self, store: SearchStore, parent: str, records: list[TrialRecord], total: int,
                     echo: Callable[[str], None]) -> None:
            self.store, self.parent, self.records, self.total, self.echo = store, parent, records, total, echo
            self.runs: dict[str, str] = {}
            self.curves: dict[str, list[float]] = {}

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.runs[trial.trial_id] = self.store.start_trial(self.parent, dict(trial.config), trial.trial_id)
            self.curves[trial.trial_id] = []

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:

            if result.get(SEARCH_STATUS) == "failed":
                return
            self.curves[trial.trial_id].append(float(result["val/dice"]))
            self.store.log_epoch(self.runs[trial.trial_id], result)

        def _end(self, trial: Any, error: str = "") -> None:
            run_id = self.runs.pop(trial.trial_id, None)
            if run_id is None:
                return
            record = _trial_record(trial, self.curves.pop(trial.trial_id, []), error, run_id)
            self.store.end_trial(run_id, record)
            self.records.append(record)
            val = f"val/dice {record.curve[-1]:.4f}" if record.curve else record.error[:120]
            self.echo(f"  search {self.store.plan.label}: trial {len(self.records)}/{self.total} {record.status} "
                      f"after {len(record.curve)} epoch(s), {val} · {record.trial_s:.0f}s · "
                      f"{fmt_config(record.config)}")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._end(trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            err = trial.get_error() if hasattr(trial, "get_error") else None
            self._end(trial, error=str(err).strip().splitlines()[-1][:1000] if err else "trial errored")

    return Recorder


def _trial_record(trial: Any, curve: list[float], error: str, run_id: str) -> TrialRecord:
    """What a Tune trial that ended leaves: finished (its last epoch ran), stopped (ASHA) or failed."""

    last = trial.last_result or {}
    if error or last.get(SEARCH_STATUS) == "failed":
        status = "failed"
    else:
        status = "finished" if last.get(SEARCH_FINAL) else "stopped"
    return TrialRecord(config=dict(trial.config), status=status, curve=curve,
                       points=json.loads(last.get(SEARCH_POINTS) or "[]") if status == "finished" else [],
                       trial_s=float(last.get(SEARCH_TRIAL_S, 0.0)), error=error or str(last.get(SEARCH_ERROR, "")),
                       run_id=run_id)


@cache
def scheduler_class() -> type:
    """ASHA that never records a failed trial's NaN in a rung (a NaN there turns the rung's cutoff
    into NaN, and then no later trial is ever stopped); the failed trial ends by itself."""
    from ray.tune.schedulers import ASHAScheduler


    class Scheduler(ASHAScheduler):
        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            if result.get(SEARCH_STATUS) == "failed":
                return self.CONTINUE
            return super().on_trial_result(tune_controller, trial, result)

        def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
            if result.get(SEARCH_STATUS) == "failed":
                self._trial_info.pop(trial.trial_id, None)
                return
            super().on_trial_complete(tune_controller, trial, result)

    return Scheduler


def make_searcher(plan: SearchPlan) -> Any:
    import optuna
    from ray.tune.search.optuna import OptunaSearch


    s = plan.search
    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
                "nsga2": optuna.samplers.NSGAIISampler}
    metrics = [OBJECTIVE[o] for o in s.objectives]
    modes = [mode(o) for o in s.objectives]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return searcher_class()(
        space=OptunaSearch.convert_search_space({k: to_tune(v) for k, v in plan.space.items()}),
        metric=metrics if len(metrics) > 1 else metrics[0], mode=modes if len(modes) > 1 else modes[0],
        sampler=samplers[s.sampler](seed=s.seed), study_name=f"search-{plan.key}")


def run_search(plan: SearchPlan, store: SearchStore, settings: Settings, concurrency: int,
               echo: Callable[[str], None]) -> SearchOutcome:
    """One Tune experiment for ``plan``, resuming an interrupted one; returns its trials and choice."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from segarena.platform.run.search.trainable import search_trainable
    from segarena.platform.store.workdir import WorkDir

    t0 = time.time()
    s = plan.search
    parent = store.open_parent()
    records = store.previous(parent)
    searcher = make_searcher(plan)
    searcher.feed(records, list(s.objectives))
    remaining = s.trials - len(records)
    if records:
        echo(f"search {plan.label}: resuming, {len(records)} trial(s) recorded, {remaining} to run")
    if remaining > 0:
        scheduler = (scheduler_class()(metric="val/dice", mode="max", max_t=s.epochs, grace_period=s.grace_epochs,
                                       reduction_factor=REDUCTION_FACTOR)
                     if s.scheduler == "asha" else FIFOScheduler())
        trainable = tune.with_resources(tune.with_parameters(search_trainable, job=plan.trial_job(settings).to_wire()),
                                        {"cpu": settings.cpus_per_worker, "gpu": settings.gpus_per_worker})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=remaining,
                                        max_concurrent_trials=min(concurrency, remaining), reuse_actors=True),
            run_config=tune.RunConfig(name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
                                      storage_path=str(WorkDir(Path(settings.workdir)).search_dir(plan.key)),
                                      verbose=0, failure_config=tune.FailureConfig(max_failures=0),
                                      callbacks=[recorder_class()(store, parent, records, s.trials, echo)]))
        tuner.fit()
    return SearchOutcome(plan, parent, records, select(records, s), len(searcher._ot_study.trials), searcher.states(),
                         wall_s=time.time() - t0)
