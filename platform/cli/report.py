"""``segarena report SUITE``: one self-contained HTML report (and optionally PNGs) from the tracking store.

Registered by ``cli.build_parser``; imports nothing heavy until the command runs (``--help`` stays fast).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DESCRIPTION = """One HTML file per suite, read from the tracking store alone: per dataset the leaderboard
with 95% paired-bootstrap CIs and rank groups (Wilcoxon signed-rank + Holm), Dice vs latency with its Pareto
front, Dice vs nfe per method, per-case Dice and HD95, bootstrap rank stability, the pairwise significance map,
training curves and a prediction grid (the stored best / median / worst overlays). plotly.js is embedded: the
file opens offline. --png also writes each figure as a PNG (kaleido through the system Chromium, else
matplotlib)."""


def add_parser(sub: Any) -> None:
    from segarena.platform.cli.flags import examples, store_args

    p = sub.add_parser("report", help="write a self-contained HTML report of a suite (statistics, plots)",
                       description=DESCRIPTION,
                       epilog=examples("segarena report default", "segarena report default --png figures/",
                                       "segarena report my-suite --tracking-uri http://mlflow:5000 --output r.html"))
    p.add_argument("suite", help="the suite's name (its MLflow experiment) or its YAML file")
    store_args(p)
    p.add_argument("--output", default=None, metavar="FILE",
                   help="the HTML file (default <workdir>/reports/<suite>.html)")
    p.add_argument("--png", default=None, metavar="DIR", help="also write every figure as a PNG into DIR")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.set_defaults(func=cmd_report)


def suite_name(arg: str) -> str:
    """A suite name, or the ``name:`` of a suite YAML file."""
    path = Path(arg)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        import yaml

        from segarena.platform.errors import SpecError

        spec = yaml.safe_load(path.read_text()) or {}
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise SpecError(f"{path}: field 'name' missing or not a string")
        return spec["name"]
    return arg


def cmd_report(args: argparse.Namespace) -> int:
    from segarena.dashboards.report import default_output, write_report
    from segarena.platform.board.statistics import StatsConfig
    from segarena.platform.cli.flags import tracker as _tracker
    from segarena.platform.errors import SegarenaError

    if args.resamples < 100:
        raise SegarenaError(f"--resamples {args.resamples}: use at least 100 bootstrap resamples")
    suite = suite_name(args.suite)
    output = Path(args.output) if args.output else default_output(args.workdir, suite)
    path = write_report(_tracker(args), suite, output, args.png, StatsConfig(n_resamples=args.resamples,
                                                                             seed=args.seed))
    print(f"report: {path.resolve()}")
    if args.png:
        print(f"figures: {Path(args.png).resolve()}")
    return 0
