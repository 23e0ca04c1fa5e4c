"""``Corpus``: one SQLite corpus file, read lazily and asynchronously, written in transactions.

A file is checked read-only before anything may write to it, so a wrong file (not SQLite,
another application's database, another schema version) is reported and left untouched.
All statements go through one connection guarded by a lock and run in worker threads, so the
event loop never blocks on SQLite.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import anyio.to_thread

from pipeline.errors import CorpusError, UsageError
from pipeline.model import Document, Layer, Part, Selection
from pipeline.ocrmodel import OcrModel, file_under
from pipeline.store import marker, models, reader
from pipeline.store.dialect import SQLITE, Db
from pipeline.store.schema import DDL, MIGRATIONS, MODEL_DDL, SCHEMA_VERSION, SQLITE_MAGIC
from pipeline.store.writer import CorpusWriter

T = TypeVar("T")

log = logging.getLogger(__name__)

#: documents listed per statement when iterating the whole corpus
DOCUMENT_PAGE = 64
#: SQLite page cache (KiB). Parts are read once, in order, so a large cache only grows memory
#: with the corpus size (the default is 2 MiB) without saving reads.
CACHE_KIB = 256


def default_media_root(path: Path) -> str:
    """``X.media`` next to ``X.sqlite``: the media folder name stored in a new corpus."""
    return f"{path.stem}.media"


def _read_only_uri(path: Path) -> str:
    return f"{path.absolute().as_uri()}?mode=ro"


def _inspect(path: Path) -> tuple[int, int]:
    """Check an existing non-empty file without writing to it; returns (documents, schema version).

    An older version that ``MIGRATIONS`` can upgrade is accepted (see :func:`_migrate`); a newer
    one is refused: this program would not know what its tables mean.

    The one write it may cause: a process killed while writing the file (an export recording
    itself in the registry) leaves a hot journal that a read-only connection cannot roll back,
    so SQLite is let to roll it back once, as it would on any read-write open."""
    with path.open("rb") as handle:
        if handle.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise CorpusError(f"{path}: not an SQLite database, so not a corpus file")
    journal = path.with_name(path.name + "-journal")
    if journal.is_file() and journal.stat().st_size:
        with contextlib.closing(sqlite3.connect(path)) as conn, contextlib.suppress(sqlite3.DatabaseError):
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    try:
        with contextlib.closing(sqlite3.connect(_read_only_uri(path), uri=True)) as conn:
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'pipeline_meta'"
            ).fetchone()
            if not has_meta:
                raise CorpusError(f"{path}: an SQLite database but not a corpus (no pipeline_meta table)")
            row = conn.execute("SELECT value FROM pipeline_meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                raise CorpusError(f"{path}: not a corpus (pipeline_meta has no schema_version)")
            version = int(row[0]) if str(row[0]).isdigit() else -1
            if version != SCHEMA_VERSION and version not in MIGRATIONS:
                newer = " (written by a newer pipeline)" if version > SCHEMA_VERSION else ""
                raise CorpusError(
                    f"{path}: corpus schema version {row[0]}{newer}, this program reads version "
                    f"{SCHEMA_VERSION} and upgrades versions {', '.join(map(str, sorted(MIGRATIONS)))}"
                )
            return conn.execute("SELECT COUNT(*) FROM core_document").fetchone()[0], version
    except sqlite3.DatabaseError as exc:
        raise CorpusError(f"{path}: unreadable corpus file ({exc})") from exc


def _migrate(path: Path, version: int) -> None:
    """Upgrade an older corpus to :data:`SCHEMA_VERSION` in one transaction (all steps or none).
    Migrations only add tables, so what older programs wrote stays as it was."""
    try:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                (current,) = conn.execute(
                    "SELECT value FROM pipeline_meta WHERE key = 'schema_version'"
                ).fetchone()
                step = int(current)  # another process may have upgraded it meanwhile
                while step < SCHEMA_VERSION:
                    for statement in MIGRATIONS[step].split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    step += 1
                conn.execute("UPDATE pipeline_meta SET value = ? WHERE key = 'schema_version'",
                             (str(SCHEMA_VERSION),))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
    except sqlite3.Error as exc:
        raise CorpusError(
            f"{path}: corpus schema version {version} must be upgraded to {SCHEMA_VERSION} "
            f"(adds the model tables) but cannot be written ({exc})"
        ) from exc
    log.info("%s: corpus schema upgraded from version %d to %d", path, version, SCHEMA_VERSION)


def _initialise(path: Path) -> None:
    """Create the schema in a new or empty file, in one transaction."""
    try:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("BEGIN")
            for statement in (DDL + MODEL_DDL).split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.executemany(
                "INSERT INTO pipeline_meta (key, value) VALUES (?, ?)",
                [("schema_version", str(SCHEMA_VERSION)), ("media_root", default_media_root(path))],
            )
            conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise CorpusError(f"{path}: cannot create corpus ({exc})") from exc


class Corpus:
    """An open corpus file. Use ``Corpus.open``; close it, or use it as a context manager."""

    def __init__(
        self, path: Path, connection: sqlite3.Connection, media_root: Path, version: int = SCHEMA_VERSION
    ) -> None:
        self.path = path
        self.connection = connection
        self._db = Db(connection, SQLITE)
        self.media_root = media_root
        #: schema version of the file (older only when opened read-only: never upgraded then)
        self.version = version
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = False, readonly: bool = False) -> Corpus:
        """Open a corpus; ``create=True`` makes a new one (or reuses an empty file or empty corpus).

        Raises CorpusError, leaving the file untouched, when it is missing (without ``create``),
        not SQLite, not a corpus, of a newer schema version, or (with ``create``) already has documents.
        An older schema version is upgraded in place, except ``readonly``: then it is read as it is
        (it has no models).
        """
        path = Path(path)
        version = SCHEMA_VERSION
        if path.is_dir():
            raise CorpusError(f"{path}: a folder, not a corpus file")
        if not path.exists() or path.stat().st_size == 0:
            if not create:
                state = "no such corpus file" if not path.exists() else "empty file, not a corpus"
                raise CorpusError(f"{path}: {state}")
            _initialise(path)
        else:
            documents, version = _inspect(path)
            if create and documents:
                raise CorpusError(f"{path}: already exists and holds {documents} documents")
            if version != SCHEMA_VERSION and not readonly:
                _migrate(path, version)
                version = SCHEMA_VERSION
        try:
            target, uri = (_read_only_uri(path), True) if readonly else (str(path), False)
            conn = sqlite3.connect(target, uri=uri, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            (media,) = conn.execute("SELECT value FROM pipeline_meta WHERE key = 'media_root'").fetchone()
        except (sqlite3.Error, TypeError) as exc:
            raise CorpusError(f"{path}: cannot open corpus ({exc})") from exc
        media_root = (path.parent / media).resolve()
        marker.install(conn, media_root)
        return cls(path, conn, media_root, version)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Corpus:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _locked(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            return fn(*args)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in a worker thread, one statement batch at a time on the connection."""
        return await anyio.to_thread.run_sync(self._locked, fn, *args)

    # -- reading -----------------------------------------------------------------------------

    # -- the Source protocol ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """Reopens this corpus with ``open_source`` (read-only), from any process on this machine."""
        return str(self.path.resolve())

    def display(self) -> str:
        return f"corpus {self.path}"

    def default_registry(self) -> Path:
        """Exports of a corpus are recorded in the corpus file itself."""
        return self.path

    async def documents(
        self, selection: Selection | Sequence[str | int] | None = None
    ) -> AsyncIterator[Document]:
        """All documents by id, or those named by id or exact name (UsageError for a ref matching
        none), with any of the selection's tags."""
        if not isinstance(selection, Selection):
            selection = Selection(tuple(selection) if selection else None)
        async for document in self._documents(selection.documents):
            if selection.keeps(document):
                yield document

    async def _documents(self, refs: Sequence[str | int] | None) -> AsyncIterator[Document]:
        if refs:
            for doc_id in await self._run(reader.resolve_documents, self._db, refs, self.path):
                yield await self._run(reader.load_document, self._db, doc_id)
            return
        after = 0
        while page := await self._run(reader.document_ids_after, self._db, after, DOCUMENT_PAGE):
            for doc_id in page:
                yield await self._run(reader.load_document, self._db, doc_id)
            after = page[-1]

    async def document(self, ref: str | int | None = None) -> Document:
        """One document by id or exact name (None: the corpus's only document); UsageError if
        unknown or if the name is ambiguous."""
        if ref is None:
            ids = await self._run(reader.document_ids_after, self._db, 0, 2)
            if len(ids) != 1:
                raise UsageError(f"corpus {self.path} holds {len(ids) or 'no'}{'+' if ids else ''} "
                                 "documents: name one (an id or exact name)")
            ref = ids[0]
        doc_id = await self._run(reader.find_document, self._db, ref, self.path)
        return await self._run(reader.load_document, self._db, doc_id)

    async def part_ids(self, document: Document, pages: Sequence[int]) -> tuple[int, ...]:
        """The ids of the parts at 1-based page numbers (CLI ``--parts 1-10``), in part order."""
        return await self._run(reader.ids_at_pages, self._db, document, pages)

    async def change_marker(self, document: Document, layer: str | None = None) -> str:
        """What changes whenever an export of the document in ``layer`` (None: its default layer)
        could: one aggregate statement over the rows the parts are read from and a stat of each
        image file (see :mod:`pipeline.store.marker`); no part is built, no file opened."""
        chosen = self._layer(document, layer)
        return await self._run(marker.document_marker, self.connection, document.id, chosen.id,
                               self.media_root)

    @staticmethod
    def _layer(document: Document, layer: str | None) -> Layer:
        """The layer read: ``layer`` or the document's default; UsageError for an unknown or archived
        layer, listing the available ones."""
        chosen = document.layer(layer) if layer is not None else document.choose_layer()
        if chosen is None:
            available = ", ".join(repr(la.name) for la in document.layers if not la.archived) or "none"
            state = "is archived" if any(la.name == layer for la in document.layers) else "does not exist"
            where = f"document {document.id} ({document.name!r})"
            raise UsageError(f"layer {layer!r} {state} in {where}; available: {available}")
        return chosen

    async def parts(
        self,
        document: Document,
        layer: str | None = None,
        part_ids: Sequence[int] | None = None,
        *,
        annotations: bool = True,
    ) -> AsyncIterator[Part]:
        """The document's parts in ``order`` (all, or ``part_ids`` in any order), each complete in ``layer``.

        Rows are fetched a page at a time and each part costs a constant number of statements, so
        memory and time per part stay flat. Raises UsageError for an unknown or archived layer
        (listing the available ones) or part ids not in the document, before yielding anything.
        ``layer`` None: the document's default layer (``Document.choose_layer``).
        """
        chosen = self._layer(document, layer)
        query = reader.PartQuery(document, chosen, annotations)
        parts = await self._run(reader.PartReader, self._db, query, self.media_root)
        if part_ids:
            ordered = await self._run(parts.check_part_ids, part_ids)
            for start in range(0, len(ordered), reader.PART_PAGE):
                rows = await self._run(parts.page_of, ordered[start : start + reader.PART_PAGE])
                async for built in self._build(parts, rows):
                    yield built
            return
        after: tuple[int, int] | None = None
        while rows := await self._run(parts.page_after, after):
            async for built in self._build(parts, rows):
                yield built
            after = (rows[-1][2], rows[-1][0])

    async def _build(self, parts: reader.PartReader, rows: Sequence[tuple]) -> AsyncIterator[Part]:
        """A page of parts, built in one worker-thread call (five statements for the page)."""
        for built in await self._run(parts.build_page, rows):
            yield built

    async def models(self) -> list[OcrModel]:
        """Every OCR model (``core_ocrmodel``) by id, with the documents it was trained or run on."""
        return await self._run(models.read_models, self.connection, self.version)

    def model_path(self, model: OcrModel) -> Path | None:
        """Where the model's file is on this machine (under the media root), None without one."""
        found = file_under(self.media_root, model.file)
        return Path(found) if found is not None else None

    # -- writing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[CorpusWriter]:
        """``with corpus.transaction() as w:``: all of ``w``'s inserts commit together, or none do.

        The block holds the connection's lock: don't await this corpus's readers inside it.
        """
        with self._lock:
            self.connection.execute("BEGIN")
            try:
                yield CorpusWriter(self.connection)
            except BaseException:
                self.connection.execute("ROLLBACK")
                raise
            try:
                self.connection.execute("COMMIT")
            except sqlite3.Error as exc:
                self.connection.execute("ROLLBACK")
                raise CorpusError(f"{self.path}: cannot write corpus ({exc})") from exc
