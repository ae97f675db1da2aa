"""Deprecated alias of ``segarena.platform.plugins.hparams`` (the default hyperparameter check).

Kept so code written against the README of plugin API 1 imports unchanged; it warns and goes with plugin
API 2 (docs/architecture.md)."""

import warnings

from segarena.platform.plugins.hparams import *  # noqa: F403

warnings.warn("segarena.platform.hparam_check moved to segarena.platform.plugins.hparams",
              DeprecationWarning, stacklevel=2)
