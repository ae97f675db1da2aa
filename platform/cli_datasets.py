"""``segarena datasets list`` and ``segarena datasets show NAME``: what data there is and what it holds."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

import yaml

from segarena.platform.dataset import DatasetPlugin

DEFAULT_WORKDIR = "segarena-runs"


def add_parser(sub: Any) -> None:
    datasets = sub.add_parser("datasets", help="list datasets or show one (card, splits, balance, cache)")
    actions = datasets.add_subparsers(dest="action", required=True)
    p = actions.add_parser("list", help="every dataset plugin with modality, licence and availability")
    _common(p)
    p.set_defaults(func=cmd_list)
    p = actions.add_parser("show", help="a dataset's card, case counts per split, image size, class balance")
    p.add_argument("name")
    p.add_argument("--path", default=None, help="the dataset's root folder (a suite's `path:`)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a dataset parameter as in a suite (YAML value), repeatable")
    p.add_argument("--seed", type=int, default=0, help="split seed")
    _common(p)
    p.set_defaults(func=cmd_show)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default=argparse.SUPPRESS, help=f"cache lives in <workdir>/cache "
                                                                 f"(default ./{DEFAULT_WORKDIR})")
    p.add_argument("--plugins", action="append", default=argparse.SUPPRESS, metavar="DIR",
                   help="a local plugin folder (repeatable)")


def _cache_dir(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "workdir", None) or DEFAULT_WORKDIR) / "cache"  # the runner's cache


def _registry(args: argparse.Namespace):
    from segarena.platform.registry import discover

    return discover(getattr(args, "plugins", None) or [])


def cmd_list(args: argparse.Namespace) -> int:
    rows = [("name", "version", "source", "modality", "status")]
    for info in _registry(args).infos("dataset"):
        rows.append((info.name, info.version, info.source, info.cls.modality[:48], _availability(info.cls, args)))
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    return 0


def _availability(cls: type[DatasetPlugin], args: argparse.Namespace) -> str:
    """Ready (files found), or why not, without loading any case."""
    from segarena.platform.errors import SegarenaError

    try:
        ds = cls(cache_dir=_cache_dir(args))
        status = ds.cache_status()
    except SegarenaError as exc:
        return f"unavailable: {str(exc)[:80]}"
    return status if status.startswith("unavailable") else f"ready, {status.split(' (')[0]}"


def _params(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"segarena: error: --param {pair!r} is not KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def cmd_show(args: argparse.Namespace) -> int:
    cls = _registry(args).dataset(args.name)
    ds = cls(root=args.path, cache_dir=_cache_dir(args), **_params(args.param))
    card = cls.card()
    print(f"{card['name']} {card['version']}")
    for key in ("modality", "licence", "notice", "citation", "description"):
        if card[key]:
            print(textwrap.fill(card[key], 100, initial_indent=f"  {key + ':':15s}", subsequent_indent=" " * 17))
    print(f"  {'cache:':15s}{ds.cache_status()} (before loading)")
    cases = ds.cases()
    task = ds.task()
    split = ds.split(args.seed)
    print(f"  {'task:':15s}{task.in_channels} channel(s) -> {task.num_classes} class(es) "
          f"{', '.join(task.class_names)}; image {task.image_size[0]}x{task.image_size[1]}"
          + (f"; spacing {task.spacing}" if task.spacing else ""))
    volumes = {c.volume for c in cases if c.volume}
    print(f"  {'cases:':15s}{len(cases)}" + (f" slices of {len(volumes)} volume(s)" if volumes else "")
          + f"; split {split.kind} (seed {args.seed}): train {len(split.train)}, val {len(split.val)}, "
            f"test {len(split.test)}")
    print(f"  {'balance:':15s}" + "; ".join(_balance(cases, task.class_names or ("class",) * task.num_classes)))
    print(f"  {'content hash:':15s}{ds.content_hash()}")
    print(f"  {'cache:':15s}{ds.cache_status()}")
    return 0


def _balance(cases: list, names: tuple[str, ...]) -> list[str]:
    """Per class: mean foreground fraction of the pixels and the share of cases where it is present."""
    out = []
    for k, name in enumerate(names):
        frac = sum(float(c.mask[k].float().mean()) for c in cases) / len(cases)
        present = sum(bool(c.mask[k].any()) for c in cases) / len(cases)
        out.append(f"{name} {100 * frac:.1f}% of pixels, present in {100 * present:.0f}% of cases")
    return out
