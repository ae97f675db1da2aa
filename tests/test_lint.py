"""The tree stays ruff-clean (pyproject.toml [tool.ruff])."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_namespace_folders_have_no_init():
    """A regular `platform` package at the root would shadow the standard library's `platform` (README, "Layout")."""
    for folder in ("platform", "methods", "datasets", "benchmarks", "dashboards"):
        assert not (ROOT / folder / "__init__.py").exists(), folder


def test_methods_and_datasets_never_import_ray_or_mlflow():
    """The plugin contract: the harness owns Ray and MLflow. Checked on the source (any import form),
    so a lazy import inside a function counts too."""
    import ast

    offenders = []
    for folder in ("methods", "datasets"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                              if n.split(".")[0] in ("ray", "mlflow")]
    assert not offenders, offenders


def test_repository_docs_cite_their_own_docs():
    """The repository is self-contained: no docstring or card cites design notes that are not in it."""
    cited = ("DESIGN" + ".md", "shared" + "/specs", "../" + "shared")  # spelled apart: this file is scanned too
    hits = []
    for path in sorted(ROOT.rglob("*")):
        if path.suffix not in (".py", ".md") or ".venv" in path.parts or "segarena-runs" in path.parts:
            continue
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if any(c in line for c in cited):
                hits.append(f"{path.relative_to(ROOT)}:{i}")
    assert not hits, hits
