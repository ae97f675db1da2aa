"""What the commands share: the store and plugin flags (one definition), the parser class, examples
epilogs, and the tracker a command reads from."""

from __future__ import annotations

import argparse
from pathlib import Path

from segarena.platform.errors import SegarenaError
from segarena.platform.paths import DEFAULT_WORKDIR


def plugins_arg(p: argparse.ArgumentParser) -> None:
    """``--plugins DIR`` (repeatable)."""
    p.add_argument("--plugins", action="append", default=[], metavar="DIR",
                   help="a local plugin folder (repeatable; also SEGARENA_PLUGIN_PATH)")


def workdir_arg(p: argparse.ArgumentParser, help: str | None = None, **kwargs: object) -> None:
    """``--workdir DIR``, default ./segarena-runs."""
    kwargs.setdefault("default", DEFAULT_WORKDIR)
    p.add_argument("--workdir", help=help or f"runs folder (default ./{DEFAULT_WORKDIR})", **kwargs)


def store_args(p: argparse.ArgumentParser) -> None:
    """``--workdir`` and ``--tracking-uri``: where a command finds the tracking store."""
    workdir_arg(p)
    p.add_argument("--tracking-uri", default=None, help="any MLflow tracking URI (default sqlite in --workdir)")


def tracker(args: argparse.Namespace):
    """The store named by ``store_args``' flags, checked to answer (one line within seconds when it does not)."""
    from segarena.platform.store.preflight import check_tracking_uri
    from segarena.platform.store.tracking import Tracker
    from segarena.platform.store.workdir import WorkDir

    workdir = WorkDir.at(args.workdir)
    if args.tracking_uri is None and not workdir.exists():
        raise SegarenaError(f"no tracking store at {workdir.db}: run a suite first or give --tracking-uri")
    check_tracking_uri(args.tracking_uri or workdir.tracking_uri)  # unsupported or down: one line within seconds
    return Tracker(args.tracking_uri or workdir.tracking_uri, workdir)


def shown_path(path: Path, base: Path | None = None) -> str:
    """A path relative to ``base`` (default: the current folder) when it lies inside it."""
    base = (base or Path.cwd()).resolve()
    try:
        return str(Path(path).resolve().relative_to(base))
    except ValueError:
        return str(Path(path).resolve())


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
