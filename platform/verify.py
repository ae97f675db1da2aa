"""Deprecated alias of ``segarena.platform.scoring.checks`` (the checks on every prediction).

Kept so code written against the README of plugin API 1 imports unchanged; it warns and goes with plugin
API 2 (docs/architecture.md)."""

import warnings

from segarena.platform.scoring.checks import *  # noqa: F403

warnings.warn("segarena.platform.verify moved to segarena.platform.scoring.checks",
              DeprecationWarning, stacklevel=2)
