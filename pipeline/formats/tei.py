"""TEI P5 writer in the TEI4HTR/page2tei shape: ``teiHeader``, ``facsimile``, ``text/body``.

One TEI file holds a document (or one page): a ``facsimile`` with a ``surface`` per page (its
``graphic``, a ``zone`` per region and per line, the baseline as a nested ``zone``), then a
``text/body`` with a ``pb`` per page, an ``ab`` per region (its type kept) and an ``lb`` per line
before the line's text, each pointing at its zone through ``facs``. Orphan lines go in a final
``ab`` without ``facs`` and their zones sit directly in the surface; untyped regions have no
``type``, as in ALTO and PAGE. An id already used by an earlier page gets its surface's id as prefix
(``facs_2_r1l1``, as dariok's page2tei names every zone).

The facsimile comes before the text, so a document is written in pieces a writer strings
together: :func:`begin`, :data:`FACSIMILE`, :func:`surface` per page, :func:`between`, :func:`page` per page,
:func:`end`. Every piece is a pure function of the model; the xml:ids that tie the two halves
together come from :class:`PageIds`, which hands out the same ids for the same pages in the same
order, so a writer may compute them twice (two passes over the source) or once (text spooled).

Valid against ``tei_all`` (P5 2.7.0, shipped in ``pipeline/schemas/tei``); its ``points`` need at
least three pairs, so a two-point baseline repeats its last point and a mask of fewer than three
points is written as its bounding box (``ulx``/``uly``/``lrx``/``lry``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from lxml import etree
from lxml.etree import Element, SubElement

from pipeline import ns
from pipeline.formats.xmlutil import DECLARATION, Chunks, Ids, IdSet, clean, decimal, is_ncname
from pipeline.model import Document, Line, Part, Polygon, Typology, bbox
from pipeline.select import PageLayout, RegionFilter, layout

TEI_NS = ns.TEI
XML_ID = f"{{{ns.XML}}}id"
#: the root's start tag, written by hand: every fragment below is in its default namespace
_ROOT = f'<TEI xmlns="{TEI_NS}">\n'.encode()
#: ids the format itself may use, never handed to a region or line
RESERVED = ("facsimile", "text", "body")


@dataclass(frozen=True, slots=True)
class Application:
    """What ``encodingDesc/appInfo`` says wrote the file: program, version, transcription layer."""

    ident: str
    version: str
    layer: str


@dataclass(frozen=True, slots=True)
class PageIds:
    """The xml:ids of one page: its surface, its regions' and its lines' zones (by model id)."""

    surface: str
    regions: dict[int, str]
    lines: dict[int, str]

    @classmethod
    def take(cls, part: Part, lay: PageLayout, ids: Ids) -> PageIds:
        """Ids of the page, in a fixed order: the same calls on a fresh :class:`Ids` give the same ids."""
        surface = ids.take(None, f"facs_{part.order + 1}")
        # an id an earlier page took (Transkribus' r1l1 on every page) gets its surface as prefix
        prefix, take = f"{surface}_", ids.take_or_prefix

        regions: dict[int, str] = {}
        lines: dict[int, str] = {}
        for region, region_lines in lay.blocks:
            regions[region.id] = take(region.external_id, prefix, f"eSc_textblock_{region.id}")
            for line in region_lines:
                lines[line.id] = take(line.external_id, prefix, f"eSc_line_{line.id}")
        for line in lay.orphans:
            lines[line.id] = take(line.external_id, prefix, f"eSc_line_{line.id}")
        return cls(surface, regions, lines)


def document_ids() -> Ids:
    """The id allocator of one TEI file (unique across its pages, in flat memory)."""
    return Ids(used=IdSet(RESERVED))


def prepare(part: Part, flt: RegionFilter, ids: Ids) -> tuple[PageLayout, PageIds]:
    """The page's layout (region filter and order) and its ids: compute once per page and pass."""
    lay = layout(part, flt)
    return lay, PageIds.take(part, lay, ids)


# --- header and frame -------------------------------------------------------------------------


def begin(document: Document, app: Application, part: Part | None = None) -> bytes:
    """The declaration, the root start tag and the ``teiHeader``.

    ``part`` makes the header describe that page alone (one TEI per page).
    """
    out = Chunks(DECLARATION + _ROOT)
    title = clean(document.name, "document", document.id) or f"Document {document.id}"
    if part is not None:
        title = f"{title}, {clean(part.title, 'part', part.id)}"
    with etree.xmlfile(out, encoding="UTF-8") as xf, xf.element("teiHeader"):
        xf.write("\n")
        with xf.element("fileDesc"):
            with xf.element("titleStmt"), xf.element("title"):
                xf.write(title)
            with xf.element("publicationStmt"), xf.element("p"):
                xf.write(f"Exported by {app.ident} {app.version}.")
            if document.metadata:
                _metadata(xf, document)
            with xf.element("sourceDesc"), xf.element("bibl"):
                with xf.element("title"):
                    xf.write(clean(document.name, "document", document.id))
                with xf.element("idno", {"type": "document"}):
                    xf.write(str(document.id))
                if part is not None:
                    with xf.element("idno", {"type": "part"}):
                        xf.write(str(part.id))
                    if part.source:
                        with xf.element("idno", {"type": "source"}):
                            xf.write(clean(part.source, "part", part.id))
        xf.write("\n")
        application = {"ident": app.ident, "version": app.version}
        with xf.element("encodingDesc"), xf.element("appInfo"):
            with xf.element("application", application):
                with xf.element("label"):
                    xf.write(app.ident)
                with xf.element("desc", {"type": "layer"}):
                    xf.write(clean(app.layer, "layer", app.layer))
            _model_applications(xf, document)
        xf.write("\n")
    return out.take() + b"\n"


def _model_applications(xf: etree._IncrementalFileWriter, document: Document) -> None:
    """An ``application`` per model whose work the file holds (see ``Provenance``): ident
    ``eScriptorium-model-<id>``, version = its training epochs (eScriptorium versions a model per
    epoch), type = its job, ``when`` = the run the data records (never the clock)."""
    prov = document.provenance
    for step in prov.steps if prov is not None else ():
        attrs = {"ident": f"eScriptorium-model-{step.model_id}", "version": str(step.epochs),
                 "type": step.job, "subtype": "kraken-model"}
        if step.executed_on is not None:
            attrs["when"] = step.executed_on.isoformat()
        with xf.element("application", attrs):
            with xf.element("label"):
                xf.write(clean(step.name, "model", step.model_id))
            with xf.element("desc"):
                xf.write(clean(step.summary, "model", step.model_id))


#: before the first surface (a facsimile needs one: a document without pages has none)
FACSIMILE = b"<facsimile>\n"


def between(facsimile: bool = True) -> bytes:
    """End of the facsimile (if one was started), start of the text."""
    return (b"</facsimile>\n" if facsimile else b"") + b"<text>\n<body>\n"


def end(empty: bool = False) -> bytes:
    """End of the body and the root; ``empty`` when no page had a block (a body needs more than
    ``pb``s: an empty ``ab`` then)."""
    return (b"<ab/>\n" if empty else b"") + b"</body>\n</text>\n</TEI>\n"


def _metadata(xf: etree._IncrementalFileWriter, document: Document) -> None:
    """Document metadata as a gloss list of key/value pairs."""
    note, gloss = {"type": "metadata"}, {"type": "gloss"}
    with xf.element("notesStmt"), xf.element("note", note), xf.element("list", gloss):
        for key, value in document.metadata:
            with xf.element("label"):
                xf.write(clean(key, "document", document.id))
            with xf.element("item"):
                xf.write(clean(value, "document", document.id))


# --- facsimile ----------------------------------------------------------------------------------


def surface(part: Part, lay: PageLayout, pids: PageIds, url: str) -> bytes:
    """One page's ``surface``: its image as ``graphic url`` and a zone per region and per line.

    Built as a small tree: lxml's incremental writer binds the ``xml`` prefix anew for xml:id.
    """
    attrs = {
        XML_ID: pids.surface,
        "n": clean(part.title, "part", part.id),
        "ulx": "0", "uly": "0", "lrx": str(part.width), "lry": str(part.height),
    }  # fmt: skip
    root = Element("surface", attrs)
    root.text = "\n"
    graphic = {"url": clean(url, "part", part.id), "width": f"{part.width}px", "height": f"{part.height}px"}
    SubElement(root, "graphic", graphic).tail = "\n"
    for region, lines in lay.blocks:
        zone = {XML_ID: pids.regions[region.id], **_area(region.box)}
        if region.type is not None:
            zone["type"] = type_name(region.type)
        block = SubElement(root, "zone", zone)
        block.text = block.tail = "\n"
        for line in lines:
            _line_zone(block, line, pids.lines[line.id])
    for line in lay.orphans:
        _line_zone(root, line, pids.lines[line.id])
    return etree.tostring(root, encoding="UTF-8") + b"\n"


def _line_zone(parent: etree._Element, line: Line, zone_id: str) -> None:
    zone = {XML_ID: zone_id, **_area(line.mask)}
    if line.type is not None:
        zone["subtype"] = type_name(line.type)
    element = SubElement(parent, "zone", zone)
    element.tail = "\n"
    baseline = points(line.baseline, pad=True)
    if baseline is not None:
        SubElement(element, "zone", {"type": "baseline", "points": baseline})


def _area(polygon: Polygon | None) -> dict[str, str]:
    """``points`` of a polygon of 3 points or more, else its bounding box, else nothing."""
    text = points(polygon)
    if text is not None:
        return {"points": text}
    box = bbox(polygon)
    if box is None:
        return {}
    return dict(zip(("ulx", "uly", "lrx", "lry"), map(decimal, box), strict=True))


# --- text --------------------------------------------------------------------------------------


def has_text(lay: PageLayout) -> bool:
    """True when the page writes at least one ``ab``."""
    return bool(lay.blocks or lay.orphans)


def page(part: Part, lay: PageLayout, pids: PageIds) -> bytes:
    """One page's text: ``pb`` then an ``ab`` per region and one for the orphan lines."""
    pb = Element("pb", {"n": clean(part.title, "part", part.id), "facs": f"#{pids.surface}"})
    chunks = [etree.tostring(pb, encoding="UTF-8"), b"\n"]
    for region, lines in lay.blocks:
        attrs = {"facs": f"#{pids.regions[region.id]}"}
        if region.type is not None:
            attrs["type"] = type_name(region.type)
        chunks.append(_block(attrs, lines, pids))
    if lay.orphans:
        chunks.append(_block({}, lay.orphans, pids))
    return b"".join(chunks)


def _block(attrs: dict[str, str], lines: list[Line], pids: PageIds) -> bytes:
    """``<ab>`` with, per line, ``<lb facs>`` followed by the text and a line break."""
    block = Element("ab", attrs)
    if lines:
        block.text = "\n"
    ids = pids.lines
    for line in lines:
        lb = SubElement(block, "lb", {"facs": f"#{ids[line.id]}"})
        lb.tail = f"{clean(line.text, 'line', line.id)}\n" if line.text else "\n"
    return etree.tostring(block, encoding="UTF-8") + b"\n"


# --- values ------------------------------------------------------------------------------------

_NAME_CHARS = re.compile(r"[^\w.\-:]")


def type_name(typology: Typology) -> str:
    """A type name as TEI's ``data.enumerated`` (an XML Name): kept when it is one, else spaces
    and other characters become ``_`` (``Running title`` → ``Running_title``)."""
    return _type_name(clean(typology.name, "type", typology.id), typology.id)


@lru_cache(maxsize=1024)
def _type_name(raw: str, type_id: int) -> str:
    if raw and is_ncname(raw.replace(":", "_")):
        return raw
    name = _NAME_CHARS.sub("_", raw)
    if name and not is_ncname(name.replace(":", "_")):
        name = f"_{name}"
    return name if name and is_ncname(name.replace(":", "_")) else f"type{type_id}"


def points(polygon: Polygon | None, pad: bool = False) -> str | None:
    """``x,y x,y …``, at least three pairs; ``pad`` repeats the last point of a shorter list
    (baselines), otherwise a shorter list gives None. Non-finite values give None."""
    if not polygon or (len(polygon) < 3 and not pad) or bbox(polygon) is None:
        return None
    pairs = list(polygon)
    while len(pairs) < 3:
        pairs.append(pairs[-1])
    text = " ".join(map("%s,%s".__mod__, pairs))
    if "." in text or "e" in text:
        text = " ".join([f"{decimal(x)},{decimal(y)}" for x, y in pairs])
    return text


def render(part: Part, document: Document, flt: RegionFilter, app: Application) -> Iterator[bytes]:
    """One page as a TEI file of its own (``--unit part``): header, one surface, its text."""
    lay, pids = prepare(part, flt, Ids(RESERVED))
    yield begin(document, app, part) + FACSIMILE
    yield surface(part, lay, pids, part.image_filename)
    yield between()
    yield page(part, lay, pids)
    yield end(empty=not has_text(lay))


class TeiDocument:
    """One document's TEI as pieces a writer strings together: :meth:`head`, ``opening`` before
    the first surface, :meth:`pieces` per part (its surface, its text), :meth:`separator`,
    :meth:`tail`. It holds the file's ids (flat) and whether any page had a block."""

    opening = FACSIMILE

    def __init__(self, document: Document, flt: RegionFilter, app: Application) -> None:
        self.document, self.flt, self.app = document, flt, app
        self.ids = document_ids()
        self.count = 0
        self.text = False

    def head(self) -> bytes:
        return begin(self.document, self.app)

    def pieces(self, part: Part, url: str) -> tuple[bytes, bytes]:
        self.count += 1
        lay, pids = prepare(part, self.flt, self.ids)
        self.text = self.text or has_text(lay)
        return surface(part, lay, pids, url), page(part, lay, pids)

    def surface_only(self, part: Part, url: str) -> bytes:
        """First of two passes: the surface (ids taken as :meth:`pieces` takes them)."""
        self.count += 1
        lay, pids = prepare(part, self.flt, self.ids)
        self.text = self.text or has_text(lay)
        return surface(part, lay, pids, url)

    def restart(self) -> None:
        """Second pass: the same calls in the same order on fresh ids give the same ids."""
        self.ids = document_ids()

    def text_only(self, part: Part) -> bytes:
        lay, pids = prepare(part, self.flt, self.ids)
        return page(part, lay, pids)

    def separator(self, n: int) -> bytes:
        return between(facsimile=self.count > 0)

    def tail(self) -> bytes:
        return end(empty=not self.text)
