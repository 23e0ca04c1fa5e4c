"""Datasets: the ``lines`` export, line images with their texts for training, in a zip or a folder.

Pages go through the crop stage (:mod:`pipeline.linecrops`) a bounded number ahead; each crop is
added to the output as soon as it is encoded, with its ``.gt.txt`` beside it and its row
appended to its split's ``metadata.jsonl`` (spooled to a temporary file: the zip is written in
order, and the metadata goes last). ``dataset.json`` closes the dataset. Only counters and
the spools live as long as the dataset; one dataset may hold several documents (a bulk archive):
the dataset is at the root of the archive, its splits across documents, and is closed by
:meth:`DatasetWriter.finish` once every document is in.
"""

from __future__ import annotations

import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

import anyio

from pipeline.archive import iter_chunks
from pipeline.errors import PipelineError
from pipeline.formats.lines import (
    METADATA_NAME,
    SPLITS,
    SUMMARY_NAME,
    TEXT_SUFFIX,
    DatasetSummary,
    LineTypeFilter,
    PagePlan,
    describe_options,
    folder_of,
    metadata_line,
    metadata_row,
    plan_page,
    split_of,
)
from pipeline.logcontext import where
from pipeline.model import Document, Part
from pipeline.options import ImageOptions, LineOptions
from pipeline.select import RegionFilter
from pipeline.writers.base import WriteJob

if TYPE_CHECKING:  # pipeline.linecrops loads libvips: only when a dataset is written
    from pipeline.linecrops import CropFormat

#: crops added between two writes of the output (each write is a worker-thread call)
FLUSH_EVERY = 64
#: bytes of a split's metadata kept in memory before spilling to a temporary file
SPOOL_SIZE = 4 << 20


class Entries(Protocol):
    """Where entries go: a zip (:class:`~pipeline.archive.ZipArchive`) or a folder
    (:class:`~pipeline.sinks.FolderSink`)."""

    def add(self, name: str, data: Any, kind: Any, when: Any = None) -> None: ...

    def flush(self) -> None: ...


class DatasetWriter:
    """The ``dataset`` family: each archive (zip or folder) gets one :class:`Dataset`, filled by
    :meth:`write` document by document and closed by :meth:`finish`; :meth:`discard` drops it
    when the export fails."""

    def __init__(self) -> None:
        self._open: dict[int, Dataset] = {}

    async def write(self, job: WriteJob) -> None:
        archive = job.archive
        assert archive is not None, "a dataset is always written into an archive or a folder"
        dataset = self._open.get(id(archive))
        if dataset is None:
            dataset = self._open[id(archive)] = Dataset(
                archive, image=job.options.image, lines=job.options.lines, on_error=job.options.on_error,
                options=describe_options(job.options), spill_dir=job.scratch)
        async with job.read(release=False) as parts:
            job.parts += await dataset.write_document(parts, job.document, job.layer, job.regions, job.report,
                                                      job.release)

    async def finish(self, archive: Entries) -> str | None:
        """Write the dataset's metadata and summary into ``archive``; a line saying what it holds."""
        dataset = self._open.pop(id(archive), None)
        if dataset is None:
            return None
        await dataset.finish()
        return dataset.summary.describe()

    def discard(self, archive: Entries) -> None:
        if (dataset := self._open.pop(id(archive), None)) is not None:
            dataset.close()


class Dataset:
    """One dataset being written into ``target`` under ``prefix``: :meth:`write_document` for each
    document, then :meth:`finish` once."""

    def __init__(
        self, target: Entries, *, image: ImageOptions, lines: LineOptions, on_error: Literal["fail", "skip"],
        options: dict[str, Any], prefix: str = "", spill_dir: Path | None = None,
    ) -> None:
        self.target, self.image, self.lines, self.on_error = target, image, lines, on_error
        self.prefix, self.spill_dir = prefix, spill_dir
        from pipeline.linecrops import CropFormat

        self.format: CropFormat = CropFormat.from_options(image, lines.mask)
        self.summary = DatasetSummary(options)
        self._spools: dict[str | None, IO[bytes]] = {}
        self._when: Any = None

    async def write_document(
        self, parts: AsyncIterator[Part], document: Document, layer: str, regions: RegionFilter,
        report: list[dict[str, Any]], release: Callable[[Part], None] = lambda part: None,
    ) -> int:
        """The document's crops; returns the number of pages read. Images that cannot be read
        fail the export, or with ``on_error="skip"`` are listed in ``report`` (the crops cut
        before the error stay)."""
        types = LineTypeFilter.parse(self.lines.types, document)
        self.summary.layer = layer if self.summary.layer in (None, layer) else "(several)"
        self._when = max((w for w in (self._when, document.updated_at) if w is not None), default=None)
        pending: deque[tuple[PagePlan, str | None]] = deque()

        async def planned() -> AsyncIterator[tuple[Part, list[Any]]]:
            async for part in parts:
                plan = plan_page(part, document, regions, types, self.lines)
                pending.append((plan, split_of(self.lines, document, part)))
                yield part, plan.crops

        from pipeline.linecrops import CropStage

        count = 0
        async with CropStage(self.format, self.lines.mask, lookahead=self.image.lookahead) as stage:
            async for page in stage.pages(planned()):
                plan, split = pending.popleft()
                part = page.part
                where.set(f"document {document.name!r}, part {part.order + 1} ({part.image_filename})")
                await self._write_page(page.crops, document, part, layer, split, plan)
                stage.done(page)
                if page.error is not None:
                    if self.on_error != "skip":
                        raise PipelineError(f"document {document.name!r}, {page.error}") from page.error
                    report.append(page.error.report())
                    self.summary.skipped_pages.append(page.error.report())
                self.summary.add_page(document, split, plan)
                await anyio.to_thread.run_sync(self.target.flush)
                release(part)
                count += 1
        where.set(f"document {document.name!r}")
        return count

    async def _write_page(
        self, crops: Any, document: Document, part: Part, layer: str, split: str | None, plan: PagePlan
    ) -> None:
        folder = self.prefix + folder_of(split)
        spool = self._spool(split)
        added = 0
        async for crop, data in crops:
            if data is None:  # the image is smaller than the page's stored size says
                plan.skipped["outside the image"] += 1
                continue
            name = crop.stem + self.format.suffix
            self.target.add(folder + name, data, "image", part.updated_at)
            self.target.add(folder + crop.stem + TEXT_SUFFIX, crop.text.encode(), "image", part.updated_at)
            spool.write(metadata_line(metadata_row(crop, name, document, part, layer, split)))
            self.summary.add_line(split, crop.text)
            added += 1
            if added % FLUSH_EVERY == 0:
                await anyio.to_thread.run_sync(self.target.flush)

    def _spool(self, split: str | None) -> IO[bytes]:
        if split not in self._spools:
            self._spools[split] = tempfile.SpooledTemporaryFile(SPOOL_SIZE, dir=self.spill_dir)  # noqa: SIM115
        return self._spools[split]

    async def finish(self) -> None:
        """Each split's ``metadata.jsonl`` (a split without lines has no folder: loaders refuse
        an empty one), then ``dataset.json``."""
        splits = [s for s in SPLITS if self.summary.lines[s]] if self.lines.split else [None]
        try:
            for split in splits:
                spool = self._spool(split)
                spool.seek(0)
                self.target.add(self.prefix + folder_of(split) + METADATA_NAME, iter_chunks(spool), "data",
                                self._when)
            self.target.add(self.prefix + SUMMARY_NAME, self.summary.render(), "data", self._when)
            await anyio.to_thread.run_sync(self.target.flush)
        finally:
            self.close()

    def close(self) -> None:
        for spool in self._spools.values():
            spool.close()
        self._spools.clear()
