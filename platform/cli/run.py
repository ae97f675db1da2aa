"""``segarena run``: run a suite, print its leaderboard, write its report, say where to look next."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from segarena.platform.cli.flags import examples, plugins_arg, shown_path, store_args, tracker
from segarena.platform.paths import DEFAULT_WORKDIR


def cmd_run(args: argparse.Namespace) -> int:
    from segarena.platform.board.leaderboard import leaderboard, render
    from segarena.platform.run.driver import run_suite

    summary = run_suite(args.suite, args.workdir, address=args.address, tracking_uri=args.tracking_uri,
                        plugin_dirs=args.plugins, verbose=args.verbose)
    print(f"\nsuite {summary.suite!r}: {summary.trained} cell(s) trained, {summary.evaluated} evaluated from "
          f"checkpoint, {summary.skipped} skipped as finished, {len(summary.failures)} failed"
          + (", interrupted" if summary.interrupted else "") + f" · {summary.wall_s:.0f}s wall\n")
    from segarena.dashboards.report import default_output, write_report

    store = tracker(args)
    board, failed = leaderboard(store, summary.suite)
    print(render(board, failed, "table"))
    from segarena.platform.run.search.stage import search_summary

    searched = search_summary(store, summary.experiment_id)
    if searched:
        print("\n" + "\n".join(searched))
    report = write_report(store, summary.suite, default_output(args.workdir, summary.suite)) if len(board) else None
    print("\n" + next_steps(Path(args.workdir), summary.suite, report, tracking_uri=args.tracking_uri))
    if summary.interrupted:
        return 130
    return 1 if summary.failures else 0


def next_steps(workdir: Path, suite: str, report: Path | None, per_case: Path | None = None,
               tracking_uri: str | None = None) -> str:
    """What to open once a run is over: commands and paths, ready to paste (printed by `segarena run`).
    Against a tracking server (``tracking_uri``) the commands name the server, not the work dir: its
    artifacts live on the server and its UI is the server itself."""
    shown = shown_path(workdir)
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
        lines.append(f"  report:          {shown_path(report)}")
    if per_case is not None:
        lines.append(f"  per-case table:  {shown_path(per_case)}")
    elif tracking_uri is not None:
        lines.append("  per-case rows:   artifact per_case.parquet of each evaluation run in the store "
                     "(README: Looking at results)")
    else:
        lines.append(f"  per-case rows:   {shown}/artifacts/{suite}/<run id>/artifacts/per_case.parquet "
                     "(README: Looking at results)")
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a suite (a YAML path or a shipped suite's name)",
                       description="Run a suite: expand it into cells (method x dataset x seed), skip the cells "
                                   "already finished, train and evaluate the others as Ray Tune trials, then "
                                   "print the leaderboard.",
                       epilog=examples("segarena run default                 # the shipped suite, ./segarena-runs",
                                       "segarena run my-suite.yaml --workdir /scratch/runs --plugins ./lab_plugins"))
    p.add_argument("suite", metavar="SUITE", help="a suite YAML file, or the name of a shipped suite "
                                                  "(see `segarena suites`)")
    store_args(p)
    p.add_argument("--address", default=None, help="a Ray cluster address (default: start a local Ray)")
    plugins_arg(p)
    p.set_defaults(func=cmd_run)
