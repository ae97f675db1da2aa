"""The command line, the top floor: one module per command, sharing one definition of the store flags
(``flags.py``). Only this package imports ``dashboards/``."""

from segarena.platform.cli.main import main

__all__ = ["main"]
