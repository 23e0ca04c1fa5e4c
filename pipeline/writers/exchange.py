"""The exchange archive writer: ``test/<name>.txt`` + ``ann/<name>.ann`` (brat standoff), a text
and an ``.ann`` per part or one per document.

In a bulk archive the entries stay at the root, their names prefixed with the document folder
name, so the archive remains one exchange archive.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace

import anyio
import anyio.from_thread

from pipeline.archive import ZipArchive
from pipeline.errors import UsageError
from pipeline.formats.brat import OFFSET_UNITS, OffsetMap, Span
from pipeline.formats.exchange import (
    ANN_DIR,
    MAX_ARCHIVE_BYTES,
    TEXT_DIR,
    UNITS,
    PageText,
    ann_bytes,
    categories,
    entry_stem,
    page_text,
    shifted,
    warn_size,
)
from pipeline.logcontext import where
from pipeline.model import Document, Part
from pipeline.naming import EntryNamer
from pipeline.options import ExportOptions
from pipeline.select import RegionFilter
from pipeline.writers.base import WriteJob

log = logging.getLogger("pipeline")


class ExchangeWriter:
    async def write(self, job: WriteJob) -> None:
        assert job.archive is not None, "an exchange archive is always a zip"
        async with job.read() as parts:
            job.parts += await write_entries(parts, job.document, job.options, job.regions, job.archive,
                                             job.prefix.rstrip("/"))
        if not job.prefix:
            warn_archive_size(job.archive.size)


async def write_entries(
    parts: AsyncIterator[Part],
    document: Document,
    options: ExportOptions,
    flt: RegionFilter,
    sink: ZipArchive,
    prefix: str = "",
) -> int:
    """Stream ``document``'s ``test/`` and ``ann/`` entries into ``sink`` (flushed, not closed);
    ``prefix`` (a bulk archive's document folder) starts every name. Returns the number of parts."""
    unit = options.unit or "part"
    if unit not in UNITS or options.offset_unit not in OFFSET_UNITS:
        raise UsageError(f"unit must be one of {UNITS}, offset unit one of {OFFSET_UNITS}")
    return await _WRITERS[unit](parts, document, options, flt, sink, f"{prefix}_" if prefix else "")


def warn_archive_size(size: int) -> None:
    if size > MAX_ARCHIVE_BYTES:
        log.warning("archive of %d bytes; the Platform rejects zips over %d bytes", size,
                    MAX_ARCHIVE_BYTES)


async def _write_parts(
    parts: AsyncIterator[Part],
    document: Document,
    options: ExportOptions,
    flt: RegionFilter,
    sink: ZipArchive,
    prefix: str,
) -> int:
    """``unit=part``: a text and an ``.ann`` per part, flushed before the next part is read."""
    namer, count = EntryNamer(()), 0
    names = options.section_names or {}
    async for part in parts:
        token = where.set(f"document {document.name!r}, part {part.order + 1} ({part.image_filename})")
        page = page_text(part, flt, names)
        stem = prefix + entry_stem(namer, part.image_filename, part.order)
        data = page.text.encode()
        warn_size(f"{TEXT_DIR}/{stem}.txt", len(data))
        sink.add(f"{TEXT_DIR}/{stem}.txt", data, "data", part.updated_at)
        offsets = OffsetMap(page.text, options.offset_unit)
        cats = categories(document, options.categories, page.ids.tags)
        ann = ann_bytes(cats, shifted(page.spans, offsets, 0), page.passthrough, offsets.length, stem)
        if ann:
            sink.add(f"{ANN_DIR}/{stem}.ann", ann, "data", part.updated_at)
        await anyio.to_thread.run_sync(sink.flush)
        where.reset(token)
        count += 1
    return count


@dataclass(slots=True)
class _DocumentAnnotations:
    """What ``unit=document`` keeps while its text streams: annotations only, never text."""

    spans: list[Span] = field(default_factory=list)
    passthrough: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    started: bool = False
    length: int = 0
    size: int = 0
    parts: int = 0

    def add(self, page: PageText, spans: list[Span]) -> None:
        """Keep a page's spans; an ID already used by an earlier page is renumbered."""
        for span in spans:
            clash = span.id is not None and span.id in self.used
            self.spans.append(replace(span, id=None) if clash else span)
            self.used.add(span.id or "")
        self.passthrough.extend(page.passthrough)
        for tag, ident in page.ids.tags.items():
            self.tags.setdefault(tag, ident)


async def _write_document(
    parts: AsyncIterator[Part],
    document: Document,
    options: ExportOptions,
    flt: RegionFilter,
    sink: ZipArchive,
    prefix: str,
) -> int:
    """``unit=document``: one text streamed as the parts arrive (pages joined by LF); the ``.ann``,
    which needs every offset, is written after it from the annotations kept meanwhile."""
    stem = prefix + entry_stem(EntryNamer(()), re.sub(r"[/\\]", "_", document.name), 0)
    names = options.section_names or {}
    state = _DocumentAnnotations()

    def chunks() -> Iterator[bytes]:
        while (part := anyio.from_thread.run(_next_part, parts)) is not None:
            where.set(f"document {document.name!r}, part {part.order + 1} ({part.image_filename})")
            state.parts += 1
            page = page_text(part, flt, names)
            if not page.lines:
                continue
            separator = "\n" if state.started else ""
            offsets = OffsetMap(page.text, options.offset_unit)
            base = state.length + len(separator)
            state.add(page, shifted(page.spans, offsets, base))
            state.length = base + offsets.length
            data = f"{separator}{page.text}".encode()
            state.started, state.size = True, state.size + len(data)
            yield data

    sink.add(f"{TEXT_DIR}/{stem}.txt", chunks(), "data", document.updated_at)
    await anyio.to_thread.run_sync(sink.flush)
    warn_size(f"{TEXT_DIR}/{stem}.txt", state.size)
    cats = categories(document, options.categories, state.tags)
    ann = ann_bytes(cats, state.spans, state.passthrough, state.length, stem)
    if ann:
        sink.add(f"{ANN_DIR}/{stem}.ann", ann, "data", document.updated_at)
    return state.parts


async def _next_part(parts: AsyncIterator[Part]) -> Part | None:
    return await anext(parts, None)


_WRITERS = {"part": _write_parts, "document": _write_document}
