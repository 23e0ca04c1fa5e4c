"""What every writer is given, and what it must do: fill an archive (or a byte stream) with one
document's entries in one format family."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pipeline.logcontext import where
from pipeline.model import Document, Part
from pipeline.options import ExportOptions
from pipeline.select import RegionFilter
from pipeline.sources import Releasing

if TYPE_CHECKING:
    from pipeline.archive import ZipArchive
    from pipeline.sinks import FolderSink, Sink
    from pipeline.sources import Source


@dataclass(slots=True)
class WriteJob:
    """One document to write. Exactly one of ``archive`` (entries go in, names starting with
    ``prefix``: a bulk archive's document folder) and ``stream`` (a one-document export of a
    stream format: the bytes are the output) is set. The writer counts ``parts`` and appends the
    images it left out to ``report``; ``scratch`` is where temporary files may go (None: the
    system's temporary folder)."""

    source: Source
    document: Document
    options: ExportOptions
    regions: RegionFilter
    archive: ZipArchive | FolderSink | None = None
    stream: Sink | None = None
    prefix: str = ""
    scratch: Path | None = None
    parts: int = 0
    report: list[dict[str, Any]] = field(default_factory=list)

    @property
    def layer(self) -> str:
        """The layer read (the export resolved ``options.layer`` to a name before writing)."""
        assert self.options.layer is not None
        return self.options.layer

    def read(self, *, release: bool = True) -> aclosing[AsyncGenerator[Part, None]]:
        """The parts, straight from the source, closed when the block ends. With ``release`` each
        part is released to the source when the next one is asked for: writers with nothing to
        run ahead are done with a part (its image is in the archive) by then."""
        parts = self.source.parts(self.document, self.layer, self.options.part_ids)
        return aclosing(self._released(parts) if release else parts)  # type: ignore[arg-type]

    async def _released(self, parts: AsyncGenerator[Part, None]) -> AsyncGenerator[Part, None]:
        async with aclosing(parts):
            async for part in parts:
                try:
                    yield part
                finally:
                    self.release(part)

    def release(self, part: Part) -> None:
        """Tell a source that made something for ``part`` (an extracted image) it may go."""
        if isinstance(self.source, Releasing):
            self.source.release(part)

    def describe(self, part: Part) -> str:
        """How messages name a part: document, 1-based page number and image file."""
        return f"document {self.document.name!r}, part {part.order + 1} ({part.image_filename})"


class Writer(Protocol):
    """Writes one document's entries for a format family (blocking work in worker threads)."""

    async def write(self, job: WriteJob) -> None: ...


@runtime_checkable
class Gathering(Protocol):
    """A writer whose entries span every document of an archive (a dataset's metadata and
    summary): the export calls ``finish`` once all documents are written, before closing the
    archive (it returns a line for the user, or None), and ``discard`` whatever happens."""

    async def finish(self, archive: Any) -> str | None: ...

    def discard(self, archive: Any) -> None: ...


def logged_as(context: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks``, rendered with log messages naming ``context``: pages are rendered later, several
    per flush, when the context names the last page queued."""
    while True:
        token = where.set(context)
        try:
            chunk = next(chunks, None)
        finally:
            where.reset(token)
        if chunk is None:
            return
        yield chunk
