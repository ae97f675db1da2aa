"""The ``segarena`` command: run suites, read leaderboards, list and check plugins."""

from __future__ import annotations

import argparse
import os
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
    from segarena.platform.tracking import Tracker, default_tracking_uri

    workdir = Path(args.workdir)
    if args.tracking_uri is None and not (workdir / "mlflow.db").exists():
        raise SegarenaError(f"no tracking store at {workdir / 'mlflow.db'}: run a suite first or give --tracking-uri")
    return Tracker(args.tracking_uri or default_tracking_uri(workdir), workdir / "artifacts")


def cmd_run(args: argparse.Namespace) -> int:
    from segarena.platform.leaderboard import leaderboard, render
    from segarena.platform.runner import run_suite

    summary = run_suite(args.suite, args.workdir, address=args.address, tracking_uri=args.tracking_uri,
                        plugin_dirs=args.plugins, verbose=args.verbose)
    print(f"\nsuite {summary.suite!r}: {summary.ran} cell(s) run, {summary.skipped} skipped as finished, "
          f"{len(summary.failures)} failed · {summary.wall_s:.0f}s wall\n")
    board, failed = leaderboard(_tracker(args), summary.suite)
    print(render(board, failed, "table"))
    return 1 if summary.failures else 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from segarena.platform.leaderboard import leaderboard, render

    board, failed = leaderboard(_tracker(args), args.suite)
    print(render(board, failed, args.format, args.output))
    return 0


def cmd_plugins_list(args: argparse.Namespace) -> int:
    from segarena.platform.registry import discover

    rows = [(i.name, i.kind, i.version, i.source, i.paper) for i in discover(args.plugins).infos()]
    widths = [max(len(str(r[k])) for r in [("name", "kind", "version", "source", "paper"), *rows]) for k in range(4)]
    for r in [("name", "kind", "version", "source", "paper"), *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r[:4], widths, strict=True)) + "  " + r[4][:90])
    return 0


def cmd_plugins_check(args: argparse.Namespace) -> int:
    from segarena.platform.conformance import run_checks
    from segarena.platform.registry import discover

    info = discover(args.plugins).find(args.name)
    print(f"checking {info.kind} plugin {info.name!r} ({info.source})")

    def show(r) -> None:
        print(f"  {'PASS' if r.passed else 'FAIL'}  {r.name}" + (f": {r.detail}" if r.detail else ""), flush=True)

    if info.kind == "method":
        results = run_checks(info.cls, on_result=show)
    else:
        from segarena.platform.dataset_conformance import run_dataset_checks

        results = run_dataset_checks(info.cls, on_result=show)
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_suites(args: argparse.Namespace) -> int:
    import yaml

    from segarena.benchmarks.shipped import shipped_suites

    for name, path in shipped_suites().items():
        print(f"{name:12s} {yaml.safe_load(path.read_text()).get('description', '')}  ({path})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segarena", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a suite (a YAML path or a shipped suite's name)")
    p.add_argument("suite")
    _store_args(p)
    p.add_argument("--address", default=None, help="a Ray cluster address (default: start a local Ray)")
    p.add_argument("--verbose", action="store_true", help="show Ray worker logs")
    _plugins_arg(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("leaderboard", help="rank methods from the tracking store")
    _store_args(p)
    p.add_argument("--suite", default=None)
    p.add_argument("--format", default="table", choices=["table", "markdown", "csv", "parquet", "json"])
    p.add_argument("--output", default=None, help="write to a file (required for parquet)")
    p.set_defaults(func=cmd_leaderboard)

    plugins = sub.add_parser("plugins", help="list or check plugins").add_subparsers(dest="action", required=True)
    p = plugins.add_parser("list")
    _plugins_arg(p)
    p.set_defaults(func=cmd_plugins_list)
    p = plugins.add_parser("check", help="run the conformance checks on a plugin")
    p.add_argument("name")
    _plugins_arg(p)
    p.set_defaults(func=cmd_plugins_check)

    p = sub.add_parser("suites", help="list the shipped suites")
    p.set_defaults(func=cmd_suites)
    try:
        from segarena.platform.cli_datasets import add_parser as add_datasets
    except ImportError:
        add_datasets = None
    if add_datasets is not None:
        add_datasets(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our progress lines replace Tune's tables
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no schema-creation INFO lines
    args = build_parser().parse_args(argv)
    if not hasattr(args, "plugins"):
        args.plugins = []
    if not hasattr(args, "workdir"):
        args.workdir = DEFAULT_WORKDIR
    try:
        return int(args.func(args) or 0)
    except SegarenaError as exc:
        print(f"segarena: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("segarena: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
