"""Stream formats: one text for the whole document, written as the parts go by.

The format sees the document begin, each part, and the document end (a header and a footer:
TEI). Alone, the bytes are the export itself; in a bulk archive they become the entry
``<document folder><slug><suffix>``, spooled to a temporary file first (a zip entry is read from
a plain iterator).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

import anyio

from pipeline.archive import iter_chunks
from pipeline.logcontext import where
from pipeline.model import Document, Part
from pipeline.naming import slug
from pipeline.select import RegionFilter
from pipeline.writers.base import WriteJob
from pipeline.writers.pagezip import Pages, add_report, write_pages

if TYPE_CHECKING:
    from pipeline.archive import ZipArchive
    from pipeline.formats import tei as formats_tei

#: bytes of a bulk archive's text entry kept in memory before spilling to a temporary file
SPOOL_SIZE = 8 << 20


def _nothing(document: Document) -> bytes:
    return b""


class StreamWriter:
    """``begin(document)``, ``part(part, regions)`` for each part, ``end(document)``: bytes."""

    def __init__(
        self,
        part: Callable[[Part, RegionFilter], Iterator[bytes]],
        *,
        begin: Callable[[Document], bytes] = _nothing,
        end: Callable[[Document], bytes] = _nothing,
        suffix: str = ".txt",
    ) -> None:
        self.begin, self.part, self.end, self.suffix = begin, part, end, suffix

    async def write(self, job: WriteJob) -> None:
        with tempfile.SpooledTemporaryFile(SPOOL_SIZE, dir=job.scratch) as spool:
            target: IO[bytes] | object = spool if job.archive is not None else job.stream
            write = target.write  # type: ignore[attr-defined]
            if head := self.begin(job.document):
                write(head)
            async with job.read() as parts:
                async for part in parts:
                    where.set(job.describe(part))
                    for chunk in self.part(part, job.regions):
                        write(chunk)
                    job.parts += 1
            if tail := self.end(job.document):
                write(tail)
            if job.archive is not None:
                spool.seek(0)
                entry = f"{job.prefix}{slug(job.document.name) or 'document'}{self.suffix}"
                job.archive.add(entry, iter_chunks(spool), "data", job.document.updated_at)
                await anyio.to_thread.run_sync(job.archive.flush)


# --- one file for the document, in a zip with the page images (TEI, IIIF) ----------------------


class DocumentFile(Protocol):
    """A format written as one file for the whole document, in pieces (``formats.tei``,
    ``formats.iiif``): ``head``, ``opening`` (before the first part's first piece), piece 0 of
    every part, ``separator(1)``, piece 1 of every part, …, ``tail``; ``count`` parts so far."""

    opening: bytes
    count: int

    def head(self) -> bytes: ...
    def pieces(self, part: Part, url: str) -> tuple[bytes, ...]: ...
    def separator(self, n: int) -> bytes: ...
    def tail(self) -> bytes: ...


#: bytes of a spooled piece kept in memory before it goes to a temporary file, and read back at a
#: time: small, since a 1 MiB rollover or read block showed in peak RSS at 2,000 parts
PIECE_SPOOL = 64 << 10
#: without images, a two-piece file (TEI) is written in one pass over the source with its second
#: pieces spooled (False), or in two passes over the source (True); benchmarks/bench_formats.py
#: measures both
TWO_PASSES = False

PullParts = Callable[[], Iterator[Part]]


class DocumentZipWriter:
    """The stream family for a format whose file needs every part's first piece before any second
    one (TEI: the facsimile, then the text): the entry ``<prefix><name>`` of the archive, with the
    page images beside it when asked (and the image report; no METS).

    Without images the parts are pulled while the archive writes the entry: first pieces go
    straight out, later ones are spooled to temporary files (or, with :data:`TWO_PASSES`, the
    source is read twice). With images, whose entries come first, every piece is spooled.
    """

    def __init__(self, make: Callable[[WriteJob], DocumentFile], name: Callable[[Document], str], *,
                 pieces: int = 1) -> None:
        self.make, self.name, self.pieces = make, name, pieces

    async def write(self, job: WriteJob) -> None:
        archive = job.archive
        assert archive is not None, "a document file is always in an archive"
        file, name = self.make(job), self.name(job.document)
        with _Spools(self.pieces, job.scratch) as spools:
            chunks: Iterator[bytes]
            if job.options.images:
                await write_pages(job, _SpooledPages(archive, job, file, spools, name))
                chunks = spools.chunks(file)
            elif TWO_PASSES and self.pieces == 2:
                chunks = _two_passes(file, _puller(job))  # type: ignore[arg-type]
            else:
                chunks = spools.pulled(file, _puller(job))
            archive.add(job.prefix + name, chunks, "xml", job.document.updated_at)
            await anyio.to_thread.run_sync(archive.flush)  # pulls the parts, in a worker thread
        add_report(job)
        await anyio.to_thread.run_sync(archive.flush)


class _Spools:
    """A temporary file per piece of a part (memory up to :data:`PIECE_SPOOL` each, then disk)."""

    def __init__(self, pieces: int, scratch: Path | None) -> None:
        self.files = [tempfile.SpooledTemporaryFile(PIECE_SPOOL, dir=scratch)  # noqa: SIM115 (closed on exit)
                      for _ in range(pieces)]

    def __enter__(self) -> _Spools:
        return self

    def __exit__(self, *_: object) -> None:
        for spool in self.files:
            spool.close()

    def add(self, pieces: tuple[bytes, ...]) -> None:
        for spool, piece in zip(self.files, pieces, strict=True):
            spool.write(piece)

    def chunks(self, file: DocumentFile) -> Iterator[bytes]:
        """The whole file from the spools."""
        yield file.head() + (file.opening if file.count else b"")
        for n, spool in enumerate(self.files):
            if n:
                yield file.separator(n)
            spool.seek(0)
            yield from iter_chunks(spool, PIECE_SPOOL)
        yield file.tail()

    def pulled(self, file: DocumentFile, parts: PullParts) -> Iterator[bytes]:
        """The whole file as the parts are pulled: first pieces out at once, the others spooled."""
        yield file.head()
        rest = self.files[1:]
        for part in parts():
            pieces = file.pieces(part, part.image_filename)
            yield (file.opening if file.count == 1 else b"") + pieces[0]
            for spool, piece in zip(rest, pieces[1:], strict=True):
                spool.write(piece)
        for n, spool in enumerate(rest, 1):
            yield file.separator(n)
            spool.seek(0)
            yield from iter_chunks(spool, PIECE_SPOOL)
        yield file.tail()


def _two_passes(file: formats_tei.TeiDocument, parts: PullParts) -> Iterator[bytes]:
    yield file.head()
    for part in parts():
        surface = file.surface_only(part, part.image_filename)
        yield (file.opening if file.count == 1 else b"") + surface
    yield file.separator(1)
    file.restart()
    for part in parts():
        yield file.text_only(part)
    yield file.tail()


class _SpooledPages(Pages):
    """Pages whose images go into the archive and whose pieces go into the spools."""

    def __init__(self, archive: ZipArchive, job: WriteJob, file: DocumentFile, spools: _Spools,
                 name: str) -> None:
        super().__init__(archive, None, job, reserved=(name,))
        self.file, self.spools = file, spools

    def entry(self, part: Part, name: str, image: str | None, context: str) -> None:
        token = where.set(context)
        try:
            self.spools.add(self.file.pieces(part, image or part.image_filename))
        finally:
            where.reset(token)


def _puller(job: WriteJob) -> PullParts:
    """The parts as a plain iterator for the worker thread that writes the archive: each one is
    fetched from the async source through the event loop. Parts are counted on the first pass."""
    passes = 0

    def parts() -> Iterator[Part]:
        nonlocal passes
        passes += 1
        agen = job.source.parts(job.document, job.layer, job.options.part_ids)
        try:
            while True:
                try:
                    part = anyio.from_thread.run(agen.__anext__)  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
                where.set(job.describe(part))
                if passes == 1:
                    job.parts += 1
                yield part
        finally:
            anyio.from_thread.run(agen.aclose)  # type: ignore[attr-defined]

    return parts
