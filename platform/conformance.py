"""The shared conformance test classes for plugins, where labs import them (``docs/contracts.md``, Plugin):
``class TestMyNet(MethodConformance): method_cls = MyNet``. The checks live in ``plugins/``."""

from segarena.platform.plugins.conformance import MethodConformance, run_checks, synthetic_batch
from segarena.platform.plugins.dataset_conformance import DatasetConformance, run_dataset_checks

__all__ = ["DatasetConformance", "MethodConformance", "run_checks", "run_dataset_checks", "synthetic_batch"]
