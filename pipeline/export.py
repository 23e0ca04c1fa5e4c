"""One document, one export: source → writer → archive → sink, recorded in the registry.

Which source, which format and which destination are all data here: the source is anything
that satisfies :class:`~pipeline.sources.Source`, the format a row of the writers' table, the
destination whatever :func:`~pipeline.sinks.open_sink` opens for ``target``. Errors of a task
group (the image stage's) are mapped here, once: a user error comes out as itself, a bug as the
whole group.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from pipeline import __version__, writers
from pipeline.archive import ZipArchive
from pipeline.errors import DocumentError, PipelineError, UsageError, leaves
from pipeline.model import Document
from pipeline.naming import output_name, slug
from pipeline.ns import REPORT_NAME
from pipeline.ocrmodel import OcrModel, Provenance, provenance
from pipeline.options import ExportOptions
from pipeline.registry import Registry, new_export_id
from pipeline.select import RegionFilter
from pipeline.sinks import FolderSink, Sink, open_folder, open_sink
from pipeline.sinks.threaded import ThreadedSink
from pipeline.writers import FormatSpec, Gathering, WriteJob
from pipeline.writers.models import check_files, choose, included, keeper, source_models, write_models

if TYPE_CHECKING:
    from pipeline.sources import Source

__all__ = ["DocumentError", "ExportOptions", "ExportResult", "document_folder", "export_bulk",
           "export_document", "export_models"]


@dataclass(slots=True)
class ExportResult:
    id: str
    document: Document | None  #: None for a bulk archive
    location: str  #: where it was published: a path, ``-`` for stdout, or a URL
    size: int = 0
    sha256: str = ""
    etag: str | None = None  #: the destination's own checksum (an S3 ETag), if it keeps one
    parts: int = 0
    report: list[dict[str, Any]] = field(default_factory=list)
    #: what a gathering writer says it wrote (a dataset: lines per split, lines skipped and why)
    summary: str | None = None

    @property
    def path(self) -> Path | None:
        """The local file, if it is one."""
        return None if self.location == "-" or "://" in self.location else Path(self.location)


async def export_document(
    source: Source,
    document: Document,
    options: ExportOptions,
    target: str | Path | None = None,
    *,
    registry: Registry | None = None,
    now: datetime | None = None,
    fingerprint: str | None = None,
    scratch: Path | None = None,
    export_id: str | None = None,
    sink_for: Callable[[str], Sink | Awaitable[Sink]] | None = None,
) -> ExportResult:
    """Export one document to ``target`` (``-o``: a file, a folder, ``-``, a URL); record it in
    ``registry``. Raises :class:`PipelineError` on failure; nothing is published then.

    ``fingerprint`` (of the data and options, see ``pipeline.jobs``) is recorded so a job can skip
    documents that have not changed since their last export; ``scratch`` is where temporary
    files go (default: the system's temporary folder). A caller that must know the export's id
    before it starts (the HTTP service) gives ``export_id`` (from :func:`new_export_id`); one
    whose destination is not a URL (an HTTP response) gives ``sink_for``, called with the file name
    once the options have been checked, instead of ``target`` (a coroutine function when opening
    the sink must wait for something, as an object store; never on the event loop's time).
    """
    spec = writers.get(options.format)
    _check_models(spec, options)
    options = dataclasses.replace(options, layer=document.choose_layer(options.layer).name)
    flt = RegionFilter.parse(options.regions, document)
    models = await source_models(source)
    assert options.layer is not None
    document = _with_provenance(document, options.layer, models)
    export_id = export_id or new_export_id()
    when = now or datetime.now()
    if sink_for is not None:  # an HTTP response: a byte stream, never a folder
        if options.lines.unzipped:
            raise UsageError("an unzipped dataset is a folder: it cannot be sent as a response")
        name = output_name(document.id, document.name, spec.tag, spec.suffix, when, export_id[-8:])
        made = sink_for(name)
        sink: Sink | FolderSink = await made if inspect.isawaitable(made) else made
    else:
        sink = await _opened(spec, options, target, document.id, document.name, when, export_id)
    result = ExportResult(export_id, document, sink.location)
    with _Recording(registry, result, document.id, document.name, spec.name, options.layer, asdict(options),
                    fingerprint):
        async with _publishing(sink, result):
            job = WriteJob(source, document, options, flt, scratch=scratch)
            result.summary = await _write_alone(spec, job, sink, _Models(source, models, [document], options))
            result.parts, result.report = job.parts, job.report
    return result


async def _opened(*args: Any, **kwargs: Any) -> Sink | FolderSink:
    """:func:`_open` in a worker thread: opening a bucket's object asks S3 twice (the bucket, a
    free name), and a server's event loop, sending other clients their downloads, must not wait
    for that (nor for a network file system's folder)."""
    return await anyio.to_thread.run_sync(functools.partial(_open, *args, **kwargs))


def _open(spec: FormatSpec, options: ExportOptions, target: str | Path | None, document_id: int,
          document_name: str, when: datetime, export_id: str, *, zipped: bool = False) -> Sink | FolderSink:
    """The sink for ``target`` (``zipped``: the output is a zip whatever the format), or the folder
    of an unzipped dataset."""
    if options.lines.unzipped:
        if not isinstance(spec.writer, Gathering):
            raise UsageError(f"--unzipped writes a dataset folder: not for the {spec.name} format")
        name = output_name(document_id, document_name, spec.tag, "", when, export_id[-8:]).removesuffix(".")
        return open_folder(target, name=name)
    suffix = "zip" if zipped else spec.suffix
    name = output_name(document_id, document_name, spec.tag, suffix, when, export_id[-8:])
    return open_sink(target, name=name)


SOFTWARE = "pipeline"


def provenance_of(document: Document, layer: str, models: Sequence[OcrModel]) -> Provenance:
    """Who made what an export of ``layer`` holds: this program and version, the layer, and the
    models of that layer (what jobs fingerprint, and what every format writes)."""
    return provenance(SOFTWARE, __version__, layer, models, document.id)


def _with_provenance(document: Document, layer: str, models: Sequence[OcrModel]) -> Document:
    """The document saying who made what its export holds (every format writes it where its
    schema keeps provenance)."""
    return dataclasses.replace(document, provenance=provenance_of(document, layer, models))


def _check_models(spec: FormatSpec, options: ExportOptions) -> None:
    if options.models != "none" and not spec.zipped:
        raise UsageError(f"models = {options.models!r} adds model files to an archive; format "
                         f"{spec.name!r} writes a single {spec.suffix} stream")


@dataclass(slots=True)
class _Models:
    """The models an archive adds (``options.models``): none, those trained on or run on its
    documents, or all; a missing file follows ``on_error``."""

    source: Source
    every: Sequence[OcrModel]
    documents: Sequence[Document]
    options: ExportOptions

    async def write(self, archive: ZipArchive, report: list[dict[str, Any]]) -> None:
        if self.options.models == "none" or not self.every:
            return
        chosen = included(self.every, self.documents, self.options.models)
        keeps = keeper(self.source)
        missing = check_files(keeps, chosen, skip=self.options.on_error == "skip")
        await write_models(archive, keeps, chosen, self.every, missing=missing)
        report += missing


async def _write_alone(
    spec: FormatSpec, job: WriteJob, sink: Sink | FolderSink, models: _Models
) -> str | None:
    """A one-document export: a zip of the writer's entries (or the folder they go in), or the
    writer's stream as it is. Returns what a gathering writer says it wrote."""
    if spec.zipped or isinstance(sink, FolderSink):
        archive = job.archive = sink if isinstance(sink, FolderSink) else ZipArchive(sink)
        with _stopping(archive.abort), _one_user_error(), _gathering(spec, archive):
            await spec.writer.write(job)
            summary = await spec.writer.finish(archive) if isinstance(spec.writer, Gathering) else None
            await models.write(archive, job.report)
            await anyio.to_thread.run_sync(archive.close)
            return summary
    else:
        stream = ThreadedSink(sink)
        job.stream = stream
        with _stopping(stream.stop), _one_user_error():
            await spec.writer.write(job)
            await anyio.to_thread.run_sync(stream.drain)
    return None


@contextmanager
def _gathering(spec: FormatSpec, archive: ZipArchive | FolderSink) -> Iterator[None]:
    """Whatever happens, a gathering writer lets go of what it kept for ``archive``."""
    try:
        yield
    finally:
        if isinstance(spec.writer, Gathering):
            spec.writer.discard(archive)


def document_folder(document: Document) -> str:
    """A document's folder in a bulk archive: ``<id>_<slug>/`` (the id keeps it unique)."""
    return f"{document.id}_{slug(document.name) or 'document'}/"


async def export_bulk(
    source: Source,
    documents: Sequence[Document],
    options: ExportOptions,
    target: str | Path | None = None,
    *,
    name: str,
    registry: Registry | None = None,
    now: datetime | None = None,
    fingerprint: str | None = None,
    scratch: Path | None = None,
) -> ExportResult:
    """Export ``documents`` into ONE zip with a folder per document (each as its own export would
    be, METS included), recorded in ``registry`` as ``name`` without a document id.

    Raises :class:`DocumentError` naming the document whose data failed; nothing is published
    then. Anything else (a bug, an output error) fails the archive as itself.
    """
    spec = writers.get(options.format)
    _check_models(spec, options)
    filters = [RegionFilter.parse(options.regions, doc) for doc in documents]
    # each document reads its own default layer when none is named; fail before writing
    layers = [doc.choose_layer(options.layer).name for doc in documents]
    models = await source_models(source)
    documents = [_with_provenance(doc, layer, models) for doc, layer in zip(documents, layers, strict=True)]
    export_id = new_export_id()
    sink = await _opened(spec, options, target, 0, name, now or datetime.now(), export_id, zipped=True)
    result = ExportResult(export_id, None, sink.location)
    with _Recording(registry, result, None, name, spec.name, options.layer, asdict(options), fingerprint):
        async with _publishing(sink, result):
            archive = sink if isinstance(sink, FolderSink) else ZipArchive(sink)
            with _stopping(archive.abort), _gathering(spec, archive):
                for document, flt, layer in zip(documents, filters, layers, strict=True):
                    job = WriteJob(source, document, dataclasses.replace(options, layer=layer), flt,
                                   archive=archive, prefix=document_folder(document), scratch=scratch)
                    try:
                        with _one_user_error():
                            await spec.writer.write(job)
                    except PipelineError as exc:
                        raise DocumentError(document, exc) from exc
                    result.parts += job.parts
                    result.report += job.report
                if isinstance(spec.writer, Gathering):
                    result.summary = await spec.writer.finish(archive)
                await _Models(source, models, documents, options).write(archive, result.report)
                await anyio.to_thread.run_sync(archive.close)
    return result


async def export_models(
    source: Source,
    refs: Sequence[str | int],
    target: str | Path | None = None,
    *,
    registry: Registry | None = None,
    on_error: str = "fail",
    now: datetime | None = None,
) -> ExportResult:
    """Export the models ``refs`` names (ids or exact names) into one zip: each file byte for byte
    and its ``model.json``, recorded in ``registry`` as format ``models``. A missing file fails
    the export naming model and path (nothing is published), or with ``on_error="skip"`` is left
    out and reported (its ``model.json`` is kept)."""
    keeps = keeper(source)
    every = await keeps.models()
    models = choose(every, refs)
    export_id = new_export_id()
    label = models[0].name if len(models) == 1 else f"{len(models)} models"
    when = now or datetime.now()
    file_name = f"export_models_{slug(label) or 'model'}_{when:%Y%m%d%H%M%S}_{export_id[-8:]}.zip"
    sink = open_sink(target, name=file_name)
    result = ExportResult(export_id, None, sink.location)
    options = {"models": [m.id for m in models], "on_error": on_error}
    name = "models: " + ", ".join(m.name for m in models)
    with _Recording(registry, result, None, name, "models", None, options, None):
        async with _publishing(sink, result):
            missing = result.report = check_files(keeps, models, skip=on_error == "skip")
            archive = ZipArchive(sink)
            with _stopping(archive.abort):
                await write_models(archive, keeps, models, every, missing=missing)
                if missing:
                    report = json.dumps(missing, indent=1, ensure_ascii=False).encode()
                    archive.add(REPORT_NAME, report, "data", None)
                await anyio.to_thread.run_sync(archive.close)
            result.parts = len(models) - len(missing)
    return result


@asynccontextmanager
async def _publishing(sink: Sink, result: ExportResult) -> AsyncIterator[None]:
    """Commit ``sink`` when the block succeeds (noting where, its size and checksum), else abort
    it: nothing appears at the destination. Both in a worker thread (a commit syncs a file to
    disk; a server's event loop must not wait for that)."""
    try:
        yield
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(sink.abort)
        raise
    result.location = await anyio.to_thread.run_sync(sink.commit)
    result.size, result.sha256, result.etag = sink.size, sink.sha256, sink.etag


@contextmanager
def _stopping(stop: Any) -> Iterator[None]:
    """Call ``stop()`` when the block fails (a writer thread must not outlive its export)."""
    try:
        yield
    except BaseException:
        stop()
        raise


@contextmanager
def _one_user_error() -> Iterator[None]:
    """Where task groups arise (the image stage): a group of user errors comes out as its first
    error, the group chained to it (``--debug`` shows them all); a bug keeps the whole group."""
    try:
        yield
    except* PipelineError as group:
        first = next(leaves(group))
        raise first from group


class _Recording:
    """The registry side of one export: ``running`` on entry, then ``complete`` or ``failed``.

    A failure is recorded with its message (a user error) or its traceback (a bug); an export
    killed midway stays ``running``, never ``complete``.
    """

    def __init__(
        self, registry: Registry | None, result: ExportResult, document_id: int | None, name: str,
        format: str, layer: str | None, options: dict[str, Any], fingerprint: str | None,
    ) -> None:
        self.registry, self.result = registry, result
        if registry is not None:
            registry.start(
                result.id, document_id=document_id, document_name=name, format=format,
                layer=layer, options=options, path=result.location, fingerprint=fingerprint,
            )

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, _: object) -> None:
        if self.registry is None:
            return
        result = self.result
        if exc is None:
            self.registry.complete(
                result.id, path=result.location, size=result.size, sha256=result.sha256,
                part_count=result.parts, report=result.report or None, etag=result.etag,
            )
        elif isinstance(exc, Exception):
            message = str(exc) if isinstance(exc, PipelineError) else "".join(traceback.format_exception(exc))
            self.registry.fail(result.id, message)
