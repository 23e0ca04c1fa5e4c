"""Synchronous queries that turn corpus rows into model objects; ``Corpus`` runs them in threads.

The statements are eScriptorium's SQL shared with the PostgreSQL source (``pipeline.store.sql``,
through the :class:`~pipeline.store.dialect.Dialect` of the :class:`~pipeline.store.dialect.Db`
given), and rows become model objects in ``pipeline.store.rows`` for both. A page of parts costs
five statements whatever its size: parts, blocks, lines with their text, annotations, metadata.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import CorpusError, SourceError, UsageError
from pipeline.model import Document, Layer, Part
from pipeline.store import rows, sql
from pipeline.store.dialect import Db
from pipeline.vips import image_size

#: part rows fetched per statement: enough to amortise the query, small enough to stay flat
PART_PAGE = 64


def resolve_documents(conn: Db, refs: Sequence[str | int], corpus: Path) -> list[int]:
    """Ids of the documents named by id or exact name, ascending; UsageError for a ref matching none.

    An all-digit ref is an id first, then a name. A name shared by several documents selects them all.
    """
    found: set[int] = set()
    missing: list[str] = []
    for ref in refs:
        text = str(ref)
        hits: list[tuple[int]] = []
        if text.isdigit():
            hits = conn.execute(sql.DOCUMENT_BY_ID, {"ref": int(text)}).fetchall()
        if not hits:
            hits = conn.execute(sql.DOCUMENTS_BY_NAME, {"ref": text}).fetchall()
        if not hits:
            missing.append(text)
        found.update(row[0] for row in hits)
    if missing:
        names = ", ".join(repr(m) for m in missing)
        raise UsageError(f"no document {names} in corpus {corpus}")
    return sorted(found)


def document_ids_after(conn: Db, after: int, limit: int) -> list[int]:
    """One keyset page of document ids."""
    statement = "SELECT d.id FROM core_document d WHERE d.id > ? ORDER BY d.id LIMIT ?"
    return [row[0] for row in conn.execute(statement, (after, limit))]


def load_document(conn: Db, doc_id: int) -> Document:
    """A document with its ontology, layers, tags, metadata and part count (no parts)."""
    document = rows.document([conn.execute(q, {"doc": doc_id}).fetchall() for q in rows.DOCUMENT_STATEMENTS])
    if document is None:
        raise UsageError(f"no document {doc_id}")
    return document


def find_document(conn: Db, ref: str | int, corpus: Path) -> int:
    """The id of one document by id or exact name; UsageError if unknown or ambiguous."""
    text = str(ref)
    if text.isdigit():
        row = conn.execute(sql.DOCUMENT_BY_ID, {"ref": int(text)}).fetchone()
        if row:
            return row[0]
    found = conn.execute(sql.DOCUMENTS_BY_NAME, {"ref": text}).fetchall()
    if not found:
        raise UsageError(f"no document {text!r} in corpus {corpus}")
    if len(found) > 1:
        ids = ", ".join(str(r[0]) for r in found)
        raise UsageError(f"document name {text!r} is ambiguous in corpus {corpus} (ids {ids}); use an id")
    return found[0][0]


def ids_at_pages(conn: Db, document: Document, pages: Sequence[int]) -> tuple[int, ...]:
    """Part ids at 1-based positions in part order; UsageError naming pages past the end."""
    wanted = set(pages)
    found: list[int] = []
    last = max(wanted, default=0)
    cursor = conn.execute(sql.PART_IDS_IN_ORDER, {"doc": document.id})
    for position, (part_id,) in enumerate(cursor, start=1):
        if position in wanted:
            found.append(part_id)
        if position >= last:
            break
    cursor.close()
    if len(found) < len(wanted):
        beyond = ", ".join(str(p) for p in sorted(wanted) if p < 1 or p > document.part_count)
        where = f"document {document.id} ({document.name!r})"
        raise UsageError(f"no page {beyond} in {where}, which has {document.part_count} pages")
    return tuple(found)


@dataclass(frozen=True, slots=True)
class PartQuery:
    """What ``PartReader`` needs to know about one export: document, layer, options."""

    document: Document
    layer: Layer
    annotations: bool


class PartReader:
    """Reads the parts of one document in one layer, a page of part rows at a time.

    Typologies and taxonomies are loaded once, at construction; nothing else is kept between pages.
    """

    def __init__(self, conn: Db, query: PartQuery, media_root: Path) -> None:
        self._conn = conn
        self._query = query
        self._media_root = str(media_root)
        taxonomies = conn.execute(sql.TAXONOMIES, {"doc": query.document.id}).fetchall() \
            if query.annotations else []
        self._builder = rows.PartBuilder(query.document, conn.execute(sql.BLOCK_TYPES).fetchall(),
                                         conn.execute(sql.LINE_TYPES).fetchall(), taxonomies)

    def check_part_ids(self, part_ids: Sequence[int]) -> list[int]:
        """The given ids sorted by part order; UsageError naming ids not in the document."""
        doc = self._query.document
        unique = list(dict.fromkeys(part_ids))
        found = self._conn.execute(sql.PART_ORDER_OF, {"doc": doc.id, "ids": unique}).fetchall()
        missing = sorted(set(unique) - {pid for _, pid in found})
        if missing:
            ids = ", ".join(str(m) for m in missing)
            raise UsageError(f"no part {ids} in document {doc.id} ({doc.name!r})")
        return [pid for _, pid in sorted(found)]

    def page_after(self, after: tuple[int, int] | None) -> list[tuple]:
        """The next page of part rows of the document after ``(order, id)``, keyset-paginated."""
        params = {"doc": self._query.document.id, "limit": PART_PAGE}
        if after is None:
            return self._conn.execute(sql.PARTS_FIRST, params).fetchall()
        return self._conn.execute(sql.PARTS_AFTER, params | {"order": after[0], "id": after[1]}).fetchall()

    def page_of(self, ids: Sequence[int]) -> list[tuple]:
        """Part rows for at most ``PART_PAGE`` given ids, in part order."""
        return self._conn.execute(sql.PARTS_OF, {"ids": list(ids)}).fetchall()

    def build_page(self, part_rows: Sequence[tuple]) -> list[Part]:
        """The complete parts of a page of part rows: four statements, whatever their size."""
        params = {"parts": [r[0] for r in part_rows], "layer": self._query.layer.id}
        execute = self._conn.execute
        # a string join: pathlib would intern every file name, growing the interned-strings table
        # with the number of parts read
        paths = [os.path.join(self._media_root, r[4]) if r[4] else None for r in part_rows]
        sizes: list[rows.Size] = [
            (r[10], r[11]) if r[10] is not None and r[11] is not None else self._image_size(r[0], path)
            for r, path in zip(part_rows, paths, strict=True)
        ]
        page = rows.Page(
            list(part_rows), paths, sizes,
            execute(sql.BLOCKS, params).fetchall(),
            execute(sql.LINES, params).fetchall(),
            execute(sql.ANNOTATIONS, params).fetchall() if self._query.annotations else [],
            execute(sql.PART_METADATA, params).fetchall(),
        )
        return self._builder.build(page)

    @staticmethod
    def _image_size(part_id: int, path: str | None) -> tuple[int, int]:
        """Size from the image header only (libvips opens lazily and decodes no pixels)."""
        if path is None:
            raise CorpusError(f"part {part_id} has no image and no stored size")
        try:
            return image_size(path)
        except SourceError as exc:
            raise CorpusError(f"part {part_id}: no stored size, and {exc}") from None
