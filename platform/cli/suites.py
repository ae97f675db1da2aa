"""``segarena suites``: the suites shipped in ``benchmarks/suites/``, runnable by name."""

from __future__ import annotations

import argparse

from segarena.platform.cli.flags import examples, shown_path


def cmd_suites(args: argparse.Namespace) -> int:
    import yaml

    from segarena.platform.cli.table import wrap_table
    from segarena.platform.paths import SUITES_DIR, shipped_suites

    repo = SUITES_DIR.parent.parent  # benchmarks/suites/ → the repository (or the installed package) root
    rows = []
    for name, path in shipped_suites().items():
        description = (yaml.safe_load(path.read_text()) or {}).get("description", "")
        rows.append((name, shown_path(path, repo), " ".join(str(description).split())))
    print(wrap_table(("name", "file", "description"), rows, flex=(2,)))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("suites", help="list the shipped suites",
                       description="The suites shipped with segarena (benchmarks/suites/*.yaml): run one by name.",
                       epilog=examples("segarena suites", "segarena run smoke        # run one by its name"))
    p.set_defaults(func=cmd_suites)
