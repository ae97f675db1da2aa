"""Where the named suites shipped with segarena live (found via ``__file__``: the README's "Layout" explains
why ``importlib.resources`` is not used on this namespace package)."""

from pathlib import Path

SUITES_DIR = Path(__file__).resolve().parent / "suites"


def shipped_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.yaml"))}
