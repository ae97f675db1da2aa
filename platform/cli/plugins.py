"""``segarena plugins list|check``: every plugin with its paper, and the conformance checks on one."""

from __future__ import annotations

import argparse
import re

from segarena.platform.cli.flags import examples, plugins_arg


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
    from segarena.platform.cli.table import wrap_table
    from segarena.platform.errors import PluginError
    from segarena.platform.plugins.registry import discover

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
    from segarena.platform.plugins.conformance import run_checks
    from segarena.platform.plugins.registry import discover

    info = discover(args.plugins).find(args.name)
    print(f"checking {info.kind} plugin {info.name!r} ({info.source})")

    def show(r) -> None:
        print(f"  {r.status}  {r.name}" + (f": {r.detail}" if r.detail else ""), flush=True)

    if info.kind == "method":
        results = run_checks(info.cls, on_result=show)
    else:
        from segarena.platform.plugins.dataset_conformance import run_dataset_checks

        results = run_dataset_checks(info.cls, on_result=show)
    failed = sum(not r.passed and not r.skipped for r in results)
    skipped = sum(r.skipped for r in results)
    print(f"{len(results) - failed - skipped} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    plugins = sub.add_parser("plugins", help="list or check plugins",
                             description="List the method and dataset plugins, or run the conformance checks "
                                         "on one.",
                             epilog=examples("segarena plugins list", "segarena plugins check medsegdiff"))
    actions = plugins.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("list", help="every method and dataset: kind, version, year, venue, source, paper",
                           description="Every method and dataset plugin segarena can see: built-ins, installed "
                                       "entry points and local folders.",
                           epilog=examples("segarena plugins list", "segarena plugins list --plugins ./lab_plugins"))
    plugins_arg(p)
    p.set_defaults(func=cmd_plugins_list)
    p = actions.add_parser("check", help="run the conformance checks on a plugin",
                           description="Run the shared conformance checks on one plugin, one PASS/FAIL line "
                                       "each.",
                           epilog=examples("segarena plugins check unet",
                                           "segarena plugins check my-net --plugins ./lab_plugins"))
    p.add_argument("name", metavar="NAME", help="a method or dataset plugin's name (see `segarena plugins list`)")
    plugins_arg(p)
    p.set_defaults(func=cmd_plugins_check)
