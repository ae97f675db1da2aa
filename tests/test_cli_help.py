"""Help that answers at once and reads as plain text: every command, in a fresh interpreter."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from importlib.metadata import version

import pytest

from segarena.platform.api import API_VERSION
from segarena.platform.cli.main import build_parser

HEAVY = ("torch", "ray", "mlflow", "pandas", "monai")
HELP_BOUND_S = 3.0


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(path, parser) of every subcommand, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from commands(sub, (*prefix, name))


ALL = [path for path, _ in commands(build_parser())]


def _cli(*argv: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "segarena.platform.cli", *argv], capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.perf_counter() - t0


def test_building_the_parser_imports_nothing_heavy():
    code = ("import json, sys\nfrom segarena.platform.cli.main import build_parser\nbuild_parser()\n"
            f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("path", [(), *ALL], ids=lambda p: " ".join(p) or "segarena")
def test_help_is_fast_plain_and_has_examples(path):
    proc, took = _cli(*path, "--help")
    assert proc.returncode == 0, proc.stderr
    assert took < HELP_BOUND_S, f"`segarena {' '.join(path)} --help` took {took:.2f}s"
    text = proc.stdout
    assert "``" not in text and ":class:" not in text  # no reStructuredText markup
    examples = text.split("examples:", 1)
    assert len(examples) == 2, f"no examples in `segarena {' '.join(path)} --help`"
    assert sum(ln.startswith("  segarena ") for ln in examples[1].splitlines()) >= 2


def test_every_positional_has_help():
    for path, parser in [((), build_parser()), *commands(build_parser())]:
        for action in parser._actions:
            if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"positional {action.dest!r} of `segarena {' '.join(path)}` has no help"


def test_version_names_every_component_without_importing_them():
    code = ("import json, sys\nfrom segarena.platform.cli.main import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    lines = out.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == []
    text = "\n".join(lines[:-1])
    assert f"segarena {version('segarena')} (plugin API {API_VERSION})" in text
    for name in ("torch", "ray", "mlflow", "monai"):
        assert f"{name} {version(name)}" in text


def test_global_flags_work_before_and_after_the_command():
    parser = build_parser()
    assert parser.parse_args(["suites"]).verbose == 0
    assert parser.parse_args(["-v", "suites"]).verbose == 1
    assert parser.parse_args(["suites", "-vv"]).verbose == 2
    assert parser.parse_args(["-q", "plugins", "list"]).quiet is True
    assert parser.parse_args(["plugins", "list", "--quiet"]).quiet is True
    assert parser.parse_args(["plugins", "list"]).quiet is False
