"""Job progress: a live rich display on a terminal, plain log lines under cron.

Both count documents and parts against the totals known from the plan, and bytes written; the
runner calls the same three methods whichever is in use.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

log = logging.getLogger("pipeline")


class JobProgress(Protocol):
    def __enter__(self) -> JobProgress: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def advance(self, label: str, *, documents: int, parts: int, size: int) -> None:
        """``documents`` documents with ``parts`` parts are done (exported, skipped or failed)."""


class _Counts:
    def __init__(self, documents: int, parts: int) -> None:
        self.total_documents, self.total_parts = documents, parts
        self.documents = self.parts = self.size = 0
        self.start = time.monotonic()

    def add(self, documents: int, parts: int, size: int) -> None:
        self.documents += documents
        self.parts += parts
        self.size += size

    @property
    def rate(self) -> float:
        """Bytes written per second so far."""
        return self.size / max(time.monotonic() - self.start, 1e-6)


class LogProgress(_Counts):
    """One ``pipeline`` log line per finished archive: for cron mail and log files."""

    def __enter__(self) -> LogProgress:
        log.info("job: %d documents, %d parts to go", self.total_documents, self.total_parts)
        return self

    def __exit__(self, *_: object) -> None:
        log.info("job: %d documents, %d parts, %s written in %.1fs", self.documents, self.parts,
                 human_size(self.size), time.monotonic() - self.start)

    def advance(self, label: str, *, documents: int, parts: int, size: int) -> None:
        self.add(documents, parts, size)
        log.info("%s (documents %d/%d, parts %d/%d, %s, %s/s)", label, self.documents,
                 self.total_documents, self.parts, self.total_parts, human_size(self.size),
                 human_size(int(self.rate)))


class RichProgress(_Counts):
    """Two bars on stderr (documents and parts), with bytes written, rate and ETA."""

    def __init__(self, documents: int, parts: int) -> None:
        super().__init__(documents, parts)
        self._bars = Progress(
            TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False,
        )
        self._docs = self._bars.add_task("documents", total=documents, info="")
        self._parts = self._bars.add_task("parts", total=parts, info="")

    def __enter__(self) -> RichProgress:
        self._bars.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._bars.stop()

    def advance(self, label: str, *, documents: int, parts: int, size: int) -> None:
        self.add(documents, parts, size)
        self._bars.update(self._docs, advance=documents, info=label[:40])
        info = f"{human_size(self.size)} {human_size(int(self.rate))}/s"
        self._bars.update(self._parts, advance=parts, info=info)


def progress_for(documents: int, parts: int) -> JobProgress:
    """Rich on an interactive stderr, log lines otherwise."""
    kind = RichProgress if sys.stderr.isatty() else LogProgress
    return kind(documents, parts)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
