"""The source files behind a plugin class, hashed into the training key: editing a plugin's code retrains
its cells even when nobody bumped its ``version`` (stale results cannot hide behind an unchanged version).

What counts as the plugin's own code: the module defining the class, or its whole package when that module
lives in a regular package (a built-in method's sub-package such as ``methods/medsegdiff/``, a folder
plugin's package, an installed plugin's package), plus every module those files import from the same
plugin area (``segarena.methods`` / ``segarena.datasets`` for built-ins, the top-level package otherwise),
followed transitively. segarena's harness (``segarena.platform``), the standard library and third-party
libraries are not part of it: the harness version and the library versions are recorded as run tags.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import sys
from pathlib import Path

HARNESS = "segarena.platform"


def _area(module: str) -> str:
    """The import prefix whose modules count as the plugin's own code."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "segarena" and len(parts) > 2 else parts[0]


def _file_of(module: str) -> Path | None:
    mod = sys.modules.get(module)
    file = getattr(mod, "__file__", None)
    if file is None:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            return None
        file = spec.origin if spec is not None else None
    return Path(file) if file and file.endswith(".py") else None


def _imports(file: Path, module: str, is_package: bool) -> set[str]:
    """Absolute names of the modules a source file imports (relative imports resolved against ``module``)."""
    try:
        tree = ast.parse(file.read_bytes(), str(file))
    except (OSError, SyntaxError, ValueError):
        return set()
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            out.add(prefix)
            out.update(f"{prefix}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return {m for m in out if m}


def _package_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def plugin_source_files(cls: type) -> dict[str, Path]:
    """The plugin's own source files, keyed by a path relative to the plugin's root (location-independent)."""
    module = cls.__module__
    file = _file_of(module)
    if file is None:
        return {}
    mod = sys.modules.get(module)
    in_package = bool(getattr(mod, "__package__", "")) and (file.parent / "__init__.py").is_file()
    root = file.parent.parent if in_package else file.parent
    area = _area(module)
    seeds = {(module, file)}
    if in_package:
        package = module if file.name == "__init__.py" else module.rpartition(".")[0]
        for p in _package_files(file.parent):
            rel = p.relative_to(file.parent).with_suffix("")
            parts = [x for x in rel.parts if x != "__init__"]
            seeds.add((".".join([package, *parts]), p))
    found: dict[Path, str] = {}
    todo = list(seeds)
    while todo:
        name, path = todo.pop()
        if path in found:
            continue
        found[path] = name
        for dep in _imports(path, name, path.name == "__init__.py"):
            if not (dep == area or dep.startswith(area + ".")) or dep.startswith(HARNESS):
                continue
            dep_file = _file_of(dep)
            if dep_file is not None and dep_file not in found:
                todo.append((dep, dep_file))
    out = {}
    for path in found:
        try:
            key = path.relative_to(root).as_posix()
        except ValueError:
            key = found[path]
        out[key] = path
    return dict(sorted(out.items()))


def plugin_source_hash(cls: type) -> str:
    """SHA-256 (16 hex) over the plugin's own source files and their relative paths; "" when it has none
    on disk (a class defined in an interactive session)."""
    files = plugin_source_files(cls)
    if not files:
        return ""
    digest = hashlib.sha256()
    for key, path in files.items():
        digest.update(key.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]
