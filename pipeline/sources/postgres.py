"""A live eScriptorium database as a source: ``postgresql://user@host:port/db`` + its MEDIA_ROOT.

Strictly read-only: every connection is ``READ ONLY``, and nothing is ever written to it; image
sizes (eScriptorium stores none) come from file headers under the media root, cached in our own
SQLite file. Reading is lazy and batched: a document's parts come a page at a time (keyset
pagination), each page costing a fixed number of statements whatever its size, all inside one
``REPEATABLE READ`` transaction, so an export is one consistent snapshot while people keep
editing. ``jit=off`` as eScriptorium sets it (its document queries are slow with JIT);
``TimeZone=UTC`` so timestamps, and so archives, do not depend on the server's settings.

Connections follow libpq: anything the URL leaves out comes from ``PGHOST``, ``PGPORT``,
``PGPASSFILE``, ``PGSERVICE`` / ``?service=``... Passwords never appear in messages:
:func:`redact` is how the source names itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio.to_thread
import psycopg
from psycopg import AsyncConnection, IsolationLevel
from psycopg.types.string import TextLoader

from pipeline.errors import CorpusError, UsageError
from pipeline.imagesizes import ImageSizeCache
from pipeline.model import Document, Layer, Part, Selection
from pipeline.ocrmodel import OcrModel, build_models, file_under
from pipeline.registry import default_registry
from pipeline.store import models as model_sql
from pipeline.store import rows, sql
from pipeline.store.dialect import POSTGRES
from pipeline.store.rows import Row

#: URL schemes this source opens
SCHEMES = ("postgresql", "postgres")
#: parts read per page (one statement each for parts, blocks, lines, annotations, metadata)
PART_PAGE = 64
#: parts in the first page, before the parts' line count is known
FIRST_PAGE = 16
#: lines of rows a page of parts holds at most (fewer parts per page when parts have many lines)
PAGE_LINES = 8192
#: documents listed per statement
DOCUMENT_PAGE = 64
#: seconds to wait for a server before giving up (libpq's ``connect_timeout``)
CONNECT_TIMEOUT = 10
#: eScriptorium's ``core_document.workflow_state`` values
WORKFLOW_STATES = {"draft": 0, "shared": 1, "published": 2, "archived": 3}
ARCHIVED = WORKFLOW_STATES["archived"]
#: session settings: eScriptorium's ``jit=off``; UTC so archives don't depend on the server
SESSION_OPTIONS = "-c jit=off -c TimeZone=UTC"
APPLICATION_NAME = "pipeline"

_PASSWORD_IN_CONNINFO = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def is_postgres_url(value: object) -> bool:
    """True for ``postgresql://...`` / ``postgres://...`` (what ``--corpus`` hands to this source)."""
    return isinstance(value, str) and value.split("://", 1)[0].lower() in SCHEMES and "://" in value


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (in the authority or a ``password=`` parameter)."""
    if not is_postgres_url(url):
        return _PASSWORD_IN_CONNINFO.sub(r"\1***", url)
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        auth, host = netloc.rsplit("@", 1)
        if ":" in auth:
            auth = auth.split(":", 1)[0] + ":***"
        netloc = f"{auth}@{host}"
    query = parts.query
    if query:
        pairs = [
            (k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs, safe="/:*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _message(exc: BaseException) -> str:
    """A driver error as one line, without anything that could carry a password."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    return _PASSWORD_IN_CONNINFO.sub(r"\1***", text) or type(exc).__name__


class _JsonText(TextLoader):
    """jsonb as its JSON text: geometry is parsed in one ``json.loads`` per part batch, as from SQLite."""


def open_postgres(
    url: str, *, media_root: str | os.PathLike[str] | None, registry: str | os.PathLike[str] | None = None
) -> PostgresSource:
    """The source for ``--corpus postgresql://...``: ``media_root`` is eScriptorium's MEDIA_ROOT;
    image sizes are cached in the ``registry`` file (default :func:`default_registry`)."""
    if media_root is None:
        raise UsageError(
            f"{redact(url)}: give --media-root DIR, eScriptorium's MEDIA_ROOT (where the images are)"
        )
    media = Path(media_root)
    if not media.is_dir():
        raise UsageError(f"media root {media}: no such folder")
    path = Path(registry) if registry is not None else default_registry()
    return PostgresSource(url, media_root=media, sizes=ImageSizeCache(path), registry=path)


class PostgresSource:
    """Documents and parts of an eScriptorium database. Every call opens its own connection (so
    concurrent exports each read their own snapshot) and closes it when done."""

    def __init__(
        self,
        url: str,
        *,
        media_root: str | Path | None,
        sizes: ImageSizeCache | None = None,
        registry: Path | None = None,
        part_page: int = PART_PAGE,
    ) -> None:
        self.url = url
        #: where exports of this source are recorded (our SQLite file, never the database)
        self.registry = registry if registry is not None else default_registry()
        self.media_root = Path(media_root).resolve() if media_root is not None else None
        self.sizes = sizes or ImageSizeCache(None)
        self.part_page = part_page
        self._checked = False

    # -- naming and connecting ---------------------------------------------------------------

    def display(self) -> str:
        return redact(self.url)

    def default_registry(self) -> Path:
        """Our SQLite file, never the database: exports and the image size cache live there."""
        return self.registry

    def __str__(self) -> str:
        return self.display()

    def close(self) -> None:
        self.sizes.close()

    def __enter__(self) -> PostgresSource:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @asynccontextmanager
    async def _connect(self, what: str) -> AsyncIterator[AsyncConnection[Any]]:
        """A read-only REPEATABLE READ connection; errors become one line naming the database."""
        try:
            conn = await AsyncConnection.connect(
                self.url,
                options=SESSION_OPTIONS,
                application_name=APPLICATION_NAME,
                connect_timeout=CONNECT_TIMEOUT,
                prepare_threshold=1,  # the page statements run again for every page
            )
        except psycopg.Error as exc:
            raise CorpusError(f"{self.display()}: cannot connect: {_message(exc)}") from None
        try:
            conn.adapters.register_loader("jsonb", _JsonText)
            conn.adapters.register_loader("json", _JsonText)
            await conn.set_read_only(True)
            await conn.set_isolation_level(IsolationLevel.REPEATABLE_READ)
            if not self._checked:
                await self._check_schema(conn)
            yield conn
        except psycopg.OperationalError as exc:
            raise CorpusError(f"{self.display()}: connection lost while {what}: {_message(exc)}") from None
        except psycopg.Error as exc:
            raise CorpusError(f"{self.display()}: error while {what}: {_message(exc)}") from None
        finally:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def _check_schema(self, conn: AsyncConnection[Any]) -> None:
        """Refuse a database that is not eScriptorium's, naming the first missing table or column."""
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT c.table_name, c.column_name FROM information_schema.columns c"
                " WHERE c.table_schema = ANY(current_schemas(false)) AND c.table_name = ANY(%s)",
                (list(sql.REQUIRED),),
            )
            missing = sql.missing_schema(await cur.fetchall())
        if missing:
            raise CorpusError(f"{self.display()}: not an eScriptorium database ({missing} is missing)")
        self._checked = True

    @staticmethod
    async def _all(
        conn: AsyncConnection[Any], query: str, params: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Rows of one of the shared statements (``pipeline.store.sql``), through the dialect."""
        cur = await conn.execute(POSTGRES.sql(query), POSTGRES.params(params or {}))
        return await cur.fetchall()

    @staticmethod
    async def _many(
        conn: AsyncConnection[Any], queries: Sequence[str], params: dict[str, Any]
    ) -> list[list[tuple[Any, ...]]]:
        """Rows of several statements sent at once (libpq's pipeline mode): one round trip to the
        server for all of them instead of one each."""
        values = POSTGRES.params(params)
        async with conn.pipeline():
            cursors = [await conn.execute(POSTGRES.sql(q), values) for q in queries]
        return [await cur.fetchall() for cur in cursors]

    # -- documents ---------------------------------------------------------------------------

    async def documents(
        self, selection: Selection | Sequence[str | int] | None = None
    ) -> AsyncIterator[Document]:
        """The selected documents by id (all but archived ones by default); UsageError for a named
        document, project or state that matches nothing."""
        if selection is None or not isinstance(selection, Selection):
            selection = Selection(documents=tuple(selection) if selection else None)
        async with self._connect("listing documents") as conn, conn.transaction():
            if selection.documents:  # named: whatever their project or state, with any of the tags
                for doc_id in await self._resolve(conn, selection.documents):
                    document = await self._load(conn, doc_id)
                    if selection.keeps(document):
                        yield document
                return
            project = await self._project(conn, selection.project) if selection.project is not None else None
            states = [_state(s) for s in selection.states]
            params = {
                "project": project,
                "archived": selection.include_archived or ARCHIVED in states,
                "states": states,
                "tags": list(selection.tags),
                "limit": DOCUMENT_PAGE,
                "after": 0,
            }
            while rows := await self._all(conn, _SELECT_DOCUMENTS, params):
                for (doc_id,) in rows:
                    yield await self._load(conn, doc_id)
                params["after"] = rows[-1][0]

    async def document(self, ref: str | int) -> Document:
        """One document by id or exact name; UsageError if unknown or if the name is ambiguous."""
        async with self._connect(f"reading document {ref!r}") as conn, conn.transaction():
            text = str(ref)
            if text.isdigit() and (rows := await self._all(conn, sql.DOCUMENT_BY_ID, {"ref": int(text)})):
                return await self._load(conn, rows[0][0])
            rows = await self._all(conn, sql.DOCUMENTS_BY_NAME, {"ref": text})
            if not rows:
                raise UsageError(f"no document {text!r} in {self.display()}")
            if len(rows) > 1:
                ids = ", ".join(str(r[0]) for r in rows)
                raise UsageError(
                    f"document name {text!r} is ambiguous in {self.display()} (ids {ids}); use an id"
                )
            return await self._load(conn, rows[0][0])

    async def _resolve(self, conn: AsyncConnection[Any], refs: Sequence[str | int]) -> list[int]:
        found: set[int] = set()
        missing: list[str] = []
        for ref in refs:
            text = str(ref)
            rows: list[tuple[Any, ...]] = []
            if text.isdigit():
                rows = await self._all(conn, sql.DOCUMENT_BY_ID, {"ref": int(text)})
            if not rows:
                rows = await self._all(conn, sql.DOCUMENTS_BY_NAME, {"ref": text})
            if not rows:
                missing.append(text)
            found.update(r[0] for r in rows)
        if missing:
            raise UsageError(f"no document {', '.join(repr(m) for m in missing)} in {self.display()}")
        return sorted(found)

    async def _project(self, conn: AsyncConnection[Any], ref: str | int) -> int:
        text = str(ref)
        rows = await self._all(conn, _PROJECT, {"id": int(text) if text.isdigit() else None, "slug": text})
        if not rows:
            raise UsageError(f"no project {text!r} (by id or slug) in {self.display()}")
        return rows[0][0]

    async def _load(self, conn: AsyncConnection[Any], doc_id: int) -> Document:
        document = rows.document(await self._many(conn, rows.DOCUMENT_STATEMENTS, {"doc": doc_id}))
        if document is None:
            raise UsageError(f"no document {doc_id} in {self.display()}")
        return document

    async def part_ids(self, document: Document, pages: Sequence[int]) -> tuple[int, ...]:
        """The ids of the parts at 1-based page numbers, in part order; UsageError past the end."""
        wanted = set(pages)
        async with self._connect(f"listing the parts of document {document.id}") as conn, conn.transaction():
            ids = [r[0] for r in await self._all(conn, sql.PART_IDS_IN_ORDER, {"doc": document.id})]
        beyond = [p for p in sorted(wanted) if p < 1 or p > len(ids)]
        if beyond:
            where = f"document {document.id} ({document.name!r})"
            raise UsageError(f"no page {', '.join(map(str, beyond))} in {where}, which has {len(ids)} pages")
        return tuple(ids[p - 1] for p in sorted(wanted))

    async def change_marker(self, document: Document, layer: str | None = None) -> str:
        """Cheap evidence of change: one statement of aggregates over the rows an export reads (see
        ``sql.CHANGE_MARKER``), and the size and modification time of each part's image file."""
        chosen = document.layer(layer) if layer is not None else document.choose_layer()
        params = {"doc": document.id, "layer": chosen.id if chosen else None}
        async with self._connect(f"reading document {document.id}") as conn, conn.transaction():
            rows = await self._all(conn, sql.CHANGE_MARKER, params)
            images = [r[0] for r in await self._all(conn, sql.PART_IMAGES, params)]
        root = str(self.media_root) if self.media_root is not None else None
        files = await anyio.to_thread.run_sync(_file_stamps, root, images)
        text = json.dumps([rows[0] if rows else None, files], default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    # -- models ------------------------------------------------------------------------------

    async def models(self) -> list[OcrModel]:
        """Every OCR model (``core_ocrmodel``) by id, with the documents it was trained or run on:
        the same three statements as the SQLite corpus, in one snapshot."""
        async with self._connect("reading models") as conn, conn.transaction():
            results = [await (await conn.execute(q)).fetchall() for q in model_sql.STATEMENTS]  # type: ignore[arg-type]
        return build_models(*results)

    def model_path(self, model: OcrModel) -> Path | None:
        """Where the model's file is under MEDIA_ROOT (never outside it), None without one."""
        found = file_under(self.media_root, model.file)
        return Path(found) if found is not None else None

    # -- parts -------------------------------------------------------------------------------

    async def parts(
        self,
        document: Document,
        layer: str | None = None,
        part_ids: Sequence[int] | None = None,
        *,
        annotations: bool = True,
    ) -> AsyncIterator[Part]:
        """The document's parts in order (all, or ``part_ids``), each complete in ``layer`` (None:
        ``Document.choose_layer``), read a page at a time in one REPEATABLE READ READ ONLY transaction."""
        chosen = document.layer(layer) if layer is not None else document.choose_layer()
        if chosen is None:
            available = ", ".join(repr(la.name) for la in document.layers if not la.archived) or "none"
            state = "is archived" if any(la.name == layer for la in document.layers) else "does not exist"
            where = f"document {document.id} ({document.name!r})"
            raise UsageError(f"layer {layer!r} {state} in {where}; available: {available}")
        what = f"reading document {document.id} ({document.name!r})"
        async with self._connect(what) as conn, conn.transaction():
            builder = _Builder(self, document, chosen, annotations)
            await builder.prepare(conn)
            if part_ids:
                ordered = await self._ordered(conn, document, part_ids)
                start = 0

                async def next_rows(done: int, _: list[Row]) -> list[Row]:
                    nonlocal start
                    ids = ordered[start : start + builder.page_size()]
                    start += len(ids)
                    return await self._all(conn, sql.PARTS_OF, {"ids": ids}) if ids else []
            else:
                params: dict[str, Any] = {"doc": document.id, "limit": min(FIRST_PAGE, self.part_page)}

                async def next_rows(done: int, last: list[Row]) -> list[Row]:
                    if done == 0:
                        return await self._all(conn, sql.PARTS_FIRST, params)
                    if len(last) < params["limit"]:
                        return []
                    params["limit"] = builder.page_size()
                    return await self._all(
                        conn, sql.PARTS_AFTER, params | {"order": last[-1][2], "id": last[-1][0]}
                    )

            async for part in _read_ahead(conn, builder, next_rows):
                yield part

    async def _ordered(
        self, conn: AsyncConnection[Any], document: Document, part_ids: Sequence[int]
    ) -> list[int]:
        unique = list(dict.fromkeys(part_ids))
        found = await self._all(conn, sql.PART_ORDER_OF, {"doc": document.id, "ids": unique})
        missing = sorted(set(unique) - {pid for _, pid in found})
        if missing:
            raise UsageError(
                f"no part {', '.join(map(str, missing))} in document {document.id} ({document.name!r})"
            )
        return [pid for _, pid in sorted(found)]


_SELECT_DOCUMENTS = """
    SELECT d.id FROM core_document d
    WHERE d.id > :after
      AND (:project::integer IS NULL OR d.project_id = :project::integer)
      AND (:archived OR d.workflow_state <> 3)
      AND (cardinality(:states::smallint[]) = 0 OR d.workflow_state = ANY(:states::smallint[]))
      AND (cardinality(:tags::text[]) = 0 OR EXISTS (
            SELECT 1 FROM core_document_tags dt JOIN core_documenttag t ON t.id = dt.documenttag_id
            WHERE dt.document_id = d.id AND t.name = ANY(:tags::text[])))
    ORDER BY d.id LIMIT :limit
"""
_PROJECT = """
    SELECT pr.id FROM core_project pr WHERE pr.id = :id::integer OR pr.slug = :slug
    ORDER BY pr.id = :id::integer DESC, pr.id LIMIT 1
"""


def _state(value: str | int) -> int:
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    try:
        return WORKFLOW_STATES[str(value).lower()]
    except KeyError:
        raise UsageError(
            f"unknown workflow state {value!r}; choose from {', '.join(WORKFLOW_STATES)}"
        ) from None


def _file_stamps(media_root: str | None, images: Sequence[str | None]) -> str:
    """A digest of each image file's size and modification time (a stat, the file is not opened)."""
    digest = hashlib.sha256()
    for image in images:
        path = _under(media_root, image)
        try:
            stat = os.stat(path) if path is not None else None
        except (OSError, ValueError):
            stat = None
        digest.update(f"{image}|{stat.st_size if stat else ''}|{stat.st_mtime_ns if stat else ''}\n".encode())
    return digest.hexdigest()


def _under(media_root: str | None, image: str | None) -> str | None:
    """Where a part's image is: its stored path under the media root; None when there is none or
    when the path would lead outside it (absolute, ``..``): never a file elsewhere on this machine.
    Strings, not pathlib: that would intern every file name."""
    if media_root is None or not image:
        return None
    if image.startswith("/") or "\\" in image or ".." in image.split("/"):
        return None
    return os.path.join(media_root, image)


#: ``next_rows(pages_done, last_page_rows)``: the next page's part rows, [] when done
RowsAfter = Callable[[int, list[Row]], Awaitable[list[Row]]]


async def _read_ahead(
    conn: AsyncConnection[Any], builder: _Builder, next_rows: RowsAfter
) -> AsyncIterator[Part]:
    """Parts page by page, the next page fetched while this one is built and consumed: the server
    works in its own process meanwhile, so its time is hidden behind rendering."""

    async def step(done: int, batch: list[Row]) -> tuple[rows.Page, list[Row]]:
        page = await builder.fetch(conn, batch)
        return page, await next_rows(done + 1, batch)

    batch = await next_rows(0, [])
    task = asyncio.ensure_future(step(0, batch)) if batch else None
    done = 0
    try:
        while task is not None:
            page, batch = await task
            done += 1
            task = asyncio.ensure_future(step(done, batch)) if batch else None
            for part in await anyio.to_thread.run_sync(builder.build, page):
                yield part
    finally:
        if task is not None:
            if not task.done():
                task.cancel()
                with anyio.CancelScope(shield=True):
                    await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # retrieved: the error that stopped the export is already raised


class _Builder:
    """Fetches one document's parts a page of part rows at a time (five statements a page); the
    rows become parts in :class:`~pipeline.sources.rows.PartBuilder`."""

    def __init__(self, source: PostgresSource, document: Document, layer: Layer, annotations: bool) -> None:
        self.source, self.document, self.layer, self.annotations = source, document, layer, annotations
        self.parts = rows.PartBuilder(document, (), ())
        self.lines_per_part = 0.0

    async def prepare(self, conn: AsyncConnection[Any]) -> None:
        taxonomies = (
            await PostgresSource._all(conn, sql.TAXONOMIES, {"doc": self.document.id})
            if self.annotations
            else []
        )
        self.parts = rows.PartBuilder(
            self.document,
            await PostgresSource._all(conn, sql.BLOCK_TYPES),
            await PostgresSource._all(conn, sql.LINE_TYPES),
            taxonomies,
        )

    async def fetch(self, conn: AsyncConnection[Any], part_rows: list[Row]) -> rows.Page:
        """What a page of part rows needs: four statements and the image sizes (I/O only)."""
        ids = [r[0] for r in part_rows]
        params = {"parts": ids, "layer": self.layer.id}
        statements = (sql.BLOCKS, sql.LINES, sql.PART_METADATA) + (
            (sql.ANNOTATIONS,) if self.annotations else ()
        )
        blocks, lines, metadata, *notes = await PostgresSource._many(conn, statements, params)
        self.lines_per_part = len(lines) / max(1, len(ids))
        media = str(self.source.media_root) if self.source.media_root is not None else None
        paths = [_under(media, r[4]) for r in part_rows]
        sizes = await anyio.to_thread.run_sync(self.source.sizes.sizes, paths)
        return rows.Page(part_rows, paths, sizes, blocks, lines, notes[0] if notes else [], metadata)

    def page_size(self) -> int:
        """Parts in the next page: ``part_page``, fewer for pages of many lines (seen on the last
        page), so memory holds about :data:`PAGE_LINES` lines of rows whatever the pages hold."""
        if self.lines_per_part <= 0:
            return min(FIRST_PAGE, self.source.part_page)
        return max(1, min(self.source.part_page, int(PAGE_LINES / self.lines_per_part)))

    def build(self, page: rows.Page) -> list[Part]:
        """The page's parts (CPU only: run in a worker thread while the next page is fetched)."""
        return self.parts.build(page)
