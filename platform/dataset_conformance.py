"""Deprecated alias of ``segarena.platform.plugins.dataset_conformance`` (DatasetConformance; import it from
``segarena.platform.conformance``).

Kept so code written against the README of plugin API 1 imports unchanged; it warns and goes with plugin
API 2 (docs/architecture.md)."""

import warnings

from segarena.platform.plugins.dataset_conformance import *  # noqa: F403

warnings.warn("segarena.platform.dataset_conformance moved to segarena.platform.plugins.dataset_conformance",
              DeprecationWarning, stacklevel=2)
