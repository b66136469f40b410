"""Coloured, quiet-by-default terminal output for the CLI.

Colour is used only when the stream is a terminal and NO_COLOR is unset (https://no-color.org).
Library code logs through ``logging``; ``setup_logging`` routes those records here.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

_CODES = {"red": "31", "green": "32", "yellow": "33", "blue": "34", "bold": "1", "dim": "2"}


def _use_colour(stream: TextIO) -> bool:
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


def style(text: str, colour: str, stream: TextIO | None = None) -> str:
    # The stream is looked up at call time: tests and tools swap sys.stderr after import.
    return f"\033[{_CODES[colour]}m{text}\033[0m" if _use_colour(stream or sys.stderr) else text


def error(message: str) -> None:
    print(style("error:", "red") + " " + message, file=sys.stderr)


def warning(message: str) -> None:
    print(style("warning:", "yellow") + " " + message, file=sys.stderr)


def success(message: str) -> None:
    print(style(message, "green", sys.stdout), file=sys.stdout)


class _Handler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if record.levelno >= logging.ERROR:
            error(message)
        elif record.levelno >= logging.WARNING:
            warning(message)
        else:
            print(style(message, "dim"), file=sys.stderr)


def setup_logging(verbose: bool = False) -> None:
    handler = _Handler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("allinone", "degradations"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.DEBUG if verbose else logging.INFO)
        logger.propagate = False
