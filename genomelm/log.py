"""Logging to stderr, and rich progress bars only where a person is watching.

Data goes to stdout (only when the output path is '-'); everything else goes to stderr.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

_LOGGER_NAME = "genomelm"
_quiet = False


def get_logger(name: str | None = None) -> logging.Logger:
    """The package logger, or a child of it (``get_logger(__name__)``)."""
    if name is None or name == _LOGGER_NAME:
        return logging.getLogger(_LOGGER_NAME)
    return logging.getLogger(name if name.startswith(_LOGGER_NAME) else f"{_LOGGER_NAME}.{name}")


def setup_logging(quiet: bool = False, debug: bool = False) -> None:
    """Send the package's log records to stderr; ``quiet`` keeps warnings and errors only."""
    global _quiet
    _quiet = quiet
    logger = logging.getLogger(_LOGGER_NAME)
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("genomelm: %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    if not debug:  # library warnings (torch, pysam, ...) as one 'genomelm: WARNING:' line, not source excerpts
        warnings.showwarning = _warning_as_one_line


def _warning_as_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    text = " ".join(str(message).split())
    get_logger("warnings").warning("%s", text or category.__name__)


def progress_enabled() -> bool:
    """Progress bars only on an interactive stderr and not with --quiet."""
    return not _quiet and sys.stderr.isatty()


class _NullProgress:
    """Stands in for a rich Progress when nobody is watching: same calls, no output."""

    def add_task(self, *args, **kwargs) -> int:
        return 0

    def update(self, *args, **kwargs) -> None:
        pass

    def advance(self, *args, **kwargs) -> None:
        pass


def _rate_column(unit: str):
    """A rich column showing the task's speed as e.g. '1.2 Mbp/s'."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{format_rate(speed, unit)}" if speed else f"? {unit}/s")

    return RateColumn()


def format_rate(per_second: float, unit: str) -> str:
    """1234567.0, 'bp' -> '1.23 Mbp/s'."""
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if per_second >= scale:
            return f"{per_second / scale:.2f} {prefix}{unit}/s"
    return f"{per_second:.1f} {unit}/s"


@contextmanager
def progress(unit: str = "bp") -> Iterator:
    """A rich progress bar on stderr (rate shown as ``unit``/s), or a silent stand-in."""
    if not progress_enabled():
        yield _NullProgress()
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        _rate_column(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True)) as bar:
        yield bar
