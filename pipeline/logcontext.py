"""Logging that says where: every message of the ``pipeline`` logger names the document and
part being processed, taken from a context variable the export sets (it follows the work into
worker threads, which anyio runs in a copy of the caller's context)."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

#: what is being processed now, e.g. ``document 'X', part 3 (f003.jpg)``; empty outside exports
where: ContextVar[str] = ContextVar("where", default="")


class _WhereFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        context = where.get()
        record.where = f"{context}: " if context else ""
        return True


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Our stderr handler, told apart from others on loggers we share (pyvips')."""


def configure_logging(level: int) -> None:
    """One line per message on stderr; third-party loggers (pyvips' debug chatter) stay quiet."""
    handler = _OurHandler(sys.stderr)
    handler.addFilter(_WhereFilter())
    debug = level <= logging.DEBUG
    handler.setFormatter(logging.Formatter(
        "pipeline: %(levelname)s: %(where)s%(message)s" if debug else "pipeline: %(where)s%(message)s"
    ))
    logger = logging.getLogger("pipeline")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    # libvips' warnings (a JPEG read with warnings, ...) come through pyvips' logger: with --debug
    # they are shown like ours; otherwise the error that follows them says what matters
    vips = logging.getLogger("pyvips")
    vips.setLevel(logging.DEBUG if debug else logging.ERROR)
    for old in [h for h in vips.handlers if isinstance(h, _OurHandler)]:
        vips.removeHandler(old)
    if debug:
        vips.addHandler(handler)
