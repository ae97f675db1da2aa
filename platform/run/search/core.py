"""The search stage of ``segarena run``: the suite's ``search:`` block tunes every method × dataset
with the same budget (``trials`` trials of at most ``epochs`` epochs), then the selected configs run
as ordinary cells over the suite's seeds on the test split.

Per method × dataset one Ray Tune experiment: Optuna's sampler through Ray Tune's ``OptunaSearch``
(tpe | random | nsga2) over the plugin's ``search_space()`` (narrowed by the suite), ASHA on the
per-epoch ``val/dice``. Each trial trains in the Tune trial's own process on the train split of the
first seed's split (``search_trial.py``) and, once finished, scores its final weights on validation
at every candidate budget (steps × ensemble): inference budgets are searched without retraining.
Selection reads validation only: ``best`` (highest val Dice over (trial, budget)) or ``pareto``
(the non-dominated (trial, budget) points, at most ``max_selected``).

Tracking: one MLflow parent run per search (kind ``search``) with one nested run per trial (kind
``search-trial``: params, per-epoch ``val/dice``, status finished|stopped|failed, trial seconds),
written by the driver (a trial that ASHA stops cannot write its own end). A search has its own key
(plugin version, space, data, the search block, candidate budgets): a finished one is skipped; an
interrupted one resumes — its recorded trials are fed back to the searcher with their states and only
the remaining trials run. Multi-worker (DDP) search trials are not supported yet (refused up front).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from segarena.platform.errors import SpecError
from segarena.platform.records import Budget, Cell, Job, Settings, stable_hash
from segarena.platform.search_space import Choice, Distribution, IntUniform, to_tune

KIND_SEARCH, KIND_TRIAL = "search", "search-trial"
TRIAL_STATUSES = ("finished", "stopped", "failed")  # counted; "interrupted" (killed driver) is rerun
INTERRUPTED = "interrupted: the driver stopped before this trial finished; rerun"
REDUCTION_FACTOR = 2  # ASHA keeps the better half at each rung (a handful of trials per search)
DIRECTION = {"val/dice": "max", "latency_ms": "min", "nfe": "min"}
POINT_FIELD = {"val/dice": "dice", "latency_ms": "latency_ms", "nfe": "nfe"}
P = "segarena."


# validation ------------------------------------------------------------------------------------
def narrow(dist: Distribution, value: Any, where: str) -> Distribution:
    """The plugin's distribution restricted by a suite entry: ``[low, high]`` inside a range, or a
    non-empty subset of a choice's options."""
    if isinstance(dist, Choice):
        options = list(value) if isinstance(value, list | tuple) else [value]
        outside = [o for o in options if o not in dist.options]
        if not options or outside:
            raise SpecError(f"{where}: {value!r} must be a non-empty subset of {list(dist.options)!r}")
        return Choice(options)
    ok = isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value)
    if not ok or not dist.low <= value[0] < value[1] <= dist.high:
        raise SpecError(f"{where}: {value!r} must be [low, high] with {dist.low:g} <= low < high <= {dist.high:g}")
    if isinstance(dist, IntUniform):
        return IntUniform(int(value[0]), int(value[1]))
    return type(dist)(float(value[0]), float(value[1]))


def method_space(cls: Any, narrowing: dict[str, Any] | None, where: str) -> dict[str, Distribution]:
    space = dict(cls.search_space())
    for name, value in (narrowing or {}).items():
        if name not in space:
            raise SpecError(f"{where}.{name}: method {cls.name!r} has no {name!r} in its search_space() (known: "
                            f"{', '.join(sorted(space)) or 'none'})")
        space[name] = narrow(space[name], value, f"{where}.{name}")
    return space


def check_search(spec: Any, registry: Any, path: Path | str) -> None:
    """Spec errors of the search stage, one line naming file, field and value (``expand`` calls this)."""
    for i, m in enumerate(spec.methods):
        where = f"{path}: field methods[{i}].search"
        if m.search is not None and spec.search is None:
            raise SpecError(f"{where}: narrows method {m.name!r}'s search space but the suite has no `search:` block")
        if spec.search is None:
            continue
        try:
            cls = registry.method(m.name)
        except Exception:
            continue  # expand names the unknown plugin
        space = method_space(cls, m.search, where)
        if not space:
            raise SpecError(f"{path}: field methods[{i}].name: method {m.name!r} declares no search_space(), so "
                            "`search:` cannot tune it")
        unknown = sorted(set(space) - set(cls.profiles().get(m.profile, {})))
        if unknown:
            raise SpecError(f"{where}: method {m.name!r} searches {unknown[0]!r}, not a hyperparameter of profile "
                            f"{m.profile!r}")
    if spec.search is not None and spec.resources.workers_per_trial > 1:
        raise SpecError(f"{path}: field resources.workers_per_trial: {spec.resources.workers_per_trial} with "
                        "`search:`: multi-worker search trials are not supported yet (use 1)")


# plans and records -----------------------------------------------------------------------------
@dataclass
class SearchPlan:
    """One search: a method entry × dataset, on its first seed's split."""

    method: str
    dataset: str
    cells: list[Cell]  # the default cells of this entry × dataset, one per seed (tuned cells copy them)
    space: dict[str, Distribution]
    candidates: list[Budget]
    search: dict[str, Any]

    @property
    def base(self) -> Cell:
        return self.cells[0]

    @property
    def key(self) -> str:
        """What defines the search's outcome; the suite's epochs and other seeds are not in it."""
        fields = self.base.training_fields()
        fields.pop("epochs")
        return stable_hash({"search": self.search, "space": {k: repr(v) for k, v in sorted(self.space.items())},
                            "cell": fields, "candidates": [b.as_dict() for b in self.candidates],
                            "evaluation": self.base.evaluation})[:20]

    @property
    def label(self) -> str:
        return f"{self.method} × {self.dataset}"

    def trial_job(self, settings: Settings) -> Job:
        cell = replace(self.base, epochs=int(self.search["epochs"]),
                       budgets=tuple(b.as_dict() for b in self.candidates))
        return Job("train", cell, tuple(self.candidates), settings)


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
        from segarena.platform.run.search.trainable import best_point

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
        head = (f"search {self.plan.label}: {len(self.records)}/{self.plan.search['trials']} trials "
                f"({c['finished']} finished, {c['stopped']} stopped early, {c['failed']} failed; "
                f"{self.trial_s():.0f} trial-s)")
        if not self.selected:
            return head + "; nothing selected (no finished trial)"
        chosen = "; ".join(f"{_fmt_config(p['config'])} at {p['name']}: val/dice {p['dice']:.4f}, "
                           f"{p['latency_ms']:.1f} ms" for p in self.selected)
        return f"{head}; chosen {chosen}" + (" (finished earlier, skipped)" if self.skipped else "")


def _fmt_config(config: dict[str, Any]) -> str:
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
            budgets = group[0].budget_objects()
            candidates = budgets if spec.search.budgets else [min(budgets, key=lambda b: b.nfe)]
            out.append(SearchPlan(m.name, group[0].dataset_label or group[0].dataset, group, space, candidates,
                                  spec.search.model_dump()))
    return out


# selection -------------------------------------------------------------------------------------
def all_points(records: list[TrialRecord]) -> list[dict[str, Any]]:
    return [{**p, "config": r.config, "trial": i} for i, r in enumerate(records) if r.status == "finished"
            for p in r.points]


def dominates(a: dict[str, Any], b: dict[str, Any], objectives: Sequence[str]) -> bool:
    sign = {o: 1.0 if DIRECTION[o] == "max" else -1.0 for o in objectives}
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


def select(records: list[TrialRecord], search: dict[str, Any]) -> list[dict[str, Any]]:
    """Validation-only choice: the best point, or up to ``max_selected`` Pareto points spread along
    the front from the best Dice to the cheapest."""
    points = all_points(records)
    if not points:
        return []
    if search["select"] == "best":
        return [max(points, key=lambda p: (p["dice"], -p["latency_ms"]))]
    front = pareto_front(points, search["objectives"])
    k = min(search["max_selected"], len(front))
    if k == 1:
        return front[:1]
    picks = sorted({round(i * (len(front) - 1) / (k - 1)) for i in range(k)})
    return [front[i] for i in picks]


def tuned_cells(plan: SearchPlan, selected: list[dict[str, Any]]) -> list[Cell]:
    """The selected configs as ordinary cells over the suite's seeds: one training per selected
    trial, evaluated at its selected budgets (all the entry's budgets when budgets are not searched)."""
    by_trial: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for p in selected:
        key = json.dumps(p["config"], sort_keys=True, default=str)
        by_trial.setdefault(key, (p["config"], []))[1].append(p["budget"])
    out = []
    for config, budgets in by_trial.values():
        for cell in plan.cells:
            chosen = tuple(budgets) if plan.search["budgets"] else cell.budgets
            out.append(replace(cell, hparams={**cell.hparams, **config}, budgets=chosen))
    return out


# MLflow ----------------------------------------------------------------------------------------
class SearchStore:
    """The search's MLflow records in the suite's experiment (driver side only)."""

    def __init__(self, tracker: Any, experiment_id: str, plan: SearchPlan, settings: Settings) -> None:
        self.tracker, self.exp, self.plan, self.settings = tracker, experiment_id, plan, settings

    def _runs(self, kind: str) -> list[Any]:
        return [r for r in self.tracker.runs([self.exp], kind) if r.data.tags.get(P + "search_key") == self.plan.key]

    def finished(self) -> Any | None:
        done = [r for r in self._runs(KIND_SEARCH) if r.data.tags.get(P + "status") == "finished"
                and r.info.status == "FINISHED"]
        return max(done, key=lambda r: r.info.start_time) if done else None

    def open_parent(self) -> str:
        """The unfinished parent of this search (a killed driver's) or a new one."""
        from segarena.platform.store.tracking import _retry

        live = sorted(self._runs(KIND_SEARCH), key=lambda r: -r.info.start_time)
        if live:
            run_id = live[0].info.run_id
            _retry(lambda: self.tracker.client.update_run(run_id, status="RUNNING"))
            self.tracker.set_tags(run_id, {P + "status": "running"})
            return run_id
        plan, s = self.plan, self.settings
        tags = {P + "kind": KIND_SEARCH, P + "status": "running", P + "search_key": plan.key,
                P + "suite": plan.base.suite, P + "method": plan.method, P + "dataset": plan.dataset,
                P + "profile": plan.base.profile, P + "plugin_version": plan.base.plugin_version,
                P + "seed": str(plan.base.seed), P + "version": s.segarena_version, P + "git_sha": s.git_sha,
                P + "driver": s.driver}
        run = _retry(lambda: self.tracker.client.create_run(self.exp, run_name=f"search-{plan.method}-{plan.dataset}",
                                                            tags=tags))
        from segarena.platform.store.tracking import _flat

        self.tracker._params(run.info.run_id, _flat({"search": plan.search, "space": {k: repr(v) for k, v in
                                                                                       plan.space.items()},
                                                     "candidates": ",".join(b.name for b in plan.candidates)}))
        return run.info.run_id

    def previous(self, parent: str) -> list[TrialRecord]:
        """The trials a killed driver recorded (finished/stopped/failed); its live ones become interrupted."""
        out = []
        for r in sorted(self._runs(KIND_TRIAL), key=lambda r: r.info.start_time):
            if r.data.tags.get(P + "parent") != parent:
                continue
            status = r.data.tags.get(P + "trial_status", "running")
            if status not in TRIAL_STATUSES:
                if status == "running":
                    self.tracker.fail_run(r.info.run_id, INTERRUPTED)
                    self.tracker.set_tags(r.info.run_id, {P + "trial_status": "interrupted"})
                continue
            curve = [m.value for m in sorted(self.tracker.client.get_metric_history(r.info.run_id, "val/dice"),
                                             key=lambda m: m.step)]
            out.append(TrialRecord(config=json.loads(r.data.tags[P + "trial_config"]), status=status, curve=curve,
                                   points=json.loads(r.data.tags.get(P + "trial_points", "[]")),
                                   trial_s=r.data.metrics.get("trial_s", 0.0), error=r.data.tags.get(P + "error", ""),
                                   run_id=r.info.run_id))
        return out

    def start_trial(self, parent: str, config: dict[str, Any], tune_id: str) -> str:
        from segarena.platform.store.tracking import _flat, _retry

        plan = self.plan
        tags = {P + "kind": KIND_TRIAL, P + "status": "running", P + "trial_status": "running",
                P + "search_key": plan.key, P + "parent": parent, "mlflow.parentRunId": parent,
                P + "method": plan.method, P + "dataset": plan.dataset, P + "suite": plan.base.suite,
                P + "trial_config": json.dumps(config, sort_keys=True, default=str), P + "tune_trial": tune_id}
        run = _retry(lambda: self.tracker.client.create_run(self.exp, run_name=f"trial-{plan.method}-{tune_id}",
                                                            tags=tags))
        self.tracker._params(run.info.run_id, _flat({"hparams": config}))
        return run.info.run_id

    def log_epoch(self, run_id: str, result: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        from segarena.platform.store.tracking import _retry

        step, now = int(result.get("epoch", 0)), int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in result.items()
                 if k.startswith(("train/", "val/")) and isinstance(v, int | float) and math.isfinite(v)]
        if batch:
            _retry(lambda: self.tracker.client.log_batch(run_id, metrics=batch, synchronous=True))

    def end_trial(self, run_id: str, record: TrialRecord) -> None:
        from segarena.platform.store.tracking import _retry

        metrics = {"trial_s": record.trial_s, "epochs_run": float(len(record.curve))}
        for p in record.points:
            metrics |= {f"budget/{p['name']}/val_dice": p["dice"], f"budget/{p['name']}/latency_ms": p["latency_ms"]}
        self.tracker.log_metrics(run_id, metrics)
        self.tracker.set_tags(run_id, {P + "trial_status": record.status,
                                       P + "trial_points": json.dumps(record.points, default=str)})
        if record.status == "failed":
            self.tracker.fail_run(run_id, record.error or "failed")
            return
        self.tracker.set_tags(run_id, {P + "status": "finished"})
        _retry(lambda: self.tracker.client.set_terminated(run_id, "FINISHED"))

    def finish(self, parent: str, outcome: SearchOutcome, cell_keys: list[str]) -> None:
        from segarena.platform.store.tracking import _retry

        c = outcome.counts()
        self.tracker.log_metrics(parent, {"trials": float(len(outcome.records)), "trials_finished": c["finished"],
                                          "trials_stopped": c["stopped"], "trials_failed": c["failed"],
                                          "searcher_trials": float(outcome.searcher_trials),
                                          "search_trial_s": outcome.trial_s(),
                                          **({"best/val_dice": outcome.selected[0]["dice"]} if outcome.selected
                                             else {})})
        self.tracker._put(parent, {"selection.json": outcome.selected, "points.json": all_points(outcome.records),
                                   "trials.json": [asdict(r) for r in outcome.records]})
        self.tracker.set_tags(parent, {P + "tuned_cells": ",".join(cell_keys), P + "summary": outcome.line()[:4900],
                                       P + "searcher_states": json.dumps(outcome.searcher_states),
                                       P + "status": "finished"})
        _retry(lambda: self.tracker.client.set_terminated(parent, "FINISHED"))

    def add_cells(self, run: Any, cell_keys: list[str]) -> None:
        """A finished search reused with other seeds or epochs: its new tuned cells join its tag."""
        known = [k for k in run.data.tags.get(P + "tuned_cells", "").split(",") if k]
        new = [k for k in cell_keys if k not in known]
        if new:
            self.tracker.set_tags(run.info.run_id, {P + "tuned_cells": ",".join(known + new)})


# Ray Tune pieces (built lazily: importing this module never imports Ray) ------------------------
_TUNE: dict[str, type] = {}


def _tune_classes() -> tuple[type, type]:
    if _TUNE:
        return _TUNE["searcher"], _TUNE["recorder"]
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from segarena.platform.run.search.trainable import FINAL_KEY, STATUS_KEY

    State = optuna.trial.TrialState

    def outcome(result: dict[str, Any] | None, error: bool, metrics: list[str]) -> tuple[Any, list[float] | None]:
        if error or not result or result.get(STATUS_KEY) == "failed":
            return State.FAIL, None
        if not result.get(FINAL_KEY):
            return State.PRUNED, None
        values = [result.get(m) for m in metrics]
        if any(v is None or not math.isfinite(float(v)) for v in values):
            return State.FAIL, None
        return State.COMPLETE, [float(v) for v in values]

    class Searcher(OptunaSearch):
        """OptunaSearch that records every trial with an explicit state: complete, pruned (ASHA
        stopped it) or failed (plugin error, NaN), never an exception swallowed into a lost trial."""

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
            state, values = outcome(result, error, self.metrics())
            self._ot_study.tell(self._ot_trials[trial_id], values, state=state)
            self._completed_trials.add(trial_id)

        def feed(self, records: list[TrialRecord], objectives: list[str]) -> None:
            """Warm start from a killed driver's trials, each with its recorded state."""
            for r in records:
                values = r.objective(objectives)
                state = {"finished": State.COMPLETE, "stopped": State.PRUNED}.get(r.status, State.FAIL)
                if state == State.COMPLETE and values is None:
                    state = State.FAIL
                one = len(objectives) == 1
                curve = dict(enumerate(r.curve, 1)) if one and r.curve else None
                trial = optuna.trial.create_trial(
                    state=state, values=values if state == State.COMPLETE else None, params=r.config,
                    distributions=self._space, intermediate_values=curve)
                self._ot_study.add_trial(trial)

        def states(self) -> dict[str, int]:
            out: dict[str, int] = {}
            for t in self._ot_study.trials:
                out[t.state.name] = out.get(t.state.name, 0) + 1
            return out

    class Recorder(tune.Callback):
        """Driver-side MLflow record of each trial, and one progress line as each one ends."""

        def __init__(self, store: SearchStore, parent: str, records: list[TrialRecord], total: int,
                     echo: Callable[[str], None]) -> None:
            self.store, self.parent, self.records, self.total, self.echo = store, parent, records, total, echo
            self.runs: dict[str, str] = {}
            self.curves: dict[str, list[float]] = {}

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.runs[trial.trial_id] = self.store.start_trial(self.parent, dict(trial.config), trial.trial_id)
            self.curves[trial.trial_id] = []

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            if result.get(STATUS_KEY) == "failed":
                return
            self.curves[trial.trial_id].append(float(result["val/dice"]))
            self.store.log_epoch(self.runs[trial.trial_id], result)

        def _end(self, trial: Any, error: str = "") -> None:
            from segarena.platform.run.search.trainable import ERROR_KEY, POINTS_KEY, TRIAL_S_KEY

            run_id = self.runs.pop(trial.trial_id, None)
            if run_id is None:
                return
            last = trial.last_result or {}
            if error or last.get(STATUS_KEY) == "failed":
                status = "failed"
            else:
                status = "finished" if last.get(FINAL_KEY) else "stopped"
            record = TrialRecord(config=dict(trial.config), status=status, curve=self.curves.pop(trial.trial_id, []),
                                 points=json.loads(last.get(POINTS_KEY) or "[]") if status == "finished" else [],
                                 trial_s=float(last.get(TRIAL_S_KEY, 0.0)),
                                 error=error or str(last.get(ERROR_KEY, "")), run_id=run_id)
            self.store.end_trial(run_id, record)
            self.records.append(record)
            val = f"val/dice {record.curve[-1]:.4f}" if record.curve else record.error[:120]
            self.echo(f"  search {self.store.plan.label}: trial {len(self.records)}/{self.total} {status} after "
                      f"{len(record.curve)} epoch(s), {val} · {record.trial_s:.0f}s · {_fmt_config(record.config)}")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._end(trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            err = trial.get_error() if hasattr(trial, "get_error") else None
            self._end(trial, error=str(err).strip().splitlines()[-1][:1000] if err else "trial errored")

    from ray.tune.schedulers import ASHAScheduler

    class Scheduler(ASHAScheduler):
        """ASHA that never records a failed trial's NaN in a rung (a NaN there turns the rung's cutoff
        into NaN, and then no later trial is ever stopped); the failed trial ends by itself."""

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            if result.get(STATUS_KEY) == "failed":
                return self.CONTINUE
            return super().on_trial_result(tune_controller, trial, result)

        def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
            if result.get(STATUS_KEY) == "failed":
                self._trial_info.pop(trial.trial_id, None)
                return
            super().on_trial_complete(tune_controller, trial, result)

    _TUNE.update(searcher=Searcher, recorder=Recorder, scheduler=Scheduler)
    return Searcher, Recorder


def make_searcher(plan: SearchPlan) -> Any:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    s = plan.search
    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
                "nsga2": optuna.samplers.NSGAIISampler}
    from segarena.platform.run.search.trainable import OBJECTIVE

    metrics = [OBJECTIVE[o] for o in s["objectives"]]
    modes = [DIRECTION[o] for o in s["objectives"]]
    Searcher, _ = _tune_classes()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return Searcher(space=OptunaSearch.convert_search_space({k: to_tune(v) for k, v in plan.space.items()}),
                    metric=metrics if len(metrics) > 1 else metrics[0], mode=modes if len(modes) > 1 else modes[0],
                    sampler=samplers[s["sampler"]](seed=s["seed"]), study_name=f"search-{plan.key}")


def live_placement_groups() -> list[str]:
    """Placement groups Ray still holds (a stopped trial that leaked its group shows up here)."""
    import ray.util

    return [pg_id for pg_id, info in ray.util.placement_group_table().items()
            if info.get("state") not in ("REMOVED",)]


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
    searcher.feed(records, s["objectives"])
    remaining = s["trials"] - len(records)
    if records:
        echo(f"search {plan.label}: resuming, {len(records)} trial(s) recorded, {remaining} to run")
    if remaining > 0:
        _, Recorder = _tune_classes()
        asha = _TUNE["scheduler"]
        scheduler = (asha(metric="val/dice", mode="max", max_t=s["epochs"], grace_period=s["grace_epochs"],
                          reduction_factor=REDUCTION_FACTOR) if s["scheduler"] == "asha" else FIFOScheduler())
        trainable = tune.with_resources(tune.with_parameters(search_trainable, job=plan.trial_job(settings).to_wire()),
                                        {"cpu": settings.cpus_per_worker, "gpu": settings.gpus_per_worker})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=remaining,
                                        max_concurrent_trials=min(concurrency, remaining), reuse_actors=True),
            run_config=tune.RunConfig(name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
                                      storage_path=str(WorkDir(Path(settings.workdir)).search_dir(plan.key)),
                                      verbose=0, failure_config=tune.FailureConfig(max_failures=0),
                                      callbacks=[Recorder(store, parent, records, s["trials"], echo)]))
        tuner.fit()
    out = SearchOutcome(plan, parent, records, select(records, s), len(searcher._ot_study.trials), searcher.states(),
                        wall_s=time.time() - t0)
    return out


def _from_finished(plan: SearchPlan, run: Any, store: SearchStore) -> SearchOutcome:
    records = [TrialRecord(**t) for t in store.tracker.load_json(run.info.run_id, "trials.json")]
    selected = store.tracker.load_json(run.info.run_id, "selection.json")
    states = json.loads(run.data.tags.get(P + "searcher_states", "{}"))
    return SearchOutcome(plan, run.info.run_id, records, selected, int(run.data.metrics.get("searcher_trials", 0)),
                         states, skipped=True)


def _leak_warnings(plan: SearchPlan, registry: Any, cache: Path) -> list[str]:
    """Seeds other than the searched one split the data differently: their test cases may have
    been validation cases of the search. Said, not hidden."""
    if len(plan.cells) < 2:
        return []
    from segarena.platform.run.cell_data import open_dataset

    base = plan.base
    ds = open_dataset(registry, base.dataset, base.dataset_path, base.dataset_params, cache)
    val = set(ds.split(base.seed).val)
    out = []
    for cell in plan.cells[1:]:
        shared = len(val & set(ds.split(cell.seed).test))
        if shared:
            out.append(f"search {plan.label}: seed {cell.seed}'s test split holds {shared} of the {len(val)} "
                       f"validation cases the search selected on (seed {base.seed}'s split)")
    return out


def run_searches(spec: Any, path: Path | str, cells: list[Cell], tracker: Any, settings: Settings,
                 address: str | None = None, verbose: bool = False,
                 echo: Callable[[str], None] = print) -> list[Cell]:
    """The search stage: every method × dataset searched (or its finished search reused), then the
    selected configs as extra cells (``tuned``) to plan like the others. [] without a ``search:``."""
    if spec.search is None:
        return []
    return [c for o in search_outcomes(spec, path, cells, tracker, settings, address, verbose, echo)
            for c in o[1]]


def search_outcomes(spec: Any, path: Path | str, cells: list[Cell], tracker: Any, settings: Settings,
                    address: str | None, verbose: bool,
                    echo: Callable[[str], None]) -> list[tuple[SearchOutcome, list[Cell]]]:
    from segarena.platform.plugins.registry import discover
    from segarena.platform.run.cluster import check_shared_storage, connect
    from segarena.platform.run.driver import plan_concurrency
    from segarena.platform.store.workdir import WorkDir

    registry = discover(settings.plugin_dirs, use_env=False)
    todo = plans(spec, cells, registry, path)
    existing = {c.key for c in cells}
    results: list[tuple[SearchOutcome, list[Cell]]] = []
    handle = None
    echo(f"search: {len(todo)} search(es) of {spec.search.trials} trial(s) × ≤ {spec.search.epochs} epoch(s) "
         f"({spec.search.sampler}, {spec.search.scheduler}, objectives {', '.join(spec.search.objectives)})")
    try:
        for plan in todo:
            store = SearchStore(tracker, settings.experiment_id, plan, settings)
            for line in _leak_warnings(plan, registry, WorkDir(Path(settings.workdir)).cache):
                echo("warning: " + line)
            done = store.finished()
            if done is not None:
                outcome = _from_finished(plan, done, store)
            else:
                import ray

                if handle is None:
                    handle = connect(address, verbose=bool(verbose))
                    # trials read the dataset cache and write Tune storage in the work dir, on any node
                    check_shared_storage(WorkDir(Path(settings.workdir)).root, handle.nodes)
                cluster = ray.cluster_resources()
                res = spec.resources.model_dump()
                concurrency = plan_concurrency(cluster.get("CPU", 0), cluster.get("GPU", 0), res, plan.search["trials"])
                outcome = run_search(plan, store, settings, concurrency, echo)
            new = [c for c in tuned_cells(plan, outcome.selected) if c.key not in existing]
            existing |= {c.key for c in new}
            keys = [c.key for c in tuned_cells(plan, outcome.selected)]
            if done is None:
                store.finish(outcome.run_id, outcome, keys)
            else:
                store.add_cells(done, keys)
            echo(outcome.line())
            if outcome.searcher_trials != len(outcome.records) and not outcome.skipped:
                echo(f"warning: search {plan.label}: the searcher recorded {outcome.searcher_trials} trial(s), "
                     f"MLflow {len(outcome.records)}")
            results.append((outcome, new))
    finally:
        if handle is not None:
            handle.shutdown()  # a Ray this process did not start (a test's) is left running
    return results


def search_summary(tracker: Any, experiment_id: str) -> list[str]:
    """One line per finished search of a suite: trials run / stopped / failed, the chosen configs
    and budgets with their val score (what ``segarena run`` prints at the end)."""
    newest: dict[tuple[str, str], Any] = {}
    for r in sorted(tracker.runs([experiment_id], KIND_SEARCH), key=lambda r: r.info.start_time):
        if r.data.tags.get(P + "status") == "finished":
            newest[(r.data.tags.get(P + "method", ""), r.data.tags.get(P + "dataset", ""))] = r
    return [r.data.tags.get(P + "summary", "") for r in newest.values()]
