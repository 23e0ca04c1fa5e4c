"""Synchronous queries that turn corpus rows into model objects; ``Corpus`` runs them in threads.

Every statement reads named columns only (``core_linetranscription`` carries big JSON history
columns), quotes ``"order"``, orders NULLs explicitly and uses no JSON operators, so the same SQL
runs against eScriptorium's PostgreSQL (spec 1.4): what differs between the two databases is
the :class:`~pipeline.store.dialect.Dialect` of the :class:`~pipeline.store.dialect.Db` given.
A part costs a constant number of statements whatever its size: blocks, lines, annotations,
metadata.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import CorpusError, SourceError, UsageError
from pipeline.model import Document, Layer, Line, Part, Region, Taxonomy, TextAnnotation, Typology
from pipeline.store.dialect import Db
from pipeline.vips import image_size

#: part rows fetched per statement: enough to amortise the query, small enough to stay flat
PART_PAGE = 64
#: ids per ``IN (...)`` list, far below SQLite's and PostgreSQL's parameter limits
ID_CHUNK = 500

_PART_COLUMNS = """
    SELECT p.id, p.document_id, p."order", p.name, p.image, p.original_filename, p.source,
           pt.name, p.created_at, p.updated_at, {sizes}
    FROM core_documentpart p
    LEFT JOIN core_documentparttype pt ON pt.id = p.typology_id
    {size_join}
"""

_BLOCKS = """
    SELECT b.id, b."order", b.box, b.typology_id, b.external_id
    FROM core_block b
    LEFT JOIN core_line l ON l.block_id = b.id
    WHERE b.document_part_id = :part
    GROUP BY b.id
    ORDER BY AVG(l."order") IS NULL, AVG(l."order"), b."order", b.id
"""

_LINES = """
    SELECT l.id, l."order", l.baseline, l.mask, l.block_id, l.typology_id, l.external_id,
           t.content, t.avg_confidence
    FROM core_line l
    LEFT JOIN core_linetranscription t ON t.line_id = l.id AND t.transcription_id = :layer
    WHERE l.document_part_id = :part
    ORDER BY l."order", l.id
"""

_ANNOTATIONS = """
    SELECT a.id, a.taxonomy_id, a.start_line_id, a.start_offset, a.end_line_id, a.end_offset,
           a.comments, v.value
    FROM core_textannotation a
    JOIN core_line sl ON sl.id = a.start_line_id
    LEFT JOIN core_textannotationcomponentvalue v ON v.annotation_id = a.id
    WHERE a.part_id = :part AND a.transcription_id = :layer
    ORDER BY sl."order", a.start_offset, a.id, v.component_id, v.id
"""

_PART_METADATA = """
    SELECT m.name, pm.value
    FROM core_documentpartmetadata pm
    JOIN core_metadata m ON m.id = pm.key_id
    WHERE pm.part_id = :part
    ORDER BY pm.id
"""


def _typologies(conn: Db, sql: str) -> Iterable[tuple[int, Typology]]:
    return ((i, Typology(i, n)) for i, n in conn.execute(sql))


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), ID_CHUNK):
        yield ids[start : start + ID_CHUNK]


def _marks(ids: Sequence[int]) -> str:
    return ", ".join("?" * len(ids))


def resolve_documents(conn: Db, refs: Sequence[str | int], corpus: Path) -> list[int]:
    """Ids of the documents named by id or exact name, ascending; UsageError for a ref matching none.

    An all-digit ref is an id first, then a name. A name shared by several documents selects them all.
    """
    found: set[int] = set()
    missing: list[str] = []
    for ref in refs:
        text = str(ref)
        rows: list[tuple[int]] = []
        if text.isdigit():
            rows = conn.execute("SELECT d.id FROM core_document d WHERE d.id = ?", (int(text),)).fetchall()
        if not rows:
            rows = conn.execute("SELECT d.id FROM core_document d WHERE d.name = ?", (text,)).fetchall()
        if not rows:
            missing.append(text)
        found.update(row[0] for row in rows)
    if missing:
        names = ", ".join(repr(m) for m in missing)
        raise UsageError(f"no document {names} in corpus {corpus}")
    return sorted(found)


def document_ids_after(conn: Db, after: int, limit: int) -> list[int]:
    """One keyset page of document ids."""
    sql = "SELECT d.id FROM core_document d WHERE d.id > ? ORDER BY d.id LIMIT ?"
    return [row[0] for row in conn.execute(sql, (after, limit))]


def load_document(conn: Db, doc_id: int) -> Document:
    """A document with its ontology, layers, tags, metadata and part count (no parts)."""
    row = conn.execute(
        "SELECT d.id, d.name, d.created_at, d.updated_at FROM core_document d WHERE d.id = ?", (doc_id,)
    ).fetchone()
    if row is None:
        raise UsageError(f"no document {doc_id}")
    valid_blocks = conn.execute(
        """SELECT bt.id, bt.name FROM core_blocktype bt
           JOIN core_document_valid_block_types v ON v.blocktype_id = bt.id
           WHERE v.document_id = ? ORDER BY bt.id""",
        (doc_id,),
    ).fetchall()
    valid_lines = conn.execute(
        """SELECT lt.id, lt.name FROM core_linetype lt
           JOIN core_document_valid_line_types v ON v.linetype_id = lt.id
           WHERE v.document_id = ? ORDER BY lt.id""",
        (doc_id,),
    ).fetchall()
    block_types = conn.execute(
        """SELECT bt.id, bt.name FROM core_blocktype bt
           WHERE EXISTS (SELECT 1 FROM core_document_valid_block_types v
                         WHERE v.blocktype_id = bt.id AND v.document_id = :doc)
              OR EXISTS (SELECT 1 FROM core_block b
                         JOIN core_documentpart p ON p.id = b.document_part_id
                         WHERE b.typology_id = bt.id AND p.document_id = :doc)
           ORDER BY bt.id""",
        {"doc": doc_id},
    ).fetchall()
    layers = conn.execute(
        "SELECT t.id, t.name, t.archived FROM core_transcription t WHERE t.document_id = ? ORDER BY t.id",
        (doc_id,),
    ).fetchall()
    tags = conn.execute(
        """SELECT t.name FROM core_documenttag t JOIN core_document_tags dt ON dt.documenttag_id = t.id
           WHERE dt.document_id = ? ORDER BY t.name, t.id""",
        (doc_id,),
    ).fetchall()
    metadata = conn.execute(
        """SELECT m.name, dm.value FROM core_documentmetadata dm JOIN core_metadata m ON m.id = dm.key_id
           WHERE dm.document_id = ? ORDER BY dm.id""",
        (doc_id,),
    ).fetchall()
    (part_count,) = conn.execute(
        "SELECT COUNT(*) FROM core_documentpart p WHERE p.document_id = ?", (doc_id,)
    ).fetchone()
    return Document(
        id=row[0],
        name=row[1],
        created_at=conn.dialect.timestamp(row[2]),
        updated_at=conn.dialect.timestamp(row[3]),
        valid_block_types=tuple(Typology(i, n) for i, n in valid_blocks),
        valid_line_types=tuple(Typology(i, n) for i, n in valid_lines),
        block_types=tuple(Typology(i, n) for i, n in block_types),
        layers=tuple(Layer(i, n, bool(a)) for i, n, a in layers),
        tags=tuple(t for (t,) in tags),
        metadata=tuple((k, v) for k, v in metadata),
        part_count=part_count,
    )


def find_document(conn: Db, ref: str | int, corpus: Path) -> int:
    """The id of one document by id or exact name; UsageError if unknown or ambiguous."""
    text = str(ref)
    if text.isdigit():
        row = conn.execute("SELECT d.id FROM core_document d WHERE d.id = ?", (int(text),)).fetchone()
        if row:
            return row[0]
    rows = conn.execute("SELECT d.id FROM core_document d WHERE d.name = ? ORDER BY d.id", (text,)).fetchall()
    if not rows:
        raise UsageError(f"no document {text!r} in corpus {corpus}")
    if len(rows) > 1:
        ids = ", ".join(str(r[0]) for r in rows)
        raise UsageError(f"document name {text!r} is ambiguous in corpus {corpus} (ids {ids}); use an id")
    return rows[0][0]


def ids_at_pages(conn: Db, document: Document, pages: Sequence[int]) -> tuple[int, ...]:
    """Part ids at 1-based positions in part order; UsageError naming pages past the end."""
    wanted = set(pages)
    found: list[int] = []
    last = max(wanted, default=0)
    sql = 'SELECT p.id FROM core_documentpart p WHERE p.document_id = ? ORDER BY p."order", p.id'
    cursor = conn.execute(sql, (document.id,))
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
    """Reads the parts of one document in one layer, a page of rows then one part at a time.

    Typologies and taxonomies are loaded once, at construction; nothing else is kept between parts.
    """

    def __init__(self, conn: Db, query: PartQuery, media_root: Path) -> None:
        self._conn = conn
        self._columns = _PART_COLUMNS.format(sizes=conn.dialect.image_size_columns,
                                             size_join=conn.dialect.image_size_join)
        self._query = query
        self._media_root = media_root
        self._block_types = dict(_typologies(conn, "SELECT bt.id, bt.name FROM core_blocktype bt"))
        self._line_types = dict(_typologies(conn, "SELECT lt.id, lt.name FROM core_linetype lt"))
        self._taxonomies: dict[int, Taxonomy] = {}
        if query.annotations:
            rows = conn.execute(
                """SELECT x.id, x.name, at.name, x.abbreviation, x.marker_type
                   FROM core_annotationtaxonomy x
                   LEFT JOIN core_annotationtype at ON at.id = x.typology_id
                   WHERE x.document_id = ?""",
                (query.document.id,),
            )
            self._taxonomies = {r[0]: Taxonomy(*r) for r in rows}

    def check_part_ids(self, part_ids: Sequence[int]) -> list[int]:
        """The given ids sorted by part order; UsageError naming ids not in the document."""
        doc = self._query.document
        found: list[tuple[int, int]] = []
        for chunk in _chunks(list(dict.fromkeys(part_ids))):
            sql = f'''SELECT p."order", p.id FROM core_documentpart p
                      WHERE p.document_id = ? AND p.id IN ({_marks(chunk)})'''
            found.extend(self._conn.execute(sql, (doc.id, *chunk)))
        missing = sorted(set(part_ids) - {pid for _, pid in found})
        if missing:
            ids = ", ".join(str(m) for m in missing)
            raise UsageError(f"no part {ids} in document {doc.id} ({doc.name!r})")
        return [pid for _, pid in sorted(found)]

    def page_after(self, after: tuple[int, int] | None) -> list[tuple]:
        """The next page of part rows of the document after ``(order, id)``, keyset-paginated."""
        doc_id = self._query.document.id
        if after is None:
            sql = f'{self._columns} WHERE p.document_id = ? ORDER BY p."order", p.id LIMIT ?'
            return self._conn.execute(sql, (doc_id, PART_PAGE)).fetchall()
        sql = f"""{self._columns} WHERE p.document_id = ?
                  AND (p."order" > ? OR (p."order" = ? AND p.id > ?))
                  ORDER BY p."order", p.id LIMIT ?"""
        return self._conn.execute(sql, (doc_id, after[0], after[0], after[1], PART_PAGE)).fetchall()

    def page_of(self, ids: Sequence[int]) -> list[tuple]:
        """Part rows for at most ``PART_PAGE`` given ids, in part order."""
        sql = f'{self._columns} WHERE p.id IN ({_marks(ids)}) ORDER BY p."order", p.id'
        return self._conn.execute(sql, tuple(ids)).fetchall()

    def build(self, row: tuple) -> Part:
        """One complete part from its row: four statements, whatever the number of lines."""
        (pid, doc_id, order, name, image, original, source, ptype, created, updated, width, height) = row
        query = self._query
        params = {"part": pid, "layer": query.layer.id}
        # a string join: pathlib would intern every file name, growing the interned-strings table
        # with the number of parts read
        image_path = os.path.join(self._media_root, image) if image else None
        if width is None or height is None:
            width, height = self._image_size(pid, image_path)
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
            created_at=self._conn.dialect.timestamp(created),
            updated_at=self._conn.dialect.timestamp(updated),
            image_path=image_path,
            regions=self._regions(params),
            lines=self._lines(params),
            annotations=self._annotations(params) if query.annotations else (),
            metadata=tuple((k, v) for k, v in self._conn.execute(_PART_METADATA, params)),
        )

    @staticmethod
    def _image_size(part_id: int, path: str | None) -> tuple[int, int]:
        """Size from the image header only (libvips opens lazily and decodes no pixels)."""
        if path is None:
            raise CorpusError(f"part {part_id} has no image and no stored size")
        try:
            return image_size(path)
        except SourceError as exc:
            raise CorpusError(f"part {part_id}: no stored size, and {exc}") from None

    def _regions(self, params: dict[str, int]) -> tuple[Region, ...]:
        rows = self._conn.execute(_BLOCKS, params).fetchall()
        boxes = self._conn.dialect.polygons([r[2] for r in rows], lambda i: f"block {rows[i][0]}")
        return tuple(
            Region(
                id=bid,
                order=order,
                box=box or (),
                type=self._block_types.get(type_id) if type_id is not None else None,
                external_id=ext,
            )
            for (bid, order, _, type_id, ext), box in zip(rows, boxes, strict=True)
        )

    def _lines(self, params: dict[str, int]) -> tuple[Line, ...]:
        rows = self._conn.execute(_LINES, params).fetchall()
        shapes = self._conn.dialect.polygons([t for r in rows for t in (r[2], r[3])],
                                             lambda i: f"line {rows[i // 2][0]}")
        return tuple(
            Line(
                id=lid,
                order=order,
                baseline=shapes[2 * i],
                mask=shapes[2 * i + 1],
                region_id=block_id,
                type=self._line_types.get(type_id) if type_id is not None else None,
                external_id=ext,
                text=content,
                confidence=confidence,
            )
            for i, (lid, order, _, _, block_id, type_id, ext, content, confidence) in enumerate(rows)
        )

    def _annotations(self, params: dict[str, int]) -> tuple[TextAnnotation, ...]:
        """Annotations with their component values joined by ``"; "`` (rows come one per value)."""
        result: list[TextAnnotation] = []
        values: list[str] = []
        current: tuple | None = None

        def flush() -> None:
            if current is not None:
                aid, tax_id, sl, so, el, eo, comments = current
                result.append(
                    TextAnnotation(
                        id=aid,
                        taxonomy=self._taxonomies[tax_id],
                        start_line_id=sl,
                        start_offset=so,
                        end_line_id=el,
                        end_offset=eo,
                        value="; ".join(values) if values else None,
                        comments=_comments(comments, aid),
                    )
                )

        for *head, value in self._conn.execute(_ANNOTATIONS, params):
            if current is None or head[0] != current[0]:
                flush()
                current, values = tuple(head), []
            if value is not None:
                values.append(value)
        flush()
        return tuple(result)


def _comments(text: str | None, annotation_id: int) -> tuple[str, ...]:
    if not text:
        return ()
    try:
        return tuple(str(c) for c in json.loads(text))
    except (ValueError, TypeError) as exc:
        raise CorpusError(f"bad comments in text annotation {annotation_id}: {text[:80]!r}") from exc
