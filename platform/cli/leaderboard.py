"""``segarena leaderboard``: rank methods from the tracking store alone (no training, no torch)."""

from __future__ import annotations

import argparse

from segarena.platform.cli.flags import examples, store_args, tracker


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from segarena.platform.board.leaderboard import leaderboard, render
    from segarena.platform.store.preflight import check_output_file

    check_output_file(args.output)
    board, failed = leaderboard(tracker(args), args.suite)
    print(render(board, failed, args.format, args.output))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", help="rank methods from the tracking store",
                       description="Rank methods per dataset from the per-case results in the tracking store "
                                   "(no training, no torch).",
                       epilog=examples("segarena leaderboard --suite default",
                                       "segarena leaderboard --format csv --output board.csv"))
    store_args(p)
    p.add_argument("--suite", default=None, help="one suite (default: every suite in the store)")
    p.add_argument("--format", default="table", choices=["table", "markdown", "latex", "csv", "parquet", "json"])
    p.add_argument("--output", default=None, help="write to a file (required for parquet)")
    p.set_defaults(func=cmd_leaderboard)
