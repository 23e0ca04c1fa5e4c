"""One document, one export: source → format writers → archive sink → output.

Parts are pulled lazily from the source and rendered and deflated in a worker thread. With
transcoded images, a reader task and the image stage run ahead of the writer through bounded
memory object streams (backpressure), so transcoding overlaps with writing; without images or
with pass-through ones, everything left needs the GIL and parts go straight from the source to the
writer. Only names are kept per document (for METS); nothing else accumulates.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import traceback
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from contextlib import aclosing, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol, runtime_checkable

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream, TaskGroup

from . import exchange, formats
from .archive import Output, ZipSink, iter_chunks
from .dataset import DatasetWriter
from .errors import PipelineError, UsageError
from .folderout import FolderOutput
from .formats.lines import DatasetSummary, LineOptions, describe_options
from .images import ImageError, ImageJob, ImageOptions, ImageStage, passthrough_image
from .logcontext import where
from .model import Document, Part
from .naming import METS_NAME, EntryNamer, PageIndex, output_name, slug
from .registry import Registry, new_export_id
from .select import RegionFilter

#: with transcoded images, how many parts the source may read ahead of the image stage
LOOKAHEAD = 4
#: without images, pages are written once they hold this many lines: one worker-thread call for
#: several XML entries (each call wakes the event loop); a part with an image is written at once
FLUSH_LINES = 1024
#: images that could not be exported with ``on_error="skip"``, added just before METS
REPORT_NAME = "export-report.json"
#: bytes of a bulk archive's text entry kept in memory before spilling to a temporary file
SPOOL_SIZE = 8 << 20


class Source(Protocol):
    """Where parts come from: the corpus store, a folder or zip of XML, an exchange archive."""

    def parts(
        self, document: Document, layer: str = ..., part_ids: Sequence[int] | None = ...
    ) -> AsyncGenerator[Part, None]: ...


@runtime_checkable
class Releasing(Protocol):
    """A source that made something for a part (an image extracted from a zip) and wants to know
    when the export is done with it."""

    def release(self, part: Part) -> None: ...


def _release(source: Source, part: Part) -> None:
    if isinstance(source, Releasing):
        source.release(part)


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """What to export. ``regions`` is the raw filter string (``None`` = everything).

    ``image`` only matters with ``images``. ``on_error`` is the bad-image policy: ``fail`` stops
    the export, ``skip`` exports the part without its image and reports it.
    """

    format: str = "alto"
    #: None: ``manual``, else the document's only layer (``Document.choose_layer``)
    layer: str | None = None
    regions: str | None = None
    part_ids: tuple[int, ...] | None = None
    images: bool = False
    image: ImageOptions = ImageOptions()
    on_error: Literal["fail", "skip"] = "fail"
    #: exchange format: one text per ``part`` or per ``document``; offsets in code points or UTF-16
    unit: Literal["part", "document"] = "part"
    offset_unit: Literal["codepoint", "utf16"] = "codepoint"
    #: exchange format: region type name -> section name ("" = no section); default upper-cased type
    section_names: dict[str, str] | None = None
    #: exchange format: document metadata key whose values are the categories (None: the tags)
    categories: str | None = None
    #: lines format: how line images and texts become a training dataset
    lines: LineOptions = LineOptions()

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Destination:
    """Where the archive goes: a file path, a directory (auto-named, never overwriting) or stdout."""

    kind: Literal["file", "dir", "stdout"]
    path: Path | None = None

    @classmethod
    def parse(cls, value: str | None) -> Destination:
        if value == "-":
            return cls("stdout")
        path = Path(value or ".")
        if value is None or path.is_dir() or value.endswith(("/", "\\")):
            return cls("dir", path)
        return cls("file", path)


@dataclass(slots=True)
class ExportResult:
    id: str
    document: Document | None  #: None for a bulk archive
    path: Path | None
    size: int = 0
    sha256: str = ""
    parts: int = 0
    report: list[dict[str, Any]] = field(default_factory=list)
    #: the lines format's counts (lines per split, lines skipped by reason)
    dataset: DatasetSummary | None = None


async def export_document(
    source: Source,
    document: Document,
    options: ExportOptions,
    destination: Destination,
    *,
    registry: Registry | None = None,
    now: datetime | None = None,
    fingerprint: str | None = None,
) -> ExportResult:
    """Export one document; record it in ``registry``. Raises :class:`PipelineError` on failure.

    ``fingerprint`` (of the data and options, see ``pipeline.jobs``) is recorded so a job can skip
    documents that have not changed since their last export.
    """
    spec = formats.get(options.format)
    options = dataclasses.replace(options, layer=document.choose_layer(options.layer).name)
    flt = RegionFilter.parse(options.regions, document)
    export_id = new_export_id()
    folder = dataclasses.replace(spec, ext="") if _unzipped(spec, options) else spec
    final = _final_path(destination, document, folder, export_id, now or datetime.now())
    result = ExportResult(export_id, document, final)
    recording = _Recording(registry, result, document.id, document.name, spec, options, fingerprint)
    with recording, single_errors(), _output(final, destination, spec, options) as out:
        await _writer(spec)(source, document, options, spec, flt, out, result)
        await _commit(out, result)
    return result


def _output(final: Path | None, destination: Destination, spec: formats.FormatSpec,
            options: ExportOptions) -> Output | FolderOutput:
    """A file (or stdout), or a folder for an unzipped dataset."""
    if not _unzipped(spec, options):
        return Output(final, overwrite=destination.kind == "file")
    if final is None:
        raise UsageError("an unzipped dataset is a folder: give -o a folder, not -")
    return FolderOutput(final, overwrite=destination.kind == "file")


def _unzipped(spec: formats.FormatSpec, options: ExportOptions) -> bool:
    if options.lines.unzipped and spec.writer != "lines":
        raise UsageError("--unzipped is for the lines format")
    return options.lines.unzipped


class _Recording:
    """The registry side of one export: ``running`` on entry, then ``complete`` or ``failed``.

    A failure is recorded with its message (a user error) or its traceback (a bug); an export
    killed midway stays ``running``, never ``complete``.
    """

    def __init__(
        self, registry: Registry | None, result: ExportResult, document_id: int | None, name: str,
        spec: formats.FormatSpec, options: ExportOptions, fingerprint: str | None,
    ) -> None:
        self.registry, self.result = registry, result
        if registry is not None:
            registry.start(
                result.id, document_id=document_id, document_name=name, format=spec.name,
                layer=options.layer, options=options.describe(),
                path=str(result.path) if result.path else "-", fingerprint=fingerprint,
            )

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, _: object) -> None:
        if self.registry is None:
            return
        result = self.result
        if exc is None:
            self.registry.complete(
                result.id, path=str(result.path) if result.path else "-", size=result.size,
                sha256=result.sha256, part_count=result.parts, report=result.report or None,
            )
        elif isinstance(exc, Exception):
            message = str(exc) if isinstance(exc, PipelineError) else "".join(traceback.format_exception(exc))
            self.registry.fail(result.id, message)


async def _commit(out: Output | FolderOutput, result: ExportResult) -> None:
    """Publish the output under its final name and note its size and checksum."""
    result.path = await anyio.to_thread.run_sync(out.commit)
    result.size, result.sha256 = out.size, out.sha256


def _final_path(
    destination: Destination, document: Document, spec: formats.FormatSpec, export_id: str, now: datetime
) -> Path | None:
    if destination.kind == "stdout":
        return None
    if destination.kind == "file":
        assert destination.path is not None
        return destination.path
    assert destination.path is not None
    name = output_name(document.id, document.name, spec.tag, spec.ext, now, export_id[-8:])
    return destination.path / name.removesuffix(".")  # a folder's name has no extension


async def _produce(
    source: Source, document: Document, options: ExportOptions, send: ObjectSendStream[Part]
) -> None:
    async with send:
        async for part in source.parts(document, _layer(document, options), options.part_ids):
            await send.send(part)


async def _write_zip(
    source: Source, document: Document, options: ExportOptions, spec: formats.FormatSpec,
    flt: RegionFilter, out: Output, result: ExportResult, sink: ZipSink | None = None, prefix: str = "",
) -> None:
    """The document's entries; into ``sink`` under the folder ``prefix`` for a bulk archive (which the
    caller closes), else into a zip of its own. METS names entries relative to its own folder.

    Transcoded images are made ahead of the writer by the image stage; otherwise parts come
    straight from the source, and a pass-through image is checked when its page is written.
    """
    own = sink is None
    sink = sink or ZipSink(out)
    pages = _Pages(sink, spec, document, flt, result, prefix, skip=options.on_error == "skip")
    if options.images and not options.image.passthrough:
        await _write_transcoded(source, document, options, out, pages)
    else:
        pending = 0  # lines queued since the last flush
        async with _read(source, document, options) as parts:
            async for part in parts:
                where.set(_describe(document, part))
                if options.images:
                    await anyio.to_thread.run_sync(pages.write_passthrough, part, options.image)
                    continue
                pages.add(part, None)
                pending += len(part.lines)
                if pending >= FLUSH_LINES:
                    await anyio.to_thread.run_sync(sink.flush)
                    pending = 0
    where.set(f"document {document.name!r}")
    if result.report:
        report = json.dumps(result.report, indent=1, ensure_ascii=False).encode()
        sink.add(prefix + REPORT_NAME, report, "data", document.updated_at)
    sink.add(prefix + METS_NAME, formats.mets.render(pages.index), "xml", document.updated_at)
    await anyio.to_thread.run_sync(sink.close if own else sink.flush)


class _Pages:
    """One document's pages going into a sink: entry names, the METS index, the image report."""

    def __init__(
        self, sink: ZipSink, spec: formats.FormatSpec, document: Document, flt: RegionFilter,
        result: ExportResult, prefix: str, *, skip: bool,
    ) -> None:
        assert spec.render_part is not None
        self.sink, self.render, self.document, self.flt = sink, spec.render_part, document, flt
        self.result, self.prefix, self.skip = result, prefix, skip
        self.namer = EntryNamer((METS_NAME, REPORT_NAME))
        self.index = PageIndex()

    def add(self, part: Part, image: Path | BinaryIO | ImageError | None) -> None:
        """Queue the part's image (unless None; an error fails the export or, with ``skip``, is
        reported) and its XML."""
        image_name, xml_name = self.namer.part_names(part.image_filename, part.order)
        if isinstance(image, ImageError):
            if not self.skip:
                raise PipelineError(f"document {self.document.name!r}, {image}") from image
            self.result.report.append(image.report())
            image = None
        if image is not None:
            self.sink.add(self.prefix + image_name, image, "image", part.updated_at)
        context = _describe(self.document, part)
        if image is not None and image_name != part.image_filename:
            part = dataclasses.replace(part, original_filename=image_name)  # the XML names its entry
        xml = _logged_as(context, self.render(part, self.document, self.flt))
        self.sink.add(self.prefix + xml_name, xml, "xml", part.updated_at)
        self.index.append(image_name if image is not None else None, xml_name)
        self.result.parts += 1

    def write_passthrough(self, part: Part, options: ImageOptions) -> None:
        """Check the part's image, queue the page and write it (blocking: a worker thread)."""
        self.add(*passthrough_image(part, options))
        self.sink.flush()


async def _write_transcoded(
    source: Source, document: Document, options: ExportOptions, out: Output, pages: _Pages
) -> None:
    """Pages whose images the stage transcodes ahead; each page is written as soon as its image
    is complete, and its temporary file goes as soon as it is in the zip."""
    stage = ImageStage(options.image, spill_dir=_spill_dir(out))
    async with (
        stage, anyio.create_task_group() as tg, _with_images(tg, stage, source, document, options) as jobs,
    ):
        async for part, job in jobs:
            where.set(_describe(document, part))
            try:
                data: Path | BinaryIO | ImageError = await job.data()
            except ImageError as exc:
                data = exc
            pages.add(part, data)
            await anyio.to_thread.run_sync(pages.sink.flush)
            stage.release(job)
            _release(source, part)


async def _write_text(
    source: Source, document: Document, options: ExportOptions, spec: formats.FormatSpec,
    flt: RegionFilter, out: Output, result: ExportResult, sink: ZipSink | None = None, prefix: str = "",
) -> None:
    """The document's text to ``out``, or as the entry ``<prefix><slug>.txt`` of a bulk ``sink``
    (spooled to a temporary file first: a zip entry is read from a plain iterator)."""
    with tempfile.SpooledTemporaryFile(SPOOL_SIZE, dir=_spill_dir(out)) as spool:
        target = out if sink is None else spool
        async with _read(source, document, options) as parts:
            async for part in parts:
                where.set(_describe(document, part))
                for chunk in spec.render_document([part], flt):
                    target.write(chunk)
                result.parts += 1
        if sink is not None:
            spool.seek(0)
            entry = f"{prefix}{slug(document.name) or 'document'}.{spec.ext}"
            sink.add(entry, iter_chunks(spool), "data", document.updated_at)
            await anyio.to_thread.run_sync(sink.flush)


def _spill_dir(out: Output | FolderOutput) -> Path | None:
    return out.final_path.parent if out.final_path else None


def document_folder(document: Document) -> str:
    """A document's folder in a bulk archive: ``<id>_<slug>/`` (the id keeps it unique)."""
    return f"{document.id}_{slug(document.name) or 'document'}/"


class DocumentFailed(PipelineError):
    """One document of a bulk archive failed; the archive was abandoned (a job rebuilds it without)."""

    def __init__(self, document: Document, cause: BaseException) -> None:
        self.document = document
        super().__init__(f"document {document.id} {document.name!r}: {cause}")


async def export_bulk(
    source: Source,
    documents: Sequence[Document],
    options: ExportOptions,
    destination: Destination,
    *,
    name: str,
    registry: Registry | None = None,
    now: datetime | None = None,
    fingerprint: str | None = None,
) -> ExportResult:
    """Export ``documents`` into ONE zip with a folder per document (each as its own export would
    be, METS included), recorded in ``registry`` as ``name`` without a document id.

    Raises :class:`DocumentFailed` naming the document that failed; nothing is published then.
    """
    spec = formats.get(options.format)
    filters = [RegionFilter.parse(options.regions, doc) for doc in documents]
    for doc in documents:  # each reads its own default layer when none is named; fail before writing
        doc.choose_layer(options.layer)
    export_id = new_export_id()
    bulk_spec = dataclasses.replace(spec, ext="" if _unzipped(spec, options) else "zip")
    final = _final_path(destination, Document(0, name), bulk_spec, export_id, now or datetime.now())
    result = ExportResult(export_id, None, final)
    write = _writer(spec)
    with _Recording(registry, result, None, name, spec, options, fingerprint), \
            _output(final, destination, spec, options) as out:
        sink = out if isinstance(out, FolderOutput) else ZipSink(out)
        # a dataset of many documents is ONE dataset: splits at the root, documents across them
        dataset = _dataset(sink, options, out) if spec.writer == "lines" else None
        try:
            for document, flt in zip(documents, filters, strict=True):
                try:
                    with single_errors():
                        if dataset is not None:
                            await _fill_dataset(dataset, source, document, options, flt, result)
                        else:
                            await write(source, document, options, spec, flt, out, result, sink,
                                        document_folder(document))
                except Exception as exc:
                    raise DocumentFailed(document, exc) from exc
            if dataset is not None:
                await dataset.finish()
        finally:
            if dataset is not None:
                dataset.close()
        await anyio.to_thread.run_sync(sink.close)
        await _commit(out, result)
    return result


def _dataset(target: ZipSink | FolderOutput, options: ExportOptions, out: Output | FolderOutput,
             prefix: str = "") -> DatasetWriter:
    return DatasetWriter(target, image=options.image, lines=options.lines, on_error=options.on_error,
                         options=describe_options(options), prefix=prefix, spill_dir=_spill_dir(out))


async def _fill_dataset(
    dataset: DatasetWriter, source: Source, document: Document, options: ExportOptions,
    flt: RegionFilter, result: ExportResult,
) -> None:
    parts = source.parts(document, _layer(document, options), options.part_ids)
    async with aclosing(parts):
        result.parts += await dataset.write_document(parts, document, _layer(document, options), flt,
                                                     result.report, lambda part: _release(source, part))
    result.dataset = dataset.summary


async def _write_lines(
    source: Source, document: Document, options: ExportOptions, spec: formats.FormatSpec,
    flt: RegionFilter, out: Output | FolderOutput, result: ExportResult,
    sink: ZipSink | FolderOutput | None = None, prefix: str = "",
) -> None:
    """One document's line dataset, in a zip or folder of its own (bulk exports share one
    dataset, see :func:`export_bulk`)."""
    target = sink or (out if isinstance(out, FolderOutput) else ZipSink(out))
    dataset = _dataset(target, options, out, prefix)
    try:
        await _fill_dataset(dataset, source, document, options, flt, result)
        await dataset.finish()
    finally:
        dataset.close()
    if sink is None:
        await anyio.to_thread.run_sync(target.close)


async def _write_exchange(
    source: Source, document: Document, options: ExportOptions, spec: formats.FormatSpec,
    flt: RegionFilter, out: Output, result: ExportResult, sink: ZipSink | None = None, prefix: str = "",
) -> None:
    """The exchange archive (``test/`` + ``ann/`` at the root); in a bulk ``sink`` the entries stay
    at the root, their names prefixed with the document folder name, so the archive remains one."""
    target = sink or ZipSink(out)
    async with _read(source, document, options) as parts:
        result.parts += await exchange.write_entries(parts, document, options, flt, target,
                                                     prefix.rstrip("/"))
    if sink is None:
        await anyio.to_thread.run_sync(target.close)
        exchange.warn_archive_size(out.size)


#: dedicated writers named by ``FormatSpec.writer``
WRITERS = {"exchange": _write_exchange, "lines": _write_lines}


def _writer(spec: formats.FormatSpec) -> Callable[..., Awaitable[None]]:
    """The writer of a format: dedicated, per page (zipped XML) or one stream of text."""
    if spec.writer:
        return WRITERS[spec.writer]
    return _write_zip if spec.zipped else _write_text


def _logged_as(context: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
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


def _describe(document: Document, part: Part) -> str:
    """How messages name a part: document, 1-based page number and image file."""
    return f"document {document.name!r}, part {part.order + 1} ({part.image_filename})"


@contextmanager
def single_errors() -> Iterator[None]:
    """Re-raise the first error of a task group as itself, so callers see a PipelineError."""
    try:
        yield
    except BaseExceptionGroup as group:
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


def _with_images(
    tg: TaskGroup, stage: ImageStage, source: Source, document: Document, options: ExportOptions
) -> ObjectReceiveStream[tuple[Part, ImageJob]]:
    """Parts with their image jobs: a reader task and the image stage run ahead of the writer,
    so image I/O and transcoding (outside the GIL) overlap with writing."""
    send, receive = anyio.create_memory_object_stream[Part](LOOKAHEAD)
    jobs_send, jobs = anyio.create_memory_object_stream[tuple[Part, ImageJob]](options.image.lookahead)
    tg.start_soon(_produce, source, document, options, send)
    tg.start_soon(stage.feed, receive, jobs_send)
    return jobs


def _read(source: Source, document: Document, options: ExportOptions) -> aclosing[AsyncGenerator[Part, None]]:
    """Parts straight from the source, for writers with nothing to run ahead: reading and
    rendering both need the GIL, so a reader task ahead would only add a stream hop per part.

    These writers are done with a part (its image is in the archive) when they ask for the next
    one: each part is then released to the source."""
    return aclosing(_released(source, source.parts(document, _layer(document, options), options.part_ids)))


async def _released(source: Source, parts: AsyncGenerator[Part, None]) -> AsyncGenerator[Part, None]:
    async with aclosing(parts):
        async for part in parts:
            try:
                yield part
            finally:
                _release(source, part)


def _layer(document: Document, options: ExportOptions) -> str:
    """The layer read for ``document``: in a bulk archive each document may have its own default."""
    return document.choose_layer(options.layer).name
