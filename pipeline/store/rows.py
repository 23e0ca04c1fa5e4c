"""eScriptorium rows to model objects, whatever database they come from (pure: no I/O).

The statements of ``pipeline.sources.sql`` give, for a page of parts, the part rows and the
rows of their blocks, lines, annotations and metadata, each sorted by part first; a
:class:`PartBuilder` turns them into complete :class:`~pipeline.model.Part` objects. What differs
between databases arrives already normalised or is accepted in both forms: timestamps (ISO text or
datetime), annotation comments (JSON text or a list); geometry is JSON text in both (PostgreSQL's
``jsonb`` is loaded as text, so one ``json.loads`` per page decodes it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import Any

from pipeline.errors import CorpusError
from pipeline.model import Document, Layer, Line, Part, Polygon, Region, Taxonomy, TextAnnotation, Typology
from pipeline.store import sql
from pipeline.store.dialect import parse_polygons as polygons

Row = tuple[Any, ...]
#: a size, or why there is none
Size = tuple[int, int] | str

_NUMBERS = frozenset((int, float))
#: JSON text of nothing but numbers in lists (checked first: it is far cheaper than the values)
_NUMERIC_JSON = re.compile(r"[\[\]0-9.,eE+\- \t\r\n]*")


@dataclass(frozen=True, slots=True)
class Page:
    """The rows of one page of parts, fetched, not yet built; ``paths`` and ``sizes`` per part."""

    rows: list[Row]
    paths: list[str | None]
    sizes: list[Size]
    blocks: list[Row]
    lines: list[Row]
    notes: list[Row]
    metadata: list[Row]


def timestamp(value: str | datetime | None) -> datetime | None:
    """A stored timestamp: ISO 8601 text (SQLite) or already a datetime (PostgreSQL)."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise CorpusError(f"bad timestamp {value!r}") from exc


def comments(value: str | Sequence[str] | None, annotation_id: int) -> tuple[str, ...]:
    """Annotation comments: a JSON list (SQLite) or an array (PostgreSQL)."""
    if not value:
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise CorpusError(f"bad comments in text annotation {annotation_id}: {value[:80]!r}") from exc
    if not isinstance(value, list | tuple):
        raise CorpusError(f"bad comments in text annotation {annotation_id}: {str(value)[:80]!r}")
    return tuple(str(c) for c in value)


#: the statements describing a document, in the order :func:`document` takes their rows
DOCUMENT_STATEMENTS = (
    sql.DOCUMENT,
    sql.VALID_BLOCK_TYPES,
    sql.VALID_LINE_TYPES,
    sql.USED_BLOCK_TYPES,
    sql.LAYERS,
    sql.TAGS,
    sql.DOCUMENT_METADATA,
    sql.PART_COUNT,
)


def document(results: Sequence[list[Row]]) -> Document | None:
    """A document from the rows of :data:`DOCUMENT_STATEMENTS` (None: no such document)."""
    head, valid_blocks, valid_lines, used_blocks, layers, tags, metadata, count = results
    if not head:
        return None
    doc_id, name, created, updated = head[0]
    return Document(
        id=doc_id,
        name=name,
        created_at=timestamp(created),
        updated_at=timestamp(updated),
        valid_block_types=types(valid_blocks),
        valid_line_types=types(valid_lines),
        block_types=types(used_blocks),
        layers=tuple(Layer(i, n, bool(a)) for i, n, a in layers),
        tags=tuple(t for (t,) in tags),
        metadata=tuple((k, v) for k, v in metadata),
        part_count=count[0][0],
    )


def types(rows: Iterable[Row]) -> tuple[Typology, ...]:
    return tuple(Typology(i, n) for i, n in rows)


def grouped(rows: list[Row]) -> dict[int, list[Row]]:
    """Rows keyed by their first column (the part id), in row order."""
    groups: dict[int, list[Row]] = {}
    for row in rows:
        groups.setdefault(row[0], []).append(row)
    return groups


class PartBuilder:
    """Builds one document's parts in one layer from pages of rows; the types and taxonomies are
    read once per document (``BLOCK_TYPES``, ``LINE_TYPES``, ``TAXONOMIES``)."""

    def __init__(
        self,
        document: Document,
        block_types: Iterable[Row],
        line_types: Iterable[Row],
        taxonomies: Iterable[Row] = (),
    ) -> None:
        self.document = document
        self.block_types = {i: Typology(i, n) for i, n in block_types}
        self.line_types = {i: Typology(i, n) for i, n in line_types}
        self.taxonomies = {r[0]: Taxonomy(*r) for r in taxonomies}

    def build(self, page: Page) -> list[Part]:
        """The page's parts (CPU only)."""
        blocks, lines = grouped(page.blocks), grouped(page.lines)
        notes, metadata = grouped(page.notes), grouped(page.metadata)
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
        path: str | Path | None,
        size: tuple[int, int] | str,
        blocks: Sequence[tuple[Any, ...]],
        lines: Sequence[tuple[Any, ...]],
        notes: Sequence[tuple[Any, ...]],
        metadata: Sequence[tuple[Any, ...]],
    ) -> Part:
        pid, doc_id, order, name, image, original, source, ptype, created, updated = row[:10]
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
            created_at=timestamp(created),
            updated_at=timestamp(updated),
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
            _, _, tax_id, sl, so, el, eo, notes_comments, _ = group[0]
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
                    comments=comments(notes_comments, aid),
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
