"""Stream formats: one text for the whole document, written as the parts go by.

The format sees the document begin, each part, and the document end (a header and a footer:
TEI). Alone, the bytes are the export itself; in a bulk archive they become the entry
``<document folder><slug><suffix>``, spooled to a temporary file first (a zip entry is read from
a plain iterator).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from typing import IO

import anyio

from pipeline.archive import iter_chunks
from pipeline.logcontext import where
from pipeline.model import Document, Part
from pipeline.naming import slug
from pipeline.select import RegionFilter
from pipeline.writers.base import WriteJob

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
