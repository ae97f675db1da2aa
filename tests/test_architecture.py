"""The shape of the code, checked from the source alone (AST, no imports, well under a second).

Folders are stages and imports only go down the floors of ``docs/architecture.md``: no cycles, no arrow
up a floor, no file over 400 lines, no function over 60 lines without a reason in its docstring, no torch
where the store is read, no Ray or MLflow in methods.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"platform": "segarena.platform", "methods": "segarena.methods", "datasets": "segarena.datasets",
            "dashboards": "segarena.dashboards", "benchmarks": "segarena.benchmarks"}
SIZED = ("platform", "methods", "datasets")
MAX_LINES, MAX_FUNCTION = 400, 60
LONG_REASON = "Long because"  # a function over MAX_FUNCTION lines says why in its docstring with these words

# Floors, bottom up (docs/architecture.md): a module imports its own room or rooms on lower floors only.
BASE = ("api", "errors", "paths", "log", "records", "search_space")
FLOORS: dict[str, int] = {
    **{f"segarena.platform.{m}": 0 for m in BASE},
    "segarena.platform.plugins.hparams": 0,  # imports nothing; MethodPlugin.validate_hparams' default uses it
    "segarena.platform.scoring.catalog": 0,  # the metric table: plain facts every floor reads (store, board, search)
    "segarena.platform.plugin": 1, "segarena.platform.dataset": 2,  # the plugin contract labs import
    "segarena.platform.scoring": 3, "segarena.platform.store": 3,
    "segarena.platform.plugins": 4, "segarena.methods": 4, "segarena.datasets": 4,
    "segarena.platform.conformance": 5,  # the public re-export of plugins/' conformance classes
    **{f"segarena.platform.{m}": 5 for m in ("dataset_conformance", "verify", "hparam_check", "metrics")},  # aliases
    "segarena.platform.spec": 5, "segarena.platform.board": 5,
    "segarena.platform.run": 6,
    "segarena.dashboards": 7,
    "segarena.platform.cli": 8,
    "segarena.benchmarks": 9,  # scripts that drive everything; nothing imports them
}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module


@cache
def modules(root: Path = ROOT) -> dict[str, Module]:
    """Every module of the five packages under ``root`` (a checkout; benchmarks/perf/architecture_census.py
    passes an older one)."""
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(root / folder).with_suffix("").parts if p != "__init__"]
            if "results" in parts:
                continue
            name = ".".join([package, *parts])
            out[name] = Module(name, path, ast.parse(path.read_text(), str(path)))
    return out


def _imported(mod: Module, known: dict[str, Module]) -> set[str]:
    """segarena modules ``mod`` imports anywhere (lazy imports inside functions count: they are arrows too).
    ``from pkg import sub`` is an arrow to ``pkg.sub`` when that is a module, else to ``pkg``."""
    package = mod.name.split(".") if mod.path.name == "__init__.py" else mod.name.split(".")[:-1]
    out = set()
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names} & known.keys()
            out |= subs or ({base} & known.keys())
    out.discard(mod.name)
    return out


@cache
def graph(root: Path = ROOT) -> dict[str, frozenset[str]]:
    known = modules(root)
    return {name: frozenset(_imported(mod, known)) for name, mod in known.items()}


def floor(name: str) -> tuple[str, int]:
    """The room of a module (the longest prefix in FLOORS; the ground floor's modules are one room) and its floor."""
    room = max((r for r in FLOORS if name == r or name.startswith(r + ".")), key=len)
    return (room if FLOORS[room] else "ground"), FLOORS[room]


def cycles(edges: dict[str, frozenset[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset()}) == [
        ["a", "b", "c"]]


def test_every_module_has_a_floor():
    assert [m for m in modules() if not any(m == r or m.startswith(r + ".") for r in FLOORS)] == []


def test_imports_only_go_down_the_floors():
    """An arrow to another room must go to a lower floor: the data flows one way and so do the imports."""
    up = []
    for name, targets in graph().items():
        room, level = floor(name)
        for target in sorted(targets):
            target_room, target_level = floor(target)
            if target_room != room and target_level >= level:
                up.append(f"{name} (floor {level}) → {target} (floor {target_level})")
    assert up == []


def test_floor_check_catches_an_arrow_up():
    assert floor("segarena.platform.store.tracking")[1] < floor("segarena.platform.run.driver")[1]
    assert floor("segarena.platform.board.leaderboard")[1] < floor("segarena.dashboards.report")[1]


def _sized() -> list[Module]:
    return [m for m in modules().values() if m.path.relative_to(ROOT).parts[0] in SIZED]


def test_no_file_over_400_lines():
    sizes = {str(m.path.relative_to(ROOT)): len(m.path.read_text().splitlines()) for m in _sized()}
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}


def test_no_function_over_60_lines_without_a_reason():
    long = []
    for mod in _sized():
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION and LONG_REASON not in (ast.get_docstring(node) or ""):
                    long.append(f"{mod.path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


def _third_party(mod: Module) -> set[str]:
    out = set()
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_methods_never_import_ray_or_mlflow():
    bad = {m.name: sorted(_third_party(m) & {"ray", "mlflow"}) for m in modules().values()
           if m.name.startswith("segarena.methods")}
    assert {k: v for k, v in bad.items() if v} == {}


@pytest.mark.parametrize("module", ["segarena.platform.board.leaderboard", "segarena.platform.store.tracking",
                                    "segarena.dashboards.report", "segarena.platform.cli.leaderboard"])
def test_reading_the_store_never_imports_torch(module):
    """Leaderboards and reports run where no torch is installed: importing their modules loads no torch."""
    code = f"import sys, importlib; importlib.import_module({module!r}); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_shipped_suites_are_found_by_path():
    from segarena.platform.paths import shipped_suites

    assert "default" in shipped_suites()


@pytest.mark.parametrize(("old", "new", "name"), [
    ("dataset_conformance", "plugins.dataset_conformance", "DatasetConformance"),
    ("verify", "scoring.checks", "count_denoiser_calls"),
    ("hparam_check", "plugins.hparams", "check_like_profiles"),
    ("metrics", "scoring.metrics", "per_case_metrics"),
])
def test_moved_public_modules_still_import_with_a_deprecation_warning(old, new, name):
    """Modules the README of plugin API 1.x pointed labs at keep working from their old path."""
    import importlib
    import warnings

    sys.modules.pop(f"segarena.platform.{old}", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        alias = importlib.import_module(f"segarena.platform.{old}")
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)
    assert getattr(alias, name) is getattr(importlib.import_module(f"segarena.platform.{new}"), name)


def test_every_segarena_exception_is_a_segarena_error():
    """The CLI prints any SegarenaError as one line: no exception class of the harness stands outside the family."""
    import importlib
    import inspect

    from segarena.platform.errors import SegarenaError

    aliases = {f"segarena.platform.{m}" for m in ("dataset_conformance", "verify", "hparam_check", "metrics")}
    outside = []
    for name, mod in modules().items():
        if not name.startswith("segarena.platform") or name in aliases or name.endswith("__main__"):
            continue
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                cls = getattr(importlib.import_module(name), node.name)
                if inspect.isclass(cls) and not issubclass(cls, SegarenaError):
                    outside.append(f"{name}.{node.name}")
    assert outside == []
