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
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio.to_thread
import psycopg
from psycopg import AsyncConnection, IsolationLevel
from psycopg.types.string import TextLoader

from pipeline.errors import CorpusError, UsageError
from pipeline.imagesizes import ImageSizeCache, Size
from pipeline.model import Document, Layer, Line, Part, Polygon, Region, Taxonomy, TextAnnotation, Typology
from pipeline.registry import default_registry
from pipeline.sources import sql
from pipeline.store.reader import polygons

#: URL schemes this source opens
SCHEMES = ("postgresql", "postgres")
#: parts read per page (one statement each for parts, blocks, lines, annotations, metadata)
PART_PAGE = 64
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


@dataclass(frozen=True, slots=True)
class Selection:
    """Which documents, as eScriptorium users think of them; ``documents`` named wins over the rest."""

    documents: tuple[str | int, ...] | None = None
    tags: tuple[str, ...] = ()
    project: str | int | None = None
    states: tuple[str | int, ...] = ()
    include_archived: bool = False


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
                prepare_threshold=None,
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
        conn: AsyncConnection[Any], query: str, params: dict[str, Any] | None = None, **id_lists: int
    ) -> list[tuple[Any, ...]]:
        cur = await conn.execute(sql.POSTGRES.render(query, **id_lists), params or {})
        return await cur.fetchall()

    # -- documents ---------------------------------------------------------------------------

    async def documents(
        self, selection: Selection | Sequence[str | int] | None = None
    ) -> AsyncIterator[Document]:
        """The selected documents by id (all but archived ones by default); UsageError for a named
        document, project or state that matches nothing."""
        if selection is None or not isinstance(selection, Selection):
            selection = Selection(documents=tuple(selection) if selection else None)
        async with self._connect("listing documents") as conn, conn.transaction():
            if selection.documents:
                for doc_id in await self._resolve(conn, selection.documents):
                    yield await self._load(conn, doc_id)
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
        p = {"doc": doc_id}
        rows = await self._all(conn, sql.DOCUMENT, p)
        if not rows:
            raise UsageError(f"no document {doc_id} in {self.display()}")
        (did, name, created, updated) = rows[0]
        layers = await self._all(conn, sql.LAYERS, p)
        (count,) = (await self._all(conn, sql.PART_COUNT, p))[0]
        return Document(
            id=did,
            name=name,
            created_at=created,
            updated_at=updated,
            valid_block_types=_types(await self._all(conn, sql.VALID_BLOCK_TYPES, p)),
            valid_line_types=_types(await self._all(conn, sql.VALID_LINE_TYPES, p)),
            block_types=_types(await self._all(conn, sql.USED_BLOCK_TYPES, p)),
            layers=tuple(Layer(i, n, bool(a)) for i, n, a in layers),
            tags=tuple(t for (t,) in await self._all(conn, sql.TAGS, p)),
            metadata=tuple((k, v) for k, v in await self._all(conn, sql.DOCUMENT_METADATA, p)),
            part_count=count,
        )

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
        """Cheap evidence of change: the document's and its parts' last edits, part count, layer edit."""
        chosen = document.layer(layer) if layer is not None else document.choose_layer()
        async with self._connect(f"reading document {document.id}") as conn, conn.transaction():
            rows = await self._all(
                conn, sql.CHANGE_MARKER, {"doc": document.id, "layer": chosen.id if chosen else None}
            )
        return json.dumps(rows[0] if rows else None, default=str)

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
                chunks = [ordered[i : i + self.part_page] for i in range(0, len(ordered), self.part_page)]

                async def next_rows(done: int, _: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
                    if done >= len(chunks):
                        return []
                    ids = chunks[done]
                    return await self._all(conn, sql.PARTS_OF, {"ids": ids}, ids=len(ids))
            else:
                params: dict[str, Any] = {"doc": document.id, "limit": self.part_page}

                async def next_rows(done: int, last: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
                    if done == 0:
                        return await self._all(conn, sql.PARTS_FIRST, params)
                    if len(last) < self.part_page:
                        return []
                    return await self._all(
                        conn, sql.PARTS_AFTER, params | {"order": last[-1][2], "id": last[-1][0]}
                    )

            async for part in _read_ahead(conn, builder, next_rows):
                yield part

    async def _ordered(
        self, conn: AsyncConnection[Any], document: Document, part_ids: Sequence[int]
    ) -> list[int]:
        unique = list(dict.fromkeys(part_ids))
        found = await self._all(conn, sql.PART_ORDER_OF, {"doc": document.id, "ids": unique}, ids=len(unique))
        missing = sorted(set(unique) - {pid for _, pid in found})
        if missing:
            raise UsageError(
                f"no part {', '.join(map(str, missing))} in document {document.id} ({document.name!r})"
            )
        return [pid for _, pid in sorted(found)]


_SELECT_DOCUMENTS = """
    SELECT d.id FROM core_document d
    WHERE d.id > %(after)s
      AND (%(project)s::integer IS NULL OR d.project_id = %(project)s::integer)
      AND (%(archived)s OR d.workflow_state <> 3)
      AND (cardinality(%(states)s::smallint[]) = 0 OR d.workflow_state = ANY(%(states)s::smallint[]))
      AND (cardinality(%(tags)s::text[]) = 0 OR EXISTS (
            SELECT 1 FROM core_document_tags dt JOIN core_documenttag t ON t.id = dt.documenttag_id
            WHERE dt.document_id = d.id AND t.name = ANY(%(tags)s::text[])))
    ORDER BY d.id LIMIT %(limit)s
"""
_PROJECT = """
    SELECT pr.id FROM core_project pr WHERE pr.id = %(id)s::integer OR pr.slug = %(slug)s
    ORDER BY pr.id = %(id)s::integer DESC, pr.id LIMIT 1
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


def _types(rows: Iterable[tuple[Any, ...]]) -> tuple[Typology, ...]:
    return tuple(Typology(i, n) for i, n in rows)


def _grouped(rows: list[tuple[Any, ...]]) -> dict[int, list[tuple[Any, ...]]]:
    """Rows keyed by their first column (the part id), in row order."""
    groups: dict[int, list[tuple[Any, ...]]] = {}
    for row in rows:
        groups.setdefault(row[0], []).append(row)
    return groups


_NUMBERS = frozenset((int, float))
#: JSON text of nothing but numbers in lists (checked first: it is far cheaper than the values)
_NUMERIC_JSON = re.compile(r"[\[\]0-9.,eE+\- \t\r\n]*")


@dataclass(frozen=True, slots=True)
class _Page:
    """The rows of one page of parts, fetched, not yet built."""

    rows: list[tuple[Any, ...]]
    paths: list[Path | None]
    sizes: list[Size]
    blocks: list[tuple[Any, ...]]
    lines: list[tuple[Any, ...]]
    notes: list[tuple[Any, ...]]
    metadata: list[tuple[Any, ...]]


RowsAfter = Callable[[int, list[tuple[Any, ...]]], Awaitable[list[tuple[Any, ...]]]]


async def _read_ahead(
    conn: AsyncConnection[Any], builder: _Builder, next_rows: RowsAfter
) -> AsyncIterator[Part]:
    """Parts page by page, the next page fetched while this one is built and consumed: the server
    works in its own process meanwhile, so its time is hidden behind rendering."""

    async def step(done: int, rows: list[tuple[Any, ...]]) -> tuple[_Page, list[tuple[Any, ...]]]:
        page = await builder.fetch(conn, rows)
        return page, await next_rows(done + 1, rows)

    rows = await next_rows(0, [])
    task = asyncio.ensure_future(step(0, rows)) if rows else None
    done = 0
    try:
        while task is not None:
            page, rows = await task
            done += 1
            task = asyncio.ensure_future(step(done, rows)) if rows else None
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
    """Builds one document's parts a page of part rows at a time (five statements a page)."""

    def __init__(self, source: PostgresSource, document: Document, layer: Layer, annotations: bool) -> None:
        self.source, self.document, self.layer, self.annotations = source, document, layer, annotations
        self.block_types: dict[int, Typology] = {}
        self.line_types: dict[int, Typology] = {}
        self.taxonomies: dict[int, Taxonomy] = {}

    async def prepare(self, conn: AsyncConnection[Any]) -> None:
        self.block_types = {i: Typology(i, n) for i, n in await PostgresSource._all(conn, sql.BLOCK_TYPES)}
        self.line_types = {i: Typology(i, n) for i, n in await PostgresSource._all(conn, sql.LINE_TYPES)}
        if self.annotations:
            rows = await PostgresSource._all(conn, sql.TAXONOMIES, {"doc": self.document.id})
            self.taxonomies = {r[0]: Taxonomy(*r) for r in rows}

    async def fetch(self, conn: AsyncConnection[Any], rows: list[tuple[Any, ...]]) -> _Page:
        """What a page of part rows needs: four statements and the image sizes (I/O only)."""
        ids = [r[0] for r in rows]
        params = {"parts": ids, "layer": self.layer.id}
        n = len(ids)
        blocks = await PostgresSource._all(conn, sql.BLOCKS, params, parts=n)
        lines = await PostgresSource._all(conn, sql.LINES, params, parts=n)
        notes = await PostgresSource._all(conn, sql.ANNOTATIONS, params, parts=n) if self.annotations else []
        metadata = await PostgresSource._all(conn, sql.PART_METADATA, params, parts=n)
        media = self.source.media_root
        paths = [media / r[4] if media is not None and r[4] else None for r in rows]
        sizes = await anyio.to_thread.run_sync(self.source.sizes.sizes, paths)
        return _Page(rows, paths, sizes, blocks, lines, notes, metadata)

    def build(self, page: _Page) -> list[Part]:
        """The page's parts (CPU only: run in a worker thread while the next page is fetched)."""
        blocks, lines = _grouped(page.blocks), _grouped(page.lines)
        notes, metadata = _grouped(page.notes), _grouped(page.metadata)
        return [
            self._part(
                row,
                path,
                size,
                blocks.get(row[0], ()),
                lines.get(row[0], ()),
                notes.get(row[0], ()),
                metadata.get(row[0], ()),
            )
            for row, path, size in zip(page.rows, page.paths, page.sizes, strict=True)
        ]

    def _where(self, order: int, part_id: int) -> str:
        return f"document {self.document.id} ({self.document.name!r}), part {order + 1} (id {part_id})"

    def _part(
        self,
        row: tuple[Any, ...],
        path: Path | None,
        size: tuple[int, int] | str,
        blocks: Sequence[tuple[Any, ...]],
        lines: Sequence[tuple[Any, ...]],
        notes: Sequence[tuple[Any, ...]],
        metadata: Sequence[tuple[Any, ...]],
    ) -> Part:
        pid, doc_id, order, name, image, original, source, ptype, created, updated = row
        width, height = size if not isinstance(size, str) else (0, 0)
        where = self._where(order, pid)
        return Part(
            id=pid,
            document_id=doc_id,
            order=order,
            image=image,
            width=width,
            height=height,
            name=name,
            original_filename=original,
            source=source,
            typology=ptype,
            created_at=created,
            updated_at=updated,
            image_path=str(path) if path is not None else None,
            regions=self._regions(blocks, where),
            lines=self._lines(lines, where),
            annotations=self._annotations(notes),
            metadata=tuple((k, v) for _, k, v in metadata),
        )

    def _regions(self, rows: Sequence[tuple[Any, ...]], where: str) -> tuple[Region, ...]:
        boxes = _shapes([r[3] for r in rows], lambda i: f"{where}, block {rows[i][1]}")
        return tuple(
            Region(
                id=bid,
                order=order,
                box=box or (),
                type=self.block_types.get(type_id) if type_id is not None else None,
                external_id=ext,
            )
            for (_, bid, order, _, type_id, ext), box in zip(rows, boxes, strict=True)
        )

    def _lines(self, rows: Sequence[tuple[Any, ...]], where: str) -> tuple[Line, ...]:
        shapes = _shapes(
            [t for r in rows for t in (r[3], r[4])], lambda i: f"{where}, line {rows[i // 2][1]}"
        )
        return tuple(
            Line(
                id=lid,
                order=order,
                baseline=shapes[2 * i],
                mask=shapes[2 * i + 1],
                region_id=block_id,
                type=self.line_types.get(type_id) if type_id is not None else None,
                external_id=ext,
                text=content,
                confidence=confidence,
            )
            for i, (_, lid, order, _, _, block_id, type_id, ext, content, confidence) in enumerate(rows)
        )

    def _annotations(self, rows: Sequence[tuple[Any, ...]]) -> tuple[TextAnnotation, ...]:
        """One annotation per id, its component values joined by ``"; "`` (rows come one per value)."""
        result: list[TextAnnotation] = []
        for aid, group in _by_annotation(rows):
            _, _, tax_id, sl, so, el, eo, comments, _ = group[0]
            values = [r[8] for r in group if r[8] is not None]
            result.append(
                TextAnnotation(
                    id=aid,
                    taxonomy=self.taxonomies[tax_id],
                    start_line_id=sl,
                    start_offset=so,
                    end_line_id=el,
                    end_offset=eo,
                    value="; ".join(values) if values else None,
                    comments=tuple(str(c) for c in comments or ()),
                )
            )
        return tuple(result)


def _by_annotation(rows: Sequence[tuple[Any, ...]]) -> Iterable[tuple[int, list[tuple[Any, ...]]]]:
    group: list[tuple[Any, ...]] = []
    for row in rows:
        if group and row[1] != group[0][1]:
            yield group[0][1], group
            group = []
        group.append(row)
    if group:
        yield group[0][1], group


def _shapes(texts: Sequence[str | None], what: Callable[[int], str]) -> list[Polygon | None]:
    """Point lists from jsonb text (one decoder call for all), each a list of number pairs or
    CorpusError naming document, part and block or line."""
    try:
        shapes = polygons(texts, what)
    except CorpusError as exc:
        raise CorpusError(f"{exc}: geometry is not a list of number pairs") from None
    if _NUMERIC_JSON.fullmatch("".join(t for t in texts if t is not None)):
        return shapes
    for i, shape in enumerate(shapes):
        if shape and not set(map(type, chain.from_iterable(shape))) <= _NUMBERS:
            raise CorpusError(
                f"bad polygon in {what(i)}: {str(texts[i])[:80]!r}: geometry is not a list of number pairs"
            )
    return shapes
