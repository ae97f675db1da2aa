"""The segarena command: run suites, read leaderboards, list and check plugins, open the results.

Building the parser stays cheap (no torch, Ray, MLflow or pandas): every command imports what it
needs when it runs, so `segarena --help` answers at once. Subcommands that live in their own
module expose `add_parser(sub)` and are listed in SUBCOMMAND_MODULES.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from segarena.platform.errors import SegarenaError

DEFAULT_WORKDIR = "segarena-runs"


def _plugins_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugins", action="append", default=[], metavar="DIR",
                   help="a local plugin folder (repeatable; also SEGARENA_PLUGIN_PATH)")


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default=DEFAULT_WORKDIR, help="runs folder (default ./segarena-runs)")
    p.add_argument("--tracking-uri", default=None, help="any MLflow tracking URI (default sqlite in --workdir)")


def _tracker(args: argparse.Namespace):
    from segarena.platform.preflight import check_tracking_uri
    from segarena.platform.tracking import Tracker
    from segarena.platform.workdir import WorkDir

    workdir = WorkDir.at(args.workdir)
    if args.tracking_uri is None and not workdir.exists():
        raise SegarenaError(f"no tracking store at {workdir.db}: run a suite first or give --tracking-uri")
    check_tracking_uri(args.tracking_uri or workdir.tracking_uri)  # unsupported or down: one line within seconds
    return Tracker(args.tracking_uri or workdir.tracking_uri, workdir)


def cmd_run(args: argparse.Namespace) -> int:
    from segarena.platform.leaderboard import leaderboard, render
    from segarena.platform.runner import run_suite

    summary = run_suite(args.suite, args.workdir, address=args.address, tracking_uri=args.tracking_uri,
                        plugin_dirs=args.plugins, verbose=args.verbose)
    print(f"\nsuite {summary.suite!r}: {summary.trained} cell(s) trained, {summary.evaluated} evaluated from "
          f"checkpoint, {summary.skipped} skipped as finished, {len(summary.failures)} failed"
          + (", interrupted" if summary.interrupted else "") + f" · {summary.wall_s:.0f}s wall\n")
    from segarena.dashboards.report import default_output, write_report

    tracker = _tracker(args)
    board, failed = leaderboard(tracker, summary.suite)
    print(render(board, failed, "table"))
    from segarena.platform.search import search_summary

    searched = search_summary(tracker, summary.experiment_id)
    if searched:
        print("\n" + "\n".join(searched))
    report = write_report(tracker, summary.suite, default_output(args.workdir, summary.suite)) if len(board) else None
    print("\n" + next_steps(Path(args.workdir), summary.suite, report, tracking_uri=args.tracking_uri))
    if summary.interrupted:
        return 130
    return 1 if summary.failures else 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from segarena.platform.leaderboard import leaderboard, render
    from segarena.platform.preflight import check_output_file

    check_output_file(args.output)
    board, failed = leaderboard(_tracker(args), args.suite)
    print(render(board, failed, args.format, args.output))
    return 0


def paper_parts(paper: str) -> tuple[str, str, str]:
    """(year, venue, title) of a reference written "Authors. Title. Venue Year" (first reference only)."""
    first = paper.split(";")[0].strip().rstrip(".")
    parts = [p.strip() for p in re.split(r"\.\s+", first) if p.strip()]
    tail = parts[-1] if len(parts) > 1 else first
    years = re.findall(r"\b(?:19|20)\d\d\b", tail)
    year = years[-1] if years else ""
    if len(parts) >= 3:
        title = ". ".join(parts[1:-1])
        venue = re.split(r"[\s,:(]*\d", tail.replace("arXiv:", "arXiv "), maxsplit=1)[0].strip(" ,")
    elif len(parts) == 2:
        title, venue = re.sub(r",?\s*\b(?:19|20)\d\d\b\s*$", "", parts[1]), ""
    else:
        title, venue = first, ""
    return year, venue, title


def cmd_plugins_list(args: argparse.Namespace) -> int:
    from segarena.platform.cli_table import wrap_table
    from segarena.platform.errors import PluginError
    from segarena.platform.registry import discover

    rows, broken = [], 0
    for info in discover(args.plugins).infos():
        try:
            year, venue, title = paper_parts(info.paper)
            rows.append((info.name, info.kind, info.version, year, venue, info.source, title))
        except PluginError as exc:  # one broken plugin must not hide the others
            broken += 1
            rows.append((info.name, info.kind, "?", "", "", info.source, f"FAILED TO IMPORT: {exc}"))
    print(wrap_table(("name", "kind", "version", "year", "venue", "source", "paper"), rows, flex=(4, 5, 6)))
    return 1 if broken else 0


def cmd_plugins_check(args: argparse.Namespace) -> int:
    from segarena.platform.conformance import run_checks
    from segarena.platform.registry import discover

    info = discover(args.plugins).find(args.name)
    print(f"checking {info.kind} plugin {info.name!r} ({info.source})")

    def show(r) -> None:
        print(f"  {r.status}  {r.name}" + (f": {r.detail}" if r.detail else ""), flush=True)

    if info.kind == "method":
        results = run_checks(info.cls, on_result=show)
    else:
        from segarena.platform.dataset_conformance import run_dataset_checks

        results = run_dataset_checks(info.cls, on_result=show)
    failed = sum(not r.passed and not r.skipped for r in results)
    skipped = sum(r.skipped for r in results)
    print(f"{len(results) - failed - skipped} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


def cmd_suites(args: argparse.Namespace) -> int:
    import yaml

    from segarena.benchmarks.shipped import SUITES_DIR, shipped_suites
    from segarena.platform.cli_table import wrap_table

    repo = SUITES_DIR.parent.parent  # benchmarks/suites/ → the repository (or the installed package) root
    rows = []
    for name, path in shipped_suites().items():
        description = (yaml.safe_load(path.read_text()) or {}).get("description", "")
        rows.append((name, _shown_path(path, repo), " ".join(str(description).split())))
    print(wrap_table(("name", "file", "description"), rows, flex=(2,)))
    return 0


def _shown_path(path: Path, base: Path | None = None) -> str:
    """A path relative to ``base`` (default: the current folder) when it lies inside it."""
    base = (base or Path.cwd()).resolve()
    try:
        return str(Path(path).resolve().relative_to(base))
    except ValueError:
        return str(Path(path).resolve())


def next_steps(workdir: Path, suite: str, report: Path | None, per_case: Path | None = None,
               tracking_uri: str | None = None) -> str:
    """What to open once a run is over: commands and paths, ready to paste (printed by `segarena run`).
    Against a tracking server (``tracking_uri``) the commands name the server, not the work dir: its
    artifacts live on the server and its UI is the server itself."""
    shown = _shown_path(workdir)
    served = tracking_uri is not None and tracking_uri.startswith(("http://", "https://"))
    if tracking_uri is not None:
        flag = f" --tracking-uri {shlex.quote(tracking_uri)}"
    else:
        flag = "" if Path(workdir).resolve() == Path(DEFAULT_WORKDIR).resolve() else f" --workdir {shlex.quote(shown)}"
    lines = ["look at the results:",
             f"  MLflow UI:       {tracking_uri}" if served else f"  segarena ui{flag}",
             "      MLflow UI in the browser: every run, its metrics, training curves and artifacts",
             f"  segarena leaderboard{flag} --suite {shlex.quote(suite)} --format csv --output {suite}.csv",
             "      the ranking above as a file (also markdown, json, parquet)"]
    if report is not None:
        lines.append(f"  report:          {_shown_path(report)}")
    if per_case is not None:
        lines.append(f"  per-case table:  {_shown_path(per_case)}")
    elif tracking_uri is not None:
        lines.append("  per-case rows:   artifact per_case.parquet of each evaluation run in the store "
                     "(README: Looking at results)")
    else:
        lines.append(f"  per-case rows:   {shown}/artifacts/{suite}/<run id>/artifacts/per_case.parquet "
                     "(README: Looking at results)")
    return "\n".join(lines)


DESCRIPTION = """Benchmark diffusion-based medical image segmentation: run suites (methods x datasets x seeds x
inference budgets) as Ray Tune trials, record every cell in MLflow, rank methods from the store.

Start with `segarena run default`; `segarena COMMAND --help` explains a command."""

# Subcommands kept in their own module: each exposes add_parser(sub) and imports nothing heavy at module level.
SUBCOMMAND_MODULES = ("segarena.platform.cli_datasets", "segarena.platform.cli_ui", "segarena.platform.cli_report",
                      "segarena.platform.cli_evaluate", "segarena.platform.cli_server", "segarena.platform.cli_predict")


def examples(*lines: str) -> str:
    """An epilog: ``examples:`` and one indented command per line (printed as written)."""
    return "examples:\n" + "\n".join(f"  {ln}" for ln in lines)


def _fill(text: str) -> str:
    import shutil
    import textwrap

    width = min(100, shutil.get_terminal_size((100, 24)).columns) - 2
    return "\n\n".join(textwrap.fill(" ".join(par.split()), width) for par in text.strip().split("\n\n"))


class SegarenaParser(argparse.ArgumentParser):
    """Every segarena parser and sub-parser: help printed as written (plain text, examples kept on their
    lines), and the global -v/--quiet accepted after a subcommand as well as before it."""

    def __init__(self, *args: object, top: bool = False, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        if isinstance(kwargs.get("description"), str):  # raw formatting keeps lines: wrap paragraphs here
            kwargs["description"] = _fill(str(kwargs["description"]))
        if not top:
            kwargs.setdefault("conflict_handler", "resolve")  # a subcommand may define its own -v
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        default = {} if top else {"default": argparse.SUPPRESS}  # the top-level value stays unless repeated
        self.add_argument("-v", "--verbose", action="count", help="more detail (debug messages, Ray worker logs)",
                          **({"default": 0} if top else default))
        self.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors",
                          **({"default": False} if top else default))


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

    p = sub.add_parser("run", help="run a suite (a YAML path or a shipped suite's name)",
                       description="Run a suite: expand it into cells (method x dataset x seed), skip the cells "
                                   "already finished, train and evaluate the others as Ray Tune trials, then "
                                   "print the leaderboard.",
                       epilog=examples("segarena run default                 # the shipped suite, ./segarena-runs",
                                       "segarena run my-suite.yaml --workdir /scratch/runs --plugins ./lab_plugins"))
    p.add_argument("suite", metavar="SUITE", help="a suite YAML file, or the name of a shipped suite "
                                                  "(see `segarena suites`)")
    _store_args(p)
    p.add_argument("--address", default=None, help="a Ray cluster address (default: start a local Ray)")
    _plugins_arg(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("leaderboard", help="rank methods from the tracking store",
                       description="Rank methods per dataset from the per-case results in the tracking store "
                                   "(no training, no torch).",
                       epilog=examples("segarena leaderboard --suite default",
                                       "segarena leaderboard --format csv --output board.csv"))
    _store_args(p)
    p.add_argument("--suite", default=None, help="one suite (default: every suite in the store)")
    p.add_argument("--format", default="table", choices=["table", "markdown", "latex", "csv", "parquet", "json"])
    p.add_argument("--output", default=None, help="write to a file (required for parquet)")
    p.set_defaults(func=cmd_leaderboard)

    plugins = sub.add_parser("plugins", help="list or check plugins",
                             description="List the method and dataset plugins, or run the conformance checks "
                                         "on one.",
                             epilog=examples("segarena plugins list", "segarena plugins check medsegdiff"))
    actions = plugins.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("list", help="every method and dataset: kind, version, year, venue, source, paper",
                           description="Every method and dataset plugin segarena can see: built-ins, installed "
                                       "entry points and local folders.",
                           epilog=examples("segarena plugins list", "segarena plugins list --plugins ./lab_plugins"))
    _plugins_arg(p)
    p.set_defaults(func=cmd_plugins_list)
    p = actions.add_parser("check", help="run the conformance checks on a plugin",
                           description="Run the shared conformance checks on one plugin, one PASS/FAIL line "
                                       "each.",
                           epilog=examples("segarena plugins check unet",
                                           "segarena plugins check my-net --plugins ./lab_plugins"))
    p.add_argument("name", metavar="NAME", help="a method or dataset plugin's name (see `segarena plugins list`)")
    _plugins_arg(p)
    p.set_defaults(func=cmd_plugins_check)

    p = sub.add_parser("suites", help="list the shipped suites",
                       description="The suites shipped with segarena (benchmarks/suites/*.yaml): run one by name.",
                       epilog=examples("segarena suites", "segarena run smoke        # run one by its name"))
    p.set_defaults(func=cmd_suites)

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
