"""``segarena datasets list`` and ``segarena datasets show NAME``: what data there is, what it holds,
and for data that is not on this machine, where to get it and how to lay it out.

Building the parser imports nothing heavy: plugins (and torch) load only when a command runs.
"""

from __future__ import annotations

import argparse
import os
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segarena.platform.cli.flags import workdir_arg
from segarena.platform.cli.table import terminal_width, wrap_field, wrap_table
from segarena.platform.paths import DEFAULT_WORKDIR
from segarena.platform.store.workdir import WorkDir

if TYPE_CHECKING:
    from segarena.platform.dataset import DatasetPlugin

LIST_EXAMPLES = """examples:
  segarena datasets list
  segarena datasets list --plugins ./my_plugins     # include a lab's own dataset plugins"""
SHOW_EXAMPLES = """examples:
  segarena datasets show mni152-gm --param size=64
  segarena datasets show isic2018 --path /data/ISIC2018   # or set SEGARENA_ISIC2018_ROOT"""


def add_parser(sub: Any) -> None:
    datasets = sub.add_parser("datasets", help="list datasets or show one (card, splits, balance, cache)",
                              description="List the dataset plugins or show one of them.",
                              epilog=LIST_EXAMPLES + "\n" + "\n".join(SHOW_EXAMPLES.splitlines()[1:]))
    actions = datasets.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("list", help="every dataset plugin: availability here, modality, source",
                           description="Every dataset plugin, ready ones first; for the others, the variable "
                                       "that points at their folder and where to download them.",
                           epilog=LIST_EXAMPLES)
    _common(p)
    p.set_defaults(func=cmd_list)
    p = actions.add_parser("show", help="a dataset's card, download page, folder layout, splits, class balance",
                           description="A dataset's card, where to get it and the folder tree it expects; when "
                                       "the data is here, its case counts per split, image size, class balance "
                                       "and cache state.",
                           epilog=SHOW_EXAMPLES)
    p.add_argument("name", help="the dataset plugin's name (see `segarena datasets list`)")
    p.add_argument("--path", default=None, help="the dataset's root folder (a suite's `path:`)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a dataset parameter as in a suite (YAML value), repeatable")
    p.add_argument("--seed", type=int, default=0, help="split seed")
    _common(p)
    p.set_defaults(func=cmd_show)


def _common(p: argparse.ArgumentParser) -> None:
    workdir_arg(p, help=f"cache lives in <workdir>/cache (default ./{DEFAULT_WORKDIR})", default=argparse.SUPPRESS)
    p.add_argument("--plugins", action="append", default=argparse.SUPPRESS, metavar="DIR",
                   help="a local plugin folder (repeatable)")


def _cache_dir(args: argparse.Namespace) -> Path:
    return WorkDir(Path(getattr(args, "workdir", None) or DEFAULT_WORKDIR)).cache  # the runner's cache


def _registry(args: argparse.Namespace):
    from segarena.platform.plugins.registry import discover

    return discover(getattr(args, "plugins", None) or [])


def cmd_list(args: argparse.Namespace) -> int:
    ready, missing, broken = [], [], []
    for info in _registry(args).infos("dataset"):
        cls = info.cls
        state, detail, root = _availability(cls, args)
        if state == "ready":
            ready.append((info.name, info.version, info.source, cls.modality, detail))
        elif root is None and "needs its folder" in detail:  # the usual case: no folder given
            missing.append((info.name, f"${cls.root_env}" if cls.root_env else "path:",
                            cls.download_url or "-"))
        else:  # a folder given but wrong, or a bundled source (wheel, Debian package) not installed
            broken.append((info.name, str(root) if root else "-", detail))
    print(f"ready here ({len(ready)}):")
    print(wrap_table(("name", "version", "source", "modality", "status"), ready, flex=(3, 4), indent="  "))
    if broken:
        print(f"\nnot usable ({len(broken)}):")
        print(wrap_table(("name", "root", "problem"), broken, flex=(1, 2), indent="  "))
    if missing:
        print("\n" + textwrap.fill(f"not on this machine ({len(missing)}): download, then set the variable (or a "
                                   f"suite's `path:`) to the folder; `segarena datasets show NAME` prints the "
                                   f"folder tree each one expects", terminal_width()))
        print(wrap_table(("name", "set", "download page"), missing, flex=(2,), indent="  "))
    return 0


def _availability(cls: type[DatasetPlugin], args: argparse.Namespace) -> tuple[str, str, Path | None]:
    """(ready | unavailable, detail, root) without loading any case."""
    from segarena.platform.errors import SegarenaError

    try:
        ds = cls(cache_dir=_cache_dir(args))
        status = ds.cache_status()
    except SegarenaError as exc:
        return "unavailable", str(exc), getattr(exc, "root", None)
    if status.startswith("unavailable"):
        return "unavailable", status.removeprefix("unavailable: "), ds.root
    return "ready", status.split(" (")[0], ds.root


def _params(pairs: list[str]) -> dict[str, Any]:
    import yaml

    from segarena.platform.errors import SpecError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SpecError(f"--param {pair!r} is not KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def where_to_get(cls: type[DatasetPlugin]) -> list[str]:
    """The lines telling a person how to make a dataset available: page, variable, folder tree."""
    lines = []
    if cls.download_url:
        lines.append(wrap_field("download", cls.download_url))
    if cls.root_env:
        now = os.environ.get(cls.root_env)
        lines.append(wrap_field("folder", f"${cls.root_env}" + (f" (now {now})" if now else " (not set)")
                                + ", or `path:` in a suite, or --path here"))
    if cls.layout:
        lines.append("  expected tree:")
        lines += [f"    {ln}" for ln in cls.layout.splitlines()]
    return lines


def cmd_show(args: argparse.Namespace) -> int:
    from segarena.platform.errors import DataError

    cls = _registry(args).dataset(args.name)
    card = cls.card()
    print(f"{card['name']} {card['version']}")
    for key in ("modality", "licence", "notice", "citation", "description"):
        if card[key]:
            print(wrap_field(key, card[key]))
    for line in where_to_get(cls):
        print(line)
    try:
        ds = cls(root=args.path, cache_dir=_cache_dir(args), **_params(args.param))
        status = ds.cache_status()
        if status.startswith("unavailable"):  # missing data is the caller's to fix: exit 2, as for bad input
            print(wrap_field("status", status))
            return 2
        print(wrap_field("cache", f"{status} (before loading)"))
        cases = ds.cases()
    except DataError as exc:
        print(wrap_field("status", f"unavailable: {exc}"))
        return 2
    task = ds.task()
    split = ds.split(args.seed)
    print(wrap_field("task", f"{task.in_channels} channel(s) -> {task.num_classes} class(es) "
                     f"{', '.join(task.class_names)}; image {task.image_size[0]}x{task.image_size[1]}"
                     + (f"; spacing {task.spacing}" if task.spacing else "")))
    volumes = {c.volume for c in cases if c.volume}
    print(wrap_field("cases", f"{len(cases)}" + (f" slices of {len(volumes)} volume(s)" if volumes else "")
                     + f"; split {split.kind} (seed {args.seed}): train {len(split.train)}, val {len(split.val)}, "
                       f"test {len(split.test)}"))
    print(wrap_field("balance", "; ".join(_balance(cases, task.class_names or ("class",) * task.num_classes))))
    print(wrap_field("content hash", ds.content_hash()))
    print(wrap_field("cache", ds.cache_status()))
    return 0


def _balance(cases: list, names: tuple[str, ...]) -> list[str]:
    """Per class: mean foreground fraction of the pixels and the share of cases where it is present."""
    out = []
    for k, name in enumerate(names):
        frac = sum(float(c.mask[k].float().mean()) for c in cases) / len(cases)
        present = sum(bool(c.mask[k].any()) for c in cases) / len(cases)
        out.append(f"{name} {100 * frac:.1f}% of pixels, present in {100 * present:.0f}% of cases")
    return out
