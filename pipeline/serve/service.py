"""What the HTTP faces (pages and API) ask of the exporter: documents, exports in the
background with their progress, on-the-fly exports into a response, thumbnails, whose is what.

It calls the same functions as the CLI (``open_source``, ``export_document``, the option model);
the background exports run in the task group that the application's lifespan owns, so none
outlives the server, and each user may run only ``limit`` at once.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from pipeline import sinks, writers
from pipeline.errors import PipelineError, UsageError
from pipeline.export import export_document
from pipeline.model import Document, Part
from pipeline.options import ExportOptions, Flag, build, choices, flags
from pipeline.registry import ExportRecord, Registry, new_export_id
from pipeline.select import RegionFilter
from pipeline.serve.accounts import Accounts, Owned, User
from pipeline.sinks.pipe import PipeSink
from pipeline.sources import Source, open_source
from pipeline.vips import thumbnail

log = logging.getLogger("pipeline.serve")

#: the region filter's names of untyped blocks and of lines outside any block
UNDEFINED, ORPHAN = "undefined", "orphan"
THUMB_WIDTH = 200


class NotFound(PipelineError):
    """No such document, part or export (or not the asking user's: the same answer)."""


class TooMany(PipelineError):
    """The user runs as many exports as they may at once."""


class Conflict(PipelineError):
    """The export is not in a state that allows it (not complete yet, still running)."""


class Gone(PipelineError):
    """The export is recorded complete but its archive is no longer where it was stored (410)."""


class Changed(Conflict):
    """The stored archive is not the export's any more (another size or ETag): its bytes are
    never sent (409)."""


class Unavailable(PipelineError):
    """The store holding the archive (S3) did not answer or refused us (502)."""


#: how ``/exports/{id}/download`` sends an archive kept on S3
S3_DOWNLOADS = ("redirect", "stream")


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """The server's settings (``pipeline serve`` flags)."""

    corpus: str
    registry: Path
    data: Path  #: exports and thumbnails go here
    media_root: str | None = None
    webhook: str | None = None
    limit: int = 3  #: concurrent exports (background and on the fly) per user
    secure_cookies: bool = False
    #: where exports are stored: None (``data/exports``), a folder, or ``s3://bucket/prefix/``
    output: str | None = None
    #: an archive on S3 is downloaded by a presigned ``redirect`` or streamed through (``stream``)
    s3_downloads: str = "redirect"
    #: how long a presigned URL works: a redirect is followed at once, so short
    presign_seconds: int = 300

    def __post_init__(self) -> None:
        if self.s3_downloads not in S3_DOWNLOADS:
            raise UsageError(f"s3 downloads: {', '.join(S3_DOWNLOADS)}, not {self.s3_downloads!r}")
        if not 1 <= self.presign_seconds <= 3600:
            raise UsageError("presigned URLs: 1 to 3600 seconds")

    @property
    def store(self) -> str:
        """Where the exports are written (``open_sink`` target, in folder mode)."""
        return self.output if self.output is not None else str(self.exports) + os.sep

    @property
    def exports(self) -> Path:
        return self.data / "exports"

    @property
    def thumbnails(self) -> Path:
        return self.data / "thumbnails"


@dataclass(frozen=True, slots=True)
class Stored:
    """A complete export's archive: where it is and what the registry says it holds."""

    record: ExportRecord
    location: str  #: a local path or a URL (``s3://bucket/key``)

    @property
    def name(self) -> str:
        return self.location.rstrip("/").rsplit("/", 1)[-1]

    @property
    def path(self) -> Path | None:
        """The local file, or None when it is kept elsewhere (a URL)."""
        return None if "://" in self.location else Path(self.location)


@dataclass
class Progress:
    """A running export as its page shows it; ``changed`` is set (and replaced) on every step."""

    user_id: int
    total: int = 0
    done: int = 0
    sink: Any = None
    status: str = "running"
    error: str | None = None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    changed: anyio.Event = field(default_factory=anyio.Event)
    finished: anyio.Event = field(default_factory=anyio.Event)

    def step(self) -> None:
        self.done += 1
        self.changed.set()
        self.changed = anyio.Event()

    def finish(self, status: str, error: str | None = None) -> None:
        self.status, self.error = status, error
        self.changed.set()
        self.finished.set()

    @property
    def bytes(self) -> int:
        return int(getattr(self.sink, "size", 0) or 0)


class _Counting:
    """A source whose parts are counted as the writer takes them (the progress of an export)."""

    def __init__(self, source: Source, progress: Progress) -> None:
        self._source, self._progress = source, progress

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    async def parts(self, document: Document, layer: str | None = None,
                    part_ids: Sequence[int] | None = None) -> AsyncIterator[Part]:
        async with aclosing(self._source.parts(document, layer, part_ids)) as parts:
            async for part in parts:
                yield part
                self._progress.step()


class Service:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        config.exports.mkdir(parents=True, exist_ok=True)  # also the exports' scratch space
        config.thumbnails.mkdir(parents=True, exist_ok=True)
        _check_store(config.store)
        self.registry = Registry(config.registry)
        self.accounts = Accounts(config.registry)
        self.active: dict[str, Progress] = {}
        self._running: dict[int, int] = {}  #: exports running or being accepted, per user id
        self._group: anyio.abc.TaskGroup | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def attach(self, group: anyio.abc.TaskGroup) -> None:
        self._group = group

    @property
    def group(self) -> anyio.abc.TaskGroup:
        if self._group is None:
            raise RuntimeError("the service runs inside the application's lifespan")
        return self._group

    def open(self) -> Source:
        """A source of its own for each request or export (sources are cheap to open; a
        corpus connection is not shared between threads)."""
        return open_source(self.config.corpus, media_root=self.config.media_root,
                           registry=str(self.config.registry))

    # --- documents ----------------------------------------------------------------------------

    async def documents(self) -> list[Document]:
        with self.open() as source:
            return [doc async for doc in source.documents()]

    async def document(self, ref: str | int) -> Document:
        with self.open() as source:
            return await self._document(source, ref)

    async def _document(self, source: Source, ref: str | int) -> Document:
        try:
            return await source.document(_ref(ref))
        except UsageError as exc:
            raise NotFound(str(exc)) from None

    async def parts(self, document: Document) -> list[Part]:
        """The document's parts for its page (their lines are read too: fine for a page of
        thumbnails, which the browser fetches one by one anyway)."""
        with self.open() as source:
            async with aclosing(source.parts(document)) as parts:
                return [part async for part in parts]

    async def thumbnail(self, ref: str | int, part_id: int) -> Path:
        """A part's thumbnail, made once and kept on disk (named after the image's path, size and
        time, so a replaced image gets a new one)."""
        with self.open() as source:
            document = await self._document(source, ref)
            try:
                async with aclosing(source.parts(document, None, (part_id,))) as parts:
                    found = [part async for part in parts]
            except UsageError:
                found = []
        if not found or not found[0].image_path or not Path(found[0].image_path).is_file():
            raise NotFound(f"document {document.id}: no image for part {part_id}")
        image = Path(found[0].image_path)
        stat = image.stat()
        key = hashlib.sha256(f"{image}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:20]
        path = self.config.thumbnails / str(document.id) / f"{part_id}-{THUMB_WIDTH}-{key}.jpg"
        if not path.is_file():
            data = await anyio.to_thread.run_sync(thumbnail, image, THUMB_WIDTH)
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            temp.write_bytes(data)
            temp.replace(path)
        return path

    # --- exports in the background ------------------------------------------------------------

    def _admit(self, user: User) -> None:
        """Take one of the user's slots (TooMany if none is free), before anything is awaited, so
        that simultaneous requests cannot both take the last one; :meth:`_release` gives it back."""
        running = self._running.get(user.id, 0)
        if running >= self.config.limit:
            raise TooMany(f"{user.name} runs {running} exports already (at most {self.config.limit} at once)")
        self._running[user.id] = running + 1

    def _release(self, user_id: int) -> None:
        self._running[user_id] -= 1

    async def start(self, user: User, ref: str | int, options: ExportOptions,
                    pages: Sequence[int] = ()) -> str:
        """Check the request, record it as the user's, and run it in the background; returns its id."""
        self._admit(user)
        try:
            document, options = await self._accept(ref, options, pages)
            export_id = new_export_id()
            self.accounts.own(export_id, user, document_id=document.id, document_name=document.name,
                              format=options.format, options=json.dumps(asdict(options), sort_keys=True))
            progress = self.active[export_id] = Progress(user.id, total=len(options.part_ids or ())
                                                         or document.part_count)
            self.group.start_soon(self._run, export_id, document, options, progress)
        except BaseException:
            self._release(user.id)
            raise
        return export_id

    async def _accept(self, ref: str | int, options: ExportOptions,
                      pages: Sequence[int]) -> tuple[Document, ExportOptions]:
        """The document, and the options with the pages as part ids, once checked."""
        with self.open() as source:
            document = await self._document(source, ref)
            if pages:
                options = dataclasses.replace(options, part_ids=await source.part_ids(document, pages))
        check(document, options)
        return document, options

    async def _run(self, export_id: str, document: Document, options: ExportOptions,
                   progress: Progress) -> None:
        async def opened(name: str) -> sinks.Sink:
            # in a thread: opening an object asks S3, and the loop is serving everyone else
            progress.sink = await anyio.to_thread.run_sync(
                functools.partial(sinks.open_sink, self.config.store, name=name))
            return progress.sink

        status, error = "failed", None
        try:
            with progress.scope, self.open() as source:
                await export_document(
                    _Counting(source, progress), document, options, registry=self.registry,
                    export_id=export_id, scratch=self.config.exports, sink_for=opened)
                status = "complete"
            if progress.scope.cancelled_caught:
                status, error = "interrupted", "cancelled"
        except PipelineError as exc:
            error = str(exc)
        except Exception as exc:  # a bug: the registry has the traceback; the user gets one line
            log.exception("export %s failed", export_id)
            error = f"internal error ({type(exc).__name__})"
        finally:
            if error and status == "failed":
                self.accounts.failed(export_id, error)
            progress.finish(status, error)
            self.active.pop(export_id, None)
            self._release(progress.user_id)
        if self.config.webhook:
            await self._notify(export_id)

    async def _notify(self, export_id: str) -> None:
        """POST the finished export's description to the configured webhook (one try; a failure
        is logged, never raised: the export is done either way)."""
        import httpx

        owned = self.accounts.find_any(export_id)
        if owned is None:
            return
        payload = {"event": "export.finished", "export": self.describe(owned)}
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.post(self.config.webhook or "", json=payload)
                response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("webhook %s for export %s: %s", self.config.webhook, export_id, exc)

    # --- what users see of their exports -----------------------------------------------------

    def owned(self, user: User) -> list[Owned]:
        return self.accounts.owned(user)

    def find(self, user: User, export_id: str) -> Owned:
        owned = self.accounts.find(export_id, user) if _is_export_id(export_id) else None
        if owned is None:
            raise NotFound(f"no export {export_id}")
        return owned

    def record(self, export_id: str) -> ExportRecord | None:
        found = self.registry.find(id=export_id)
        return found[0] if found else None

    def describe(self, owned: Owned, record: ExportRecord | None = None) -> dict[str, Any]:
        """An export as the API and the Files page show it."""
        record = record or self.record(owned.export_id)
        progress = self.active.get(owned.export_id)
        if record is None:
            status = "failed" if owned.error else "running" if progress else "interrupted"
        elif record.status == "running" and progress is None:
            status = "interrupted"  # not running in this server: killed, or the server restarted
        else:
            status = record.state
        location = record.path if record else None
        eid = owned.export_id
        out: dict[str, Any] = {
            "id": eid,
            "name": Path(location).name if location and status == "complete" else None,
            "document": {"id": owned.document_id, "name": owned.document_name},
            "format": owned.format,
            "options": json.loads(owned.options),
            "created_at": owned.created_at,
            "finished_at": record.finished_at if record else None,
            "status": status,
            "size": record.size if record and status == "complete" else None,
            "sha256": record.sha256 if record and status == "complete" else None,
            "parts": record.part_count if record and status == "complete" else None,
            "error": (record.error if record and record.status == "failed" else owned.error)
            if status == "failed" else None,
            "progress": {"parts_done": progress.done, "parts_total": progress.total,
                         "bytes": progress.bytes} if progress else None,
            "links": {"self": f"/api/exports/{eid}", "events": f"/api/exports/{eid}/events",
                      "download": f"/exports/{eid}/download" if status == "complete" else None},
        }
        return out

    def file(self, owned: Owned) -> Stored:
        """The finished export's archive (Conflict while it is not complete; Gone when its local
        file is; an object on S3 is checked by :meth:`check_object`, when it is sent)."""
        record = self.record(owned.export_id)
        state = self.describe(owned, record)["status"]
        if record is None or state != "complete":
            raise Conflict(f"export {owned.export_id} is {state}, not complete")
        if not record.path or record.path == "-":
            raise Gone(f"export {owned.export_id}: it was not stored")
        stored = Stored(record, record.path)
        if stored.path is not None:
            try:
                size = stored.path.stat().st_size if stored.path.is_file() else None
            except OSError:
                size = None
            if size is None:
                raise Gone(f"export {owned.export_id}: its file is gone")
            if size != record.size:
                raise Changed(f"export {owned.export_id}: its file was replaced since the export "
                              f"({size:,} bytes, {record.size or 0:,} recorded)")
        if stored.path is None and not stored.location.startswith("s3://"):
            raise Conflict(f"export {owned.export_id} is stored at {stored.location.partition('://')[0]}://, "
                           "which this server cannot send")
        return stored

    async def check_object(self, stored: Stored) -> None:
        """The S3 object is there and is the export's: its size and (when recorded) its ETag are
        those of the record; else Gone or Changed, and Unavailable when S3 does not answer."""
        from pipeline.sinks import s3

        eid = stored.record.id
        try:
            info = await anyio.to_thread.run_sync(s3.head, stored.location)
        except PipelineError as exc:
            log.warning("export %s: %s", eid, exc)
            raise Unavailable(f"export {eid}: its archive's store did not answer "
                              f"({str(exc).partition(': ')[2] or exc})") from None
        if info is None:
            raise Gone(f"export {eid}: its archive is no longer in the bucket")
        if info.size != stored.record.size or (stored.record.etag and info.etag != stored.record.etag):
            raise Changed(f"export {eid}: the object in the bucket was replaced since the export "
                          f"({info.size} bytes, ETag {info.etag}); it is not sent")

    def presigned(self, stored: Stored) -> str:
        """A short-lived URL that GETs the object from S3 (call only once the user may)."""
        from pipeline.sinks import s3

        try:
            return s3.presigned_get(stored.location, self.config.presign_seconds, filename=stored.name,
                                    media_type=media_type(stored.name))
        except PipelineError as exc:
            log.warning("export %s: %s", stored.record.id, exc)
            raise Unavailable(f"export {stored.record.id}: cannot sign a link to its archive") from None

    async def delete(self, owned: Owned) -> None:
        """Stop the export if it runs, then remove its file and its records."""
        progress = self.active.get(owned.export_id)
        if progress is not None:
            progress.scope.cancel()
            await progress.finished.wait()
        record = self.record(owned.export_id)
        if record is not None and record.path and record.status == "complete":
            try:
                await anyio.to_thread.run_sync(sinks.remove, record.path)
            except PipelineError as exc:  # the records stay: deleting again tries again
                raise Unavailable(f"export {owned.export_id}: its archive cannot be removed "
                                  f"({str(exc).partition(': ')[2] or exc})") from None
        if record is not None:
            self.registry.delete([owned.export_id])
        self.accounts.forget(owned.export_id)

    # --- exports made on the fly --------------------------------------------------------------

    async def stream(self, user: User, ref: str | int, options: ExportOptions,
                     pages: Sequence[int] = ()) -> tuple[str, PipeSink]:
        """Start an export into a pipe read by the response: returns its file name and the pipe
        once the options have been checked (an error before that is raised here, so the client
        gets a status, not a broken body). Not recorded: nothing is kept."""
        self._admit(user)
        try:
            document, options = await self._accept(ref, options, pages)
        except BaseException:
            self._release(user.id)
            raise
        opened = anyio.Event()
        state: dict[str, Any] = {}

        def make(name: str) -> PipeSink:
            sink = state["sink"] = PipeSink(name)
            if "abandoned" in state:
                sink.close()  # the client left before the response began: writes fail at once
            opened.set()
            return sink

        async def run() -> None:
            try:
                with self.open() as source:
                    await export_document(source, document, options, sink_for=make)
            except PipelineError as exc:
                state["error"] = exc
                log.info("on-the-fly export of document %s stopped: %s", document.id, exc)
            except Exception as exc:
                state["error"] = exc
                log.exception("on-the-fly export of document %s failed", document.id)
            finally:
                self._release(user.id)
                opened.set()

        self.group.start_soon(run)
        try:
            await opened.wait()
        except BaseException:
            state["abandoned"] = True
            if "sink" in state:
                state["sink"].close()
            raise
        if "sink" not in state:
            raise state.get("error") or RuntimeError("the export ended before it began")
        return state["sink"].location, state["sink"]


def _check_store(store: str) -> None:
    """Refuse, before serving, a store the exports could not be written to: S3 needs a folder
    (``s3://bucket/prefix/``) of a bucket that answers; a local folder is made."""
    if "://" not in store:
        Path(store).mkdir(parents=True, exist_ok=True)
        return
    from pipeline.sinks import s3

    url = s3.S3Url.parse(store)  # UsageError for another scheme
    if not url.is_folder:
        raise UsageError(f"{store}: exports go into a folder: end it with /")
    s3.check_bucket(url)


def media_type(name: str) -> str:
    return "application/zip" if name.endswith(".zip") else "text/plain; charset=utf-8"


def check(document: Document, options: ExportOptions) -> None:
    """What the export would refuse at its start, refused before it is accepted (a 400, not a
    failed export): the format, the layer, the region types."""
    writers.get(options.format)
    document.choose_layer(options.layer)
    RegionFilter.parse(options.regions, document)


# --- option fields given as text (a query string, a form) ------------------------------------


def field_names() -> dict[str, Flag]:
    """The option model's fields as the CLI names them, without the dashes (``image-format``)."""
    return {flag.flag.removeprefix("--"): flag for flag in flags()}


def options_from_fields(fields: Mapping[str, Iterable[str]], *, ignore: Iterable[str] = ()) -> ExportOptions:
    """The option model from text fields named like the CLI flags (``format``, ``images``,
    ``image-format``, ``section-name=TYPE=NAME`` repeated); UsageError naming a bad one."""
    known, skip = field_names(), set(ignore)
    values: dict[tuple[str, ...], Any] = {}
    for key, texts in fields.items():
        if key in skip:
            continue
        flag = known.get(key)
        if flag is None:
            raise UsageError(f"unknown option {key!r} (options: {', '.join(sorted(known))})")
        values[flag.path] = _convert(flag, list(texts))
    try:
        return build(ExportOptions, values)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def _convert(flag: Flag, texts: list[str]) -> Any:
    name = flag.flag.removeprefix("--")
    kind = str(flag.kind)
    if "dict[" in kind:
        pairs = {}
        for text in texts:
            key, sep, value = text.partition("=")
            if not sep or not key:
                raise UsageError(f"{name}: expected TYPE=NAME, not {text!r}")
            pairs[key] = value
        return pairs
    if len(texts) != 1:
        raise UsageError(f"{name}: give it once")
    text = texts[0]
    if flag.kind is bool or kind == "bool":
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise UsageError(f"{name}: expected true or false, not {text!r}")
    allowed = choices(flag.kind)
    if allowed is not None:
        if text not in allowed:
            raise UsageError(f"{name}: expected one of {', '.join(allowed)}, not {text!r}")
        return text
    if "int" in kind:
        if "None" in kind and text == "":
            return None
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"{name}: expected a whole number, not {text!r}") from None
    if "None" in kind and text == "":
        return None
    return text


def _ref(ref: str | int) -> str | int:
    return int(ref) if isinstance(ref, str) and ref.isdigit() else ref


def _is_export_id(text: str) -> bool:
    return len(text) == 26 and text[:14].isdigit() and all(c in "0123456789abcdef" for c in text[14:])
