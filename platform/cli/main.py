"""The segarena command: run suites, read leaderboards, list and check plugins, open the results.

Building the parser stays cheap (no torch, Ray, MLflow or pandas): every command imports what it
needs when it runs, so `segarena --help` answers at once. Each command lives in its own
module that exposes `add_parser(sub)` and is listed in SUBCOMMAND_MODULES.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from segarena.platform.cli.flags import SegarenaParser, examples
from segarena.platform.errors import SegarenaError
from segarena.platform.paths import DEFAULT_WORKDIR

DESCRIPTION = """Benchmark diffusion-based medical image segmentation: run suites (methods x datasets x seeds x
inference budgets) as Ray Tune trials, record every cell in MLflow, rank methods from the store.

Start with `segarena run default`; `segarena COMMAND --help` explains a command."""

# One module per command, in the order of `segarena --help`: each exposes add_parser(sub) and imports nothing
# heavy at module level.
SUBCOMMAND_MODULES = tuple(f"segarena.platform.cli.{name}" for name in (
    "run", "leaderboard", "plugins", "suites", "datasets", "ui", "report", "evaluate", "server", "predict"))


class _Version(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="versions of segarena, its plugin API and the libraries it drives")

    def __call__(self, parser: argparse.ArgumentParser, namespace: object, values: object,
                 option_string: str | None = None) -> None:
        print(version_text())
        parser.exit()


def version_text() -> str:
    """Installed versions, read from package metadata: nothing is imported (torch takes seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    from segarena.platform.api import API_VERSION

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    lines = [f"segarena {v('segarena')} (plugin API {API_VERSION})"]
    lines += [f"{name} {v(name)}" for name in ("torch", "ray", "mlflow", "monai")]
    lines.append(f"python {sys.version.split()[0]}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = SegarenaParser(prog="segarena", description=DESCRIPTION, top=True,
                            epilog=examples("segarena run default", "segarena leaderboard --format markdown"))
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our progress lines replace Tune's tables
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no schema-creation INFO lines
    args = build_parser().parse_args(argv)
    from segarena.platform.log import setup

    setup(args.verbose, args.quiet)
    if not hasattr(args, "plugins"):
        args.plugins = []
    if not hasattr(args, "workdir"):
        args.workdir = DEFAULT_WORKDIR
    try:
        return int(args.func(args) or 0)
    except SegarenaError as exc:
        print(f"segarena: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("segarena: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `segarena plugins list | head`: the reader left; not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # the tracking store failed under us: one line naming MLflow's complaint, exit 1
        if not type(exc).__module__.startswith(("mlflow", "sqlalchemy", "alembic")):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        print(f"segarena: error: tracking store: {type(exc).__name__}: {first}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
