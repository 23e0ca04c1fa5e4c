"""Page zips: one entry per page (ALTO, PAGE, ...), the page images if asked, and a METS index.

Transcoded images are made ahead of the writer by the image stage, through bounded memory object
streams (backpressure), so transcoding overlaps with writing; without images or with pass-through
ones everything left needs the GIL and parts go straight from the source to the archive (a
pass-through image is checked when its page is written). Only names are kept per document, for
METS; nothing else accumulates.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream, TaskGroup

from pipeline.archive import ZipArchive
from pipeline.errors import ImageError, PipelineError
from pipeline.formats import mets
from pipeline.images import ImageJob, ImageStage, passthrough_image, unknown_size
from pipeline.logcontext import where
from pipeline.model import Document, Part
from pipeline.naming import EntryNamer, PageIndex
from pipeline.ns import METS_NAME, REPORT_NAME
from pipeline.options import ImageOptions
from pipeline.select import RegionFilter
from pipeline.writers.base import WriteJob, logged_as

#: with transcoded images, how many parts the source may read ahead of the image stage
LOOKAHEAD = 4
#: without images, pages are written once they hold this many lines: one worker-thread call for
#: several entries (each call wakes the event loop); a part with an image is written at once
FLUSH_LINES = 1024

PageRenderer = Callable[[Part, Document, RegionFilter], Iterator[bytes]]


class PageZipWriter:
    """Writes each part with ``render`` (model in, bytes out) as ``<image stem><suffix>``."""

    def __init__(self, render: PageRenderer, *, suffix: str = ".xml") -> None:
        self.render, self.suffix = render, suffix

    async def write(self, job: WriteJob) -> None:
        """The document's entries into ``job.archive`` under ``job.prefix`` (METS names them
        relative to its own folder), flushed, not closed."""
        archive, document = job.archive, job.document
        assert archive is not None, "a page zip is always an archive"
        pages = Pages(archive, self.render, job, suffix=self.suffix)
        await write_pages(job, pages)
        add_report(job)
        archive.add(job.prefix + METS_NAME, mets.render(pages.index, document.provenance), "xml",
                    document.updated_at)
        await anyio.to_thread.run_sync(archive.flush)


async def write_pages(job: WriteJob, pages: Pages) -> None:
    """Every part through ``pages``: with their images transcoded ahead, checked and passed
    through, or without images (several pages per flush)."""
    archive, options = pages.archive, job.options
    if options.images and not options.image.passthrough:
        await _write_transcoded(job, pages)
    else:
        pending = 0  # lines queued since the last flush
        async with job.read() as parts:
            async for part in parts:
                where.set(job.describe(part))
                if options.images:
                    await anyio.to_thread.run_sync(pages.write_passthrough, part, options.image)
                    continue
                pages.add(part, None)
                pending += len(part.lines)
                if pending >= FLUSH_LINES:
                    await anyio.to_thread.run_sync(archive.flush)
                    pending = 0
    where.set(f"document {job.document.name!r}")


def add_report(job: WriteJob) -> None:
    """The images left out (``on_error="skip"``), as a JSON entry, if any."""
    if job.report:
        assert job.archive is not None
        report = json.dumps(job.report, indent=1, ensure_ascii=False).encode()
        job.archive.add(job.prefix + REPORT_NAME, report, "data", job.document.updated_at)


class Pages:
    """One document's pages going into an archive: entry names, the METS index, the image report.

    :meth:`entry` adds a page's own entry; a writer whose format is one file for the whole
    document overrides it (and ``reserved`` names that file, so no image takes its name).
    """

    def __init__(self, archive: ZipArchive, render: PageRenderer | None, job: WriteJob, *,
                 suffix: str = ".xml", reserved: tuple[str, ...] = ()) -> None:
        self.archive, self.render, self.job, self.suffix = archive, render, job, suffix
        self.skip = job.options.on_error == "skip"
        self.namer = EntryNamer((METS_NAME, REPORT_NAME, *reserved))
        self.index = PageIndex()

    def add(self, part: Part, image: Path | BinaryIO | ImageError | None) -> None:
        """Queue the part's image (unless None; an error fails the export or, with ``skip``, is
        reported) and its XML."""
        job = self.job
        image_name, xml_name = self.namer.part_names(part.image_filename, part.order)
        if image is None and (part.width <= 0 or part.height <= 0):  # no size: the image is unusable
            image = unknown_size(part)
        if isinstance(image, ImageError):
            if not self.skip:
                raise PipelineError(f"document {job.document.name!r}, {image}") from image
            job.report.append(image.report())
            image = None
        if image is not None:
            self.archive.add(job.prefix + image_name, image, "image", part.updated_at)
        context = job.describe(part)
        if image is not None and image_name != part.image_filename:
            part = dataclasses.replace(part, original_filename=image_name)  # the XML names its entry
        if self.suffix != ".xml":
            xml_name = xml_name.removesuffix(".xml") + self.suffix
        self.entry(part, xml_name, image_name if image is not None else None, context)
        job.parts += 1

    def entry(self, part: Part, name: str, image: str | None, context: str) -> None:
        """The page's own entry (rendered lazily, as the archive writes it) and its METS line."""
        assert self.render is not None
        xml = logged_as(context, self.render(part, self.job.document, self.job.regions))
        self.archive.add(self.job.prefix + name, xml, "xml", part.updated_at)
        self.index.append(image, name)

    def write_passthrough(self, part: Part, options: ImageOptions) -> None:
        """Check the part's image, queue the page and write it (blocking: a worker thread)."""
        self.add(*passthrough_image(part, options))
        self.archive.flush()


async def _write_transcoded(job: WriteJob, pages: Pages) -> None:
    """Pages whose images the stage transcodes ahead; each page is written as soon as its image
    is complete, and its temporary file goes as soon as it is in the zip."""
    stage = ImageStage(job.options.image, spill_dir=job.scratch)
    async with stage, anyio.create_task_group() as tg, _with_images(tg, stage, job) as jobs:
        async for part, image_job in jobs:
            where.set(job.describe(part))
            try:
                data: Path | BinaryIO | ImageError = await image_job.data()
            except ImageError as exc:
                data = exc
            pages.add(part, data)
            await anyio.to_thread.run_sync(pages.archive.flush)
            stage.release(image_job)
            job.release(part)


def _with_images(
    tg: TaskGroup, stage: ImageStage, job: WriteJob
) -> ObjectReceiveStream[tuple[Part, ImageJob]]:
    """Parts with their image jobs: a reader task and the image stage run ahead of the writer,
    so image I/O and transcoding (outside the GIL) overlap with writing."""
    send, receive = anyio.create_memory_object_stream[Part](LOOKAHEAD)
    jobs_send, jobs = anyio.create_memory_object_stream[tuple[Part, ImageJob]](job.options.image.lookahead)
    tg.start_soon(_produce, job, send)
    tg.start_soon(stage.feed, receive, jobs_send)
    return jobs


async def _produce(job: WriteJob, send: ObjectSendStream[Part]) -> None:
    async with send, job.read(release=False) as parts:  # released once written, by the writer
        async for part in parts:
            await send.send(part)
