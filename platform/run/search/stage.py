"""The search stage of ``segarena run``: the suite's ``search:`` block tunes every method × dataset
with the same budget (``trials`` trials of at most ``epochs`` epochs), then the selected configs run
as ordinary cells over the suite's seeds on the test split.

Per method × dataset one Ray Tune experiment (run/search/tune.py). Each trial trains in the Tune trial's
own process on the train split of the first seed's split (run/search/trainable.py) and, once finished,
scores its final weights on validation at every candidate budget (steps × ensemble): inference budgets
are searched without retraining. Selection reads validation only (run/search/select.py): ``best``
(highest val Dice over (trial, budget)) or ``pareto`` (the non-dominated (trial, budget) points, at
most ``max_selected``).

A search has its own key (plugin version, space, data, the search block, candidate budgets): a finished
one is skipped; an interrupted one resumes — its recorded trials (run/search/store.py) are fed back to
the searcher with their states and only the remaining trials run. Multi-worker (DDP) search trials are
not supported yet (refused up front by spec/search.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from segarena.platform.records import Cell, Settings
from segarena.platform.run.search.plan import SearchOutcome, SearchPlan, TrialRecord, plans, tuned_cells
from segarena.platform.run.search.store import SearchStore
from segarena.platform.store.schema import KIND_SEARCH, SELECTION_FILE, TRIALS_FILE, SearchRun


def _from_finished(plan: SearchPlan, run: SearchRun, store: SearchStore) -> SearchOutcome:
    records = [TrialRecord(**t) for t in store.tracker.load_json(run.run_id, TRIALS_FILE)]
    selected = store.tracker.load_json(run.run_id, SELECTION_FILE)
    return SearchOutcome(plan, run.run_id, records, selected, int(run.searcher_trials), dict(run.searcher_states),
                         skipped=True)


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


def _searched(plan: SearchPlan, store: SearchStore, spec: Any, settings: Settings, ray: Any,
              echo: Callable[[str], None]) -> SearchOutcome:
    """Run one search on the connected Ray, as many trials at once as the cluster holds."""
    from segarena.platform.run.concurrency import plan_concurrency
    from segarena.platform.run.search.tune import run_search

    cluster = ray.cluster_resources()
    concurrency = plan_concurrency(cluster.get("CPU", 0), cluster.get("GPU", 0), spec.resources, plan.search.trials)
    return run_search(plan, store, settings, concurrency, echo)


def search_outcomes(spec: Any, path: Path | str, cells: list[Cell], tracker: Any, settings: Settings,
                    address: str | None, verbose: bool,
                    echo: Callable[[str], None]) -> list[tuple[SearchOutcome, list[Cell]]]:
    """Each search's outcome and the new tuned cells it adds (a cell already planned is not added twice)."""
    from segarena.platform.plugins.registry import discover
    from segarena.platform.run.cluster import check_shared_storage, connect
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
                outcome = _searched(plan, store, spec, settings, ray, echo)
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
    newest: dict[tuple[str, str], SearchRun] = {}
    runs = sorted(map(SearchRun.from_mlflow, tracker.runs([experiment_id], KIND_SEARCH)), key=lambda r: r.start_time)
    for r in runs:
        if r.status == "finished":
            newest[(r.method, r.dataset)] = r
    return [r.summary for r in newest.values()]
