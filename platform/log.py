"""segarena's own messages: stdlib ``logging`` under the ``segarena`` logger, set up once by the CLI.

``-v`` shows debug messages (and Ray's worker logs during a run), ``--quiet`` only warnings and
errors. Messages go to stderr; results (tables, progress) go to stdout. Colour only on a terminal,
never in a log file or pipe, and never when ``NO_COLOR`` is set (https://no-color.org).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

LOGGER_NAME = "segarena"
_COLOURS = {logging.WARNING: "\x1b[33m", logging.ERROR: "\x1b[31m", logging.CRITICAL: "\x1b[31m",
            logging.DEBUG: "\x1b[2m"}
_RESET = "\x1b[0m"


def get_logger(name: str = "") -> logging.Logger:
    """``segarena`` or a child of it (``get_logger("runner")`` → ``segarena.runner``)."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


def use_colour(stream: TextIO) -> bool:
    """ANSI colour only for an interactive terminal that wants it."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def level_for(verbose: int = 0, quiet: bool = False) -> int:
    if quiet:
        return logging.WARNING
    return logging.DEBUG if verbose > 0 else logging.INFO


class _Formatter(logging.Formatter):
    """``segarena: warning: text`` (info lines are just the text), coloured when asked."""

    def __init__(self, colour: bool) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info and record.levelno <= logging.DEBUG:
            text += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            text = f"segarena: {record.levelname.lower()}: {text}"
        elif record.levelno <= logging.DEBUG:
            text = f"segarena: debug: {text}"
        if self.colour and record.levelno in _COLOURS:
            text = f"{_COLOURS[record.levelno]}{text}{_RESET}"
        return text


_HANDLER_MARK = "_segarena_handler"


def setup(verbose: int = 0, quiet: bool = False, stream: TextIO | None = None) -> logging.Logger:
    """Configure the ``segarena`` logger (idempotent: a second call replaces the first handler)."""
    stream = stream if stream is not None else sys.stderr
    logger = get_logger()
    for h in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(h)
    handler = logging.StreamHandler(stream)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(_Formatter(use_colour(stream)))
    logger.addHandler(handler)
    logger.setLevel(level_for(verbose, quiet))
    logger.propagate = False  # Ray and MLflow configure the root logger; our lines must not appear twice
    return logger
