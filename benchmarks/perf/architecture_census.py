"""The shape of platform/ at two revisions: files, import floors, arrows, cycles, back-arrows, long files and
long functions, counted by the same AST code as tests/test_architecture.py.

Run: ``python benchmarks/perf/architecture_census.py [--before REV] [--after REV]`` (default: the commit
before issue 22's refactor and the working tree). Each revision is exported with ``git archive`` into a
temporary folder; nothing is imported from it. Writes results/architecture_census.{json,md}.

- files: ``.py`` files under platform/;
- floors: the longest chain of imports between platform/ modules (each module on the chain imports the
  next), cycles contracted first;
- arrows: imports between two platform/ modules (lazy imports inside functions count);
- cycles: strongly connected groups of modules, anywhere in the five packages;
- back-arrows: platform/ importing benchmarks/ (nothing may), or dashboards/ from below the CLI;
- rooms on the longest chain: the same longest chain over rooms (docs/architecture.md's folders; before the
  refactor every file was its own room);
- long files: over 400 lines in platform/, methods/, datasets/; long functions: over 60 lines there.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
BEFORE = "4a8f956"  # main before "Rooms along the pipeline"


def _architecture():
    spec = importlib.util.spec_from_file_location("architecture_rules", REPO / "tests" / "test_architecture.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def export(rev: str | None, into: Path) -> Path:
    """The tree of ``rev`` (None: the working tree as it is) under ``into``."""
    if rev is None:
        return REPO
    data = subprocess.run(["git", "archive", rev], cwd=REPO, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def longest_chain(edges: dict[str, frozenset[str]], cycles: list[list[str]]) -> int:
    """Modules on the longest import chain, each strongly connected group counted as one."""
    group = {m: min(c) for c in cycles for m in c}
    contracted: dict[str, set[str]] = {}
    for a, targets in edges.items():
        contracted.setdefault(group.get(a, a), set()).update(group.get(b, b) for b in targets)

    @cache
    def depth(v: str) -> int:
        return 1 + max((depth(w) for w in contracted.get(v, ()) if w != v), default=0)

    sys.setrecursionlimit(10_000)
    return max(depth(v) for v in contracted)


def census(root: Path, rules) -> dict:
    rules.modules.cache_clear()
    rules.graph.cache_clear()
    mods = rules.modules(root)
    edges = rules.graph(root)
    plat = {m for m in mods if m.startswith("segarena.platform")}
    plat_edges = {a: frozenset(b for b in edges[a] if b in plat) for a in plat}
    cycles = rules.cycles(edges)
    back = sorted(f"{a} → {b}" for a in plat for b in edges[a] if b.startswith("segarena.benchmarks")
                  or (b.startswith("segarena.dashboards") and not a.startswith("segarena.platform.cli")))
    sized = [m for m in mods.values() if m.path.relative_to(root).parts[0] in rules.SIZED]
    long_files = {str(m.path.relative_to(root)): n for m in sized if (n := len(m.path.read_text().splitlines())) > 400}
    long_functions = {}
    for m in sized:
        for node in ast.walk(m.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > rules.MAX_FUNCTION:
                    long_functions[f"{m.path.relative_to(root)}:{node.name}"] = n
    plat_cycles = rules.cycles(plat_edges)
    room_of = {m: rules.floor(m)[0] if (root / "platform" / "spec").is_dir() else m for m in plat}
    room_edges: dict[str, frozenset[str]] = {}
    for a in plat:
        room_edges[room_of[a]] = room_edges.get(room_of[a], frozenset()) | {room_of[b] for b in plat_edges[a]}
    return {"files": len(plat), "top_level_files": sum(1 for m in plat if mods[m].path.parent == root / "platform"),
            "floors": longest_chain(plat_edges, plat_cycles),
            "room_floors": longest_chain(room_edges, rules.cycles(room_edges)),
            "arrows": sum(len(v) for v in plat_edges.values()),
            "cycles": cycles, "back_arrows": back, "files_over_400": long_files,
            "functions_over_60": long_functions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE)
    parser.add_argument("--after", default=None, help="a revision (default: the working tree)")
    args = parser.parse_args()
    rules = _architecture()
    with tempfile.TemporaryDirectory() as tmp:
        before = census(export(args.before, Path(tmp) / "before"), rules)
        after = census(export(args.after, Path(tmp) / "after"), rules)
    result = {"before_rev": args.before, "after_rev": args.after or "working tree", "before": before, "after": after}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "architecture_census.json").write_text(json.dumps(result, indent=1) + "\n")
    rows = [("files in platform/", "files"), ("of them at its top level", "top_level_files"),
            ("modules on the longest import chain", "floors"), ("rooms on the longest import chain", "room_floors"),
            ("arrows inside platform/", "arrows")]
    lines = [f"# Architecture census: {args.before} → {args.after or 'working tree'}", "",
             "| | before | after |", "|---|---|---|"]
    lines += [f"| {label} | {before[key]} | {after[key]} |" for label, key in rows]
    for label, key in (("import cycles", "cycles"), ("back-arrows to dashboards/ or benchmarks/", "back_arrows"),
                       ("files over 400 lines", "files_over_400"), ("functions over 60 lines", "functions_over_60")):
        lines.append(f"| {label} | {len(before[key])} | {len(after[key])} |")
    lines += ["", "Before, in detail: " + json.dumps({k: before[k] for k in ("cycles", "back_arrows", "files_over_400",
                                                                             "functions_over_60")}, indent=1)]
    (RESULTS / "architecture_census.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
