"""Plain immutable value objects shared by every stage.

No I/O and no format knowledge lives here: sources build these objects, formats read them.
A ``Part`` arrives complete (regions, lines and the chosen layer's texts) so a writer never
has to go back to the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from pipeline.errors import UsageError

if TYPE_CHECKING:
    from pipeline.ocrmodel import Provenance

#: the layer of manual transcription, read when no layer is named
MANUAL_LAYER = "manual"

Point = tuple[float, float]
Polygon = tuple[Point, ...]


@dataclass(frozen=True, slots=True)
class Typology:
    """A block type or line type (``core_blocktype`` / ``core_linetype``)."""

    id: int
    name: str


@dataclass(frozen=True, slots=True)
class Layer:
    """A transcription layer (``core_transcription``)."""

    id: int
    name: str
    archived: bool = False


@dataclass(frozen=True, slots=True)
class Taxonomy:
    """An annotation taxonomy (``core_annotationtaxonomy``), e.g. group ``Person`` of type ``Entity``."""

    id: int
    name: str
    typology: str | None = None
    abbreviation: str | None = None
    marker_type: int | None = None


@dataclass(frozen=True, slots=True)
class TextAnnotation:
    """A span of text from (start line, offset) to (end line, offset), end exclusive, in one layer."""

    id: int
    taxonomy: Taxonomy
    start_line_id: int
    start_offset: int
    end_line_id: int
    end_offset: int
    value: str | None = None
    comments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Region:
    """A block (``core_block``). ``type`` None means untyped ("Undefined")."""

    id: int
    order: int
    box: Polygon
    type: Typology | None = None
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class Line:
    """A line (``core_line``) with the chosen layer's text.

    ``region_id`` None makes an orphan line. ``text`` None means the line has no row in the layer
    (it exports as empty text in XML and is absent from the text export); ``''`` is an empty row.
    """

    id: int
    order: int
    baseline: Polygon | None = None
    mask: Polygon | None = None
    region_id: int | None = None
    type: Typology | None = None
    external_id: str | None = None
    text: str | None = None
    confidence: float | None = None

    @property
    def box(self) -> tuple[float, float, float, float] | None:
        """``(xmin, ymin, xmax, ymax)`` of the mask, else of the baseline, else None."""
        return bbox(self.mask) or bbox(self.baseline)


@dataclass(frozen=True, slots=True)
class Part:
    """A page (``core_documentpart``) with everything one export needs of it.

    ``image`` is the stored relative path (``documents/<doc id>/<file>``); ``image_path`` is where
    the file is on this machine (None when unknown). ``width``/``height`` come from the store's
    side table or the image header, never from decoding pixels.
    """

    id: int
    document_id: int
    order: int
    image: str
    width: int
    height: int
    name: str = ""
    original_filename: str = ""
    source: str = ""
    typology: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    image_path: str | None = None
    regions: tuple[Region, ...] = ()
    lines: tuple[Line, ...] = ()
    annotations: tuple[TextAnnotation, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()

    @property
    def image_filename(self) -> str:
        """The original upload name if known, else the stored file's base name (spec 1.1)."""
        return self.original_filename or PurePosixPath(self.image).name

    @property
    def title(self) -> str:
        """``name``, else ``"<part type> <n>"``, else ``"Element <n>"`` (spec 1.1)."""
        if self.name:
            return self.name
        return f"{self.typology or 'Element'} {self.order + 1}"


@dataclass(frozen=True, slots=True)
class Document:
    """A document (``core_document``) with its ontology, layers, tags and metadata; no parts.

    ``block_types`` are the valid block types plus any other type a block of the document uses
    (after an import or an ontology edit), sorted by id: what a region filter may name.
    """

    id: int
    name: str
    created_at: datetime | None = None
    updated_at: datetime | None = None
    valid_block_types: tuple[Typology, ...] = ()
    valid_line_types: tuple[Typology, ...] = ()
    block_types: tuple[Typology, ...] = ()
    layers: tuple[Layer, ...] = ()
    tags: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = field(default=())
    part_count: int = 0
    #: who made what an export of it holds (set by the export, once the layer is chosen)
    provenance: Provenance | None = None

    def layer(self, name: str) -> Layer | None:
        """The non-archived layer called ``name``, if any."""
        return next((la for la in self.layers if la.name == name and not la.archived), None)

    def choose_layer(self, name: str | None = None) -> Layer:
        """The layer an export reads: ``name`` when given; else ``manual`` if the document has it,
        else its only non-archived layer (imports name their layer after themselves, e.g.
        ``Default PAGE Import``, and nobody remembers that). UsageError when none fits or when
        several could, listing the candidates. The one place this is decided (CLI and jobs)."""
        live = [la for la in self.layers if not la.archived]
        chosen = self.layer(name or MANUAL_LAYER)
        if chosen is not None:
            return chosen
        if name:
            names = ", ".join(sorted(la.name for la in live)) or "none"
            raise UsageError(f"document {self.name!r} has no layer {name!r} (layers: {names})")
        if len(live) == 1:
            return live[0]
        if not live:
            raise UsageError(f"document {self.name!r} has no transcription layer")
        names = ", ".join(repr(la.name) for la in live)
        raise UsageError(f"document {self.name!r} has no layer {MANUAL_LAYER!r} and {len(live)} others: "
                         f"name one with --layer (a job: layer in [[outputs]]): {names}")


def bbox(points: Polygon | None) -> tuple[float, float, float, float] | None:
    """Bounding box ``(xmin, ymin, xmax, ymax)`` of a point list, None when empty or absent."""
    if not points:
        return None
    xs, ys = zip(*points, strict=True)
    x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
    finite = math.isfinite
    return (x0, y0, x1, y1) if finite(x0) and finite(y0) and finite(x1) and finite(y1) else None


@dataclass(frozen=True, slots=True)
class Selection:
    """Which documents of a source: by id or exact name (None: all), having any of ``tags``
    (empty: any); archived layers and documents stay out unless ``include_archived``.
    eScriptorium's database also selects by ``project`` (id or slug) and workflow ``states``
    (names or numbers); documents named in ``documents`` are taken whatever their state."""

    documents: tuple[str | int, ...] | None = None
    tags: tuple[str, ...] = ()
    include_archived: bool = False
    project: str | int | None = None
    states: tuple[str | int, ...] = ()

    def keeps(self, document: Document) -> bool:
        """The tag condition (the source has applied ``documents`` already)."""
        return not self.tags or not set(self.tags).isdisjoint(document.tags)
