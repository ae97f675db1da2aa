"""Deprecated alias of ``segarena.platform.scoring.metrics`` (``per_case_metrics`` and the metric functions).

Kept so code written against the README of plugin API 1 imports unchanged; it warns and goes with plugin
API 2 (docs/architecture.md)."""

import warnings

from segarena.platform.scoring.metrics import *  # noqa: F403

warnings.warn("segarena.platform.metrics moved to segarena.platform.scoring.metrics",
              DeprecationWarning, stacklevel=2)
