"""Plan and run a job: select documents, fingerprint them, export what changed, prune, report.

A document's fingerprint is its source's change marker (``Source.change_marker``: aggregates of
its rows, a zip's directory, file sizes and times) with the document itself, its provenance (the
models that made the layer, which every XML, IIIF and hOCR file names) and the output's options;
an archive that adds models (``models = "used" | "all"``) also fingerprints those models (their
rows, links, history and file stamps). So an unchanged document is skipped without reading its
parts or a model file, and a job killed midway
resumes where it stopped: what completed has a matching fingerprint in the registry. Parts are
read in planning only by ``--dry-run``, for the size estimates of the archives it would write.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from pipeline import __version__, sinks, writers
from pipeline.errors import DocumentError, PipelineError, UsageError
from pipeline.export import ExportResult, export_bulk, export_document, provenance_of
from pipeline.jobs.config import ArchiveConfig, JobConfig
from pipeline.jobs.executors import Executor, ExportWork, Outcome, make_executor
from pipeline.jobs.progress import JobProgress, human_size, progress_for
from pipeline.logcontext import where
from pipeline.model import Document, Part, Selection
from pipeline.naming import slug
from pipeline.ocrmodel import OcrModel
from pipeline.options import ExportOptions
from pipeline.registry import ExportRecord, Registry, new_export_id
from pipeline.select import RegionFilter
from pipeline.sinks.local import remove_stale_partials
from pipeline.sources import Source, StampsImages, open_source
from pipeline.writers import models as model_files

log = logging.getLogger("pipeline")

#: archive names when ``archive.name`` is not set (the extension is added)
DEFAULT_NAME = "export_doc{document_id}_{slug}_{format}_{date}{time}_{fingerprint}"
#: rough compressed bytes per line and per part, by archive kind, for ``--dry-run`` estimates
ESTIMATE = {True: (220, 2_000), False: (60, 0)}


@dataclass(frozen=True, slots=True)
class Scan:
    """One document read in one layer: what the size estimate needs."""

    parts: int
    lines: int
    image_bytes: int


@dataclass(slots=True)
class Task:
    """One archive to make: one document, or all of them in bulk mode, for one output."""

    output: int
    options: ExportOptions
    documents: tuple[Document, ...]
    fingerprint: str
    parts: int
    #: bytes the archive will roughly take; None until estimated (``plan_job(estimate=True)``)
    estimate: int | None = None
    previous: ExportRecord | None = None

    @property
    def label(self) -> str:
        names = ", ".join(d.name for d in self.documents[:3]) + ("..." if len(self.documents) > 3 else "")
        return f"outputs[{self.output}] {self.options.format} {names}"


@dataclass(slots=True)
class Plan:
    config: JobConfig
    documents: list[Document]
    tasks: list[Task]
    now: datetime
    registry_path: Path

    @property
    def todo(self) -> list[Task]:
        return [t for t in self.tasks if t.previous is None]


@dataclass(slots=True)
class JobReport:
    """What a run did; written as JSON next to the archives."""

    job: str
    started_at: str
    exported: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    #: old archives retention could not delete: ``{"path", "error"}``
    prune_failed: list[dict[str, str]] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def exit_code(self) -> int:
        """1 if an archive failed, an image or a model file was left out (``on_error = "skip"``) or
        an old archive could not be pruned, else 0."""
        failed = self.failed or self.prune_failed
        skipped = any(e.get("skipped_images") or e.get("skipped_models") for e in self.exported)
        return 1 if failed or skipped else 0


# --- planning -----------------------------------------------------------------------------


async def _select(source: Source, config: JobConfig) -> list[Document]:
    chosen = config.select
    selection = Selection(tuple(chosen.documents) if chosen.documents else None, tuple(chosen.tags),
                          include_archived=chosen.include_archived, project=chosen.project,
                          states=tuple(chosen.states))
    return [doc async for doc in source.documents(selection)]


def _check(config: JobConfig, documents: Sequence[Document], source: Path) -> None:
    """Layers and region types against the selected documents, all at once, before any export."""
    problems: list[str] = []
    for n, output in enumerate(config.outputs):
        for doc in documents:
            try:
                doc.choose_layer(output.layer)
            except UsageError as exc:
                problems.append(f"outputs[{n}].layer: {exc}")
            try:
                RegionFilter.parse(output.regions, doc)
            except UsageError as exc:
                problems.append(f"outputs[{n}].regions: document {doc.name!r}: {exc}")
    if problems:
        raise UsageError(f"{source}: " + "; ".join(dict.fromkeys(problems)))


async def _digest(source: Source, document: Document, layer: str, models: Sequence[OcrModel]) -> str:
    """What an export of the document in ``layer`` depends on in the source: the document (its
    types, layers, tags, metadata...), the source's change marker of its parts and the provenance
    its files state (a model renamed or run again changes it); no part is read."""
    marker = await source.change_marker(document, layer)
    prov = provenance_of(document, layer, models)
    text = f"{dataclasses.replace(document, part_count=0)!r}|{layer}|{marker}|{prov!r}"
    return hashlib.sha256(text.encode()).hexdigest()


async def _scan(source: Source, document: Document, layer: str) -> Scan:
    """Read the document's parts for the size estimate (``--dry-run`` only): lines, image sizes."""
    parts = lines = image_bytes = 0
    async for part in source.parts(document, layer):
        parts, lines = parts + 1, lines + len(part.lines)
        image_bytes += _image_size(source, part)
    return Scan(parts, lines, image_bytes)


def _image_size(source: Source, part: Part) -> int:
    """The size of the part's image: a zip member's from the zip's directory, else the file's."""
    if isinstance(source, StampsImages):
        stamp = source.image_stamp(part)
        return stamp[1] if stamp else 0
    try:
        return os.stat(part.image_path).st_size if part.image_path else 0
    except OSError:
        return 0


def _fingerprint(options: ExportOptions, digests: Sequence[str], models: str | None = None) -> str:
    """The options, the documents' digests and, for an archive that adds models, their marker."""
    parts: list[Any] = [__version__, options.describe(), list(digests)]
    if models is not None:
        parts.append(models)
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _estimate(options: ExportOptions, scan: Scan) -> int:
    per_line, per_part = ESTIMATE[writers.get(options.format).zipped]
    images = scan.image_bytes if options.images else 0
    return images + per_line * scan.lines + per_part * scan.parts


def _unchanged(registry: Registry, fingerprint: str, archive: ArchiveConfig) -> ExportRecord | None:
    """The last finished export with this fingerprint still in the archive folder with its recorded
    size (a local file, or an object: one HEAD request), if any.

    A ``running`` record whose file exists counts as finished: outputs only appear at their final
    name once complete, so the run that wrote it was killed between the rename and the registry
    update. ``run_job`` then records it as complete.
    """
    for status in ("complete", "running"):
        for record in registry.find(fingerprint=fingerprint, status=status):
            if record.path and archive.holds(record.path) and sinks.exists(record.path, record.size):
                return record
    return None


def source_options(config: JobConfig, *, images: bool = True) -> dict[str, Any]:
    """What ``open_source`` is told besides the URL, here and in a Dask worker alike;
    ``images=False`` (planning) extracts no image from a zip. An eScriptorium database also needs
    its media root, and the registry file where image sizes are cached."""
    wanted = any(o.images or o.format == "lines" for o in config.outputs)  # line crops need the images
    options: dict[str, Any] = {"images": images and wanted}
    if config.media_root is not None:
        options["media_root"] = str(config.media_root)
    if config.registry is not None:
        options["registry"] = str(config.registry)
    return options


@contextmanager
def open_input(config: JobConfig, *, images: bool = True) -> Iterator[Source]:
    """What the job reads, opened read-only: the corpus, or the source by path or URL."""
    with open_source(config.input, **source_options(config, images=images)) as source:
        yield source


async def plan_job(
    config: JobConfig, source: Path, *, now: datetime | None = None, estimate: bool = False
) -> Plan:
    """Select, check and fingerprint (from change markers: no part is read); mark the tasks whose
    archive is already up to date. ``estimate`` (``--dry-run``) reads the parts of the documents
    still to export, for the size of their archives.

    Writes nothing: without a registry file yet, nothing can be up to date."""
    with open_input(config, images=False) as corpus:
        registry_path = config.registry_path(corpus.default_registry())
        registry = Registry(registry_path) if registry_path.is_file() else None
        documents = await _select(corpus, config)
        _check(config, documents, source)
        layers = {(doc.id, o.layer): doc.choose_layer(o.layer).name
                  for doc in documents for o in config.outputs}
        by_id = {doc.id: doc for doc in documents}
        models = await model_files.source_models(corpus)  # small tables, read whole (3 statements)
        digests = {(doc_id, layer): await _digest(corpus, by_id[doc_id], layer, models)
                   for (doc_id, _), layer in layers.items()}
        tasks: list[Task] = []
        bulk = config.archive.mode == "bulk"
        for n, output in enumerate(config.outputs):
            options = output
            groups = [tuple(documents)] if bulk and documents else [(doc,) for doc in documents]
            for group in groups:
                if not bulk:  # the layer actually read, so the fingerprint and the registry name it
                    options = dataclasses.replace(options, layer=layers[group[0].id, output.layer])
                read = [(doc, layers[doc.id, output.layer]) for doc in group]
                added = None
                if options.models != "none":
                    chosen = model_files.included(models, group, options.models)
                    added = await anyio.to_thread.run_sync(model_files.marker, corpus, chosen, models)
                fp = _fingerprint(options, [digests[doc.id, layer] for doc, layer in read], added)
                task = Task(n, options, group, fp, sum(doc.part_count for doc in group))
                if config.select.changed_only and registry is not None:
                    task.previous = _unchanged(registry, fp, config.archive)
                tasks.append(task)
        if estimate:
            scans: dict[tuple[int, str], Scan] = {}
            for task in (t for t in tasks if t.previous is None):
                keys = [(doc.id, layers[doc.id, config.outputs[task.output].layer]) for doc in task.documents]
                for key in keys:
                    if key not in scans:
                        scans[key] = await _scan(corpus, by_id[key[0]], key[1])
                task.estimate = sum(_estimate(task.options, scans[key]) for key in keys)
    return Plan(config, documents, tasks, now or datetime.now(), registry_path)


def describe_plan(plan: Plan) -> Iterator[str]:
    """The ``--dry-run`` listing."""
    config = plan.config
    what = f"corpus {config.shown_input}" if config.corpus else f"source {config.shown_input}"
    yield f"job {config.name!r}: {what}, {len(plan.documents)} documents, " \
          f"{config.archive.mode} archives in {config.archive.directory}"
    for doc in plan.documents:
        yield f"  document {doc.id} {doc.name!r}: {doc.part_count} parts, tags {list(doc.tags)}"
    for n, output in enumerate(config.outputs):
        yield f"  outputs[{n}]: {json.dumps(dataclasses.asdict(output), default=str)}"
    for task in plan.tasks:
        state = f"unchanged since export {task.previous.id}" if task.previous else \
            f"export, ~{human_size(task.estimate or 0)}"
        yield f"  {task.label}: {task.parts} parts, {state}"
    todo = plan.todo
    total = human_size(sum(t.estimate or 0 for t in todo))
    yield f"{len(todo)} archives to write (~{total}), {len(plan.tasks) - len(todo)} unchanged"


# --- running ------------------------------------------------------------------------------


@contextmanager
def job_lock(archive: ArchiveConfig) -> Iterator[None]:
    """One job per local archive folder at a time; then partial files of killed runs (of this job or
    of an export into the same folder) are deleted; those being written by live processes are not.

    A remote folder (``s3://``) has no lock: archive names carry the time and the data's
    fingerprint, and what killed runs left there is for ``pipeline exports gc``."""
    if archive.remote:
        yield
        return
    with sinks.locked_folder(Path(archive.location)) as removed:
        for name in removed:
            log.info("removed %s, left by an interrupted run", name)
        yield


def _archive_name(plan: Plan, task: Task) -> str:
    spec = writers.get(task.options.format)
    doc = task.documents[0] if len(task.documents) == 1 else None
    template = plan.config.archive.name or DEFAULT_NAME
    fields = {
        "job": plan.config.name, "document_id": doc.id if doc else "all",
        "slug": slug(doc.name if doc else plan.config.name), "format": spec.tag,
        "date": f"{plan.now:%Y%m%d}", "time": f"{plan.now:%H%M%S}", "fingerprint": task.fingerprint[:12],
    }
    if task.options.lines.unzipped:  # a dataset folder
        return template.format(**fields)
    return f"{template.format(**fields)}.{'zip' if doc is None else spec.suffix}"


def _entry(task: Task, result: ExportResult | None = None, **extra: Any) -> dict[str, Any]:
    docs = [{"id": d.id, "name": d.name} for d in task.documents]
    item: dict[str, Any] = {"output": task.output, "format": task.options.format, "documents": docs,
                            "fingerprint": task.fingerprint}
    if result is not None:
        item |= {"export_id": result.id, "path": result.location, "size": result.size,
                 "sha256": result.sha256, "etag": result.etag, "parts": result.parts,
                 **_skipped(result.report)}
    return item | extra


def _skipped(report: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """An export's report as the job reports it: images left out, and model files (if any)."""
    models = [r for r in report if "model" in r]
    return {"skipped_images": [r for r in report if "model" not in r]} | (
        {"skipped_models": models} if models else {})


async def _export(plan: Plan, task: Task, source: Source, registry: Registry) -> ExportResult:
    """One archive; in bulk mode a failing document is dropped and the archive rebuilt without it."""
    archive = plan.config.archive
    target = archive.join(_archive_name(plan, task))
    directory = _scratch(archive)
    if archive.mode == "document":
        return await export_document(source, task.documents[0], task.options, target, registry=registry,
                                     now=plan.now, fingerprint=task.fingerprint, scratch=directory)
    return await export_bulk(source, task.documents, task.options, target, name=plan.config.name,
                             registry=registry, now=plan.now, fingerprint=task.fingerprint, scratch=directory)


async def _run_task(
    plan: Plan, task: Task, corpus: Source, registry: Registry, report: JobReport
) -> int:
    """Export one task, recording the outcome; returns bytes written."""
    started = time.monotonic()
    while True:
        try:
            result = await _export(plan, task, corpus, registry)
            break
        except DocumentError as exc:  # bulk: drop the document, rebuild without it
            log.error("%s: %s", task.label, exc)
            report.failed.append(_entry(dataclasses.replace(task, documents=(exc.document,)), error=str(exc)))
            task.documents = tuple(d for d in task.documents if d.id != exc.document.id)
            if not task.documents:
                return 0
        except Exception as exc:  # one failing archive does not stop the others
            log.error("%s: failed: %s", task.label, exc, exc_info=not isinstance(exc, PipelineError))
            report.failed.append(_entry(task, error=str(exc)))
            return 0
    report.exported.append(_entry(task, result, duration_s=round(time.monotonic() - started, 3)))
    _prune(plan, task, registry, report)
    return result.size


def _prune(plan: Plan, task: Task, registry: Registry, report: JobReport) -> None:
    """Retention: keep the newest ``archive.keep`` complete exports of this document/bulk and format
    in this folder; delete the older ones from their destination and the registry. An archive that
    cannot be deleted stays in the registry and is reported (the job then exits 1), the others go."""
    keep = plan.config.archive.keep
    if keep is None:
        return
    archive = plan.config.archive
    doc = task.documents[0] if archive.mode == "document" else None
    records = [
        r for r in registry.find(document_id=doc.id if doc else None,
                                 document_name=doc.name if doc else plan.config.name,
                                 format=writers.get(task.options.format).name, status="complete")
        if r.path and archive.holds(r.path)
    ]
    kept = {r.path for r in records[:keep]}
    gone = []
    for record in records[keep:]:
        if record.path and record.path not in kept:
            try:
                sinks.remove(record.path)
            except (OSError, PipelineError) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                log.error("%s: could not prune %s: %s", task.label, record.path, why)
                report.prune_failed.append({"path": record.path, "error": why})
                continue
            report.pruned.append(record.path)
        gone.append(record.id)
    registry.delete(gone)


def write_report(report: JobReport, archive: ArchiveConfig) -> str:
    """``<job>-report.json`` next to the archives, replaced atomically; returns where."""
    path = archive.join(f"{report.job}-report.json")
    sink = sinks.open_sink(path)
    try:
        sink.write(json.dumps(dataclasses.asdict(report), indent=2, ensure_ascii=False).encode())
    except BaseException:
        sink.abort()
        raise
    sink.commit()
    return path


async def run_job(plan: Plan, executor: Executor | None = None) -> tuple[JobReport, str]:
    """Run the plan's tasks on ``executor`` (one already started), else on the one the job's
    ``[executor]`` asks for; returns the report and where it was written.

    This process is the coordinator: it alone writes the registry and the report, and prunes.
    Archives of one document run on the executor (in process, or as Dask tasks); a bulk archive
    is written here, whatever the executor."""
    config = plan.config
    report = JobReport(config.name, plan.now.isoformat(timespec="seconds"))
    started = time.monotonic()
    if not config.archive.remote:  # also where the registry of a source without one lives
        Path(config.archive.location).mkdir(parents=True, exist_ok=True)
    registry = Registry(plan.registry_path)
    for task in plan.tasks:
        if task.previous is not None:
            if task.previous.status == "running":
                registry.recover(task.previous.id)
            report.skipped.append(_entry(task, reason="unchanged", export_id=task.previous.id,
                                         path=task.previous.path))
    todo = plan.todo
    with job_lock(config.archive), open_input(config) as corpus, \
            progress_for(sum(len(t.documents) for t in todo), sum(t.parts for t in todo)) as progress:
        if config.archive.mode == "bulk":
            await _run_bulk(plan, todo, corpus, registry, report, progress)
        elif todo:
            await _run_documents(plan, todo, corpus, registry, report, progress, executor)
        report.duration_s = round(time.monotonic() - started, 3)
        path = write_report(report, config.archive)
    if not todo:
        log.info("job %s: nothing changed, nothing exported", config.name)
    return report, path


async def _run_bulk(
    plan: Plan, todo: Sequence[Task], corpus: Source, registry: Registry, report: JobReport,
    progress: JobProgress,
) -> None:
    """Bulk archives, here: one zip gathers every document, so it cannot be split over workers."""
    if plan.config.executor.kind != "local" and todo:
        log.info("bulk archives are written by this process, not by the %s executor",
                 plan.config.executor.kind)
    limiter = anyio.CapacityLimiter(plan.config.concurrency)

    async def one(task: Task) -> None:
        async with limiter:
            size = await _run_task(plan, task, corpus, registry, report)
        where.set("")  # progress lines are about the job, not the last part written
        progress.advance(task.label, documents=len(task.documents), parts=task.parts, size=size)

    async with anyio.create_task_group() as tg:
        for task in todo:
            tg.start_soon(one, task)


async def _run_documents(
    plan: Plan, todo: Sequence[Task], corpus: Source, registry: Registry, report: JobReport,
    progress: JobProgress, executor: Executor | None,
) -> None:
    """One archive per document on the executor; this side records each as it starts and ends."""
    config = plan.config
    archive = config.archive
    scratch = _scratch(archive)
    options = source_options(config)
    source = config.input if "://" in config.input else str(Path(config.input).resolve())
    works = [
        ExportWork(n, source, options, task.documents[0], task.options,
                   archive.join(_archive_name(plan, task)), plan.now, task.fingerprint,
                   str(scratch) if scratch else None)
        for n, task in enumerate(todo)
    ]
    ids: dict[int, str] = {}
    clock: dict[int, float] = {}

    def started(works: Sequence[ExportWork]) -> None:
        with registry.batch():  # one commit for a cluster's whole batch
            for work in works:
                ids[work.key], clock[work.key] = new_export_id(), time.monotonic()
                doc, options = work.document, work.options
                registry.start(ids[work.key], document_id=doc.id, document_name=doc.name,
                               format=writers.get(options.format).name, layer=options.layer,
                               options=dataclasses.asdict(options), path=work.target,
                               fingerprint=work.fingerprint)

    def done(work: ExportWork, outcome: Outcome) -> None:
        task, export_id = todo[work.key], ids[work.key]
        where.set("")  # these lines are about the job, or name their part themselves
        for line in outcome.warnings:  # a worker's, as this process would have logged them
            log.warning("%s", line)
        if outcome.ok:
            registry.complete(export_id, path=outcome.location, size=outcome.size, sha256=outcome.sha256,
                              part_count=outcome.parts, report=outcome.skipped_images or None,
                              etag=outcome.etag)
            report.exported.append(_entry(task, export_id=export_id, path=outcome.location,
                                          size=outcome.size, sha256=outcome.sha256, etag=outcome.etag,
                                          parts=outcome.parts, **_skipped(outcome.skipped_images),
                                          duration_s=round(time.monotonic() - clock[work.key], 3)))
            _prune(plan, task, registry, report)
        else:
            registry.fail(export_id, outcome.detail or outcome.error or "failed")
            log.error("%s: failed: %s", task.label, outcome.error)
            if outcome.detail:
                log.error("%s", outcome.detail.rstrip())
            report.failed.append(_entry(task, error=outcome.error))
        progress.advance(task.label, documents=1, parts=task.parts, size=outcome.size)

    ex = config.executor
    if executor is not None:
        await executor.run(works, started, done)
    else:
        with make_executor(ex.kind, source=corpus, concurrency=config.concurrency, scheduler=ex.scheduler,
                           workers=ex.workers, memory_limit=ex.memory_limit, retries=ex.retries) as made:
            await made.run(works, started, done)
    if scratch is not None:  # a lost worker's partial file: its lock went with it
        for stale in remove_stale_partials(scratch):
            log.info("removed %s, left by a lost worker", stale.name)


def _scratch(archive: ArchiveConfig) -> Path | None:
    """Temporary files beside local archives (same file system); the system's for a URL."""
    return None if archive.remote else Path(archive.location)
