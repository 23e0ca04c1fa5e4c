"""hOCR 1.2 writer: one polyglot (X)HTML page per part, streamed region by region.

``ocr_page`` with the image and page box, an ``ocr_carea`` per region (its type in
``data-type``), an ``ocr_line`` per line with ``bbox`` (mask, else baseline, else the region's,
else the page's), ``baseline`` (slope and offset from the box's bottom-left corner, as
Tesseract writes it) and ``x_wconf`` (the confidence in percent). Orphan lines go in a last
``ocr_carea`` without a box; right-to-left lines get ``dir="rtl"`` (capability ``ocrp_dir``).
Checked in the tests with ``hocr-spec``.

Provenance goes in ``ocr-system``, hOCR's one field for what produced the file (hOCR has no
other: ``ocr-langs``/``ocr-scripts`` are languages and scripts, ``ocr-capabilities`` the
markup used, and hocr-spec rejects any other ``ocr-*`` name and a repeated field): this program
and version first, as the spec's examples name a system (``tesseract 3.03``), then the layer
and each model whose work the page holds, with the run's time as the data records it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from xml.sax.saxutils import escape

from lxml import etree

from pipeline import ns
from pipeline.formats.xmlutil import DECLARATION, Chunks, Ids, clean, pixel_box
from pipeline.model import Document, Line, Part, Polygon, bbox
from pipeline.ocrmodel import Provenance
from pipeline.select import RegionFilter, layout

XHTML_NS = ns.XHTML
DUMMY_BLOCK = ns.DUMMY_BLOCK
CAPABILITIES = "ocr_page ocr_carea ocr_line ocrp_dir ocrp_wconf"
#: everything before the title, and from the title to the page: written by hand, since HTML
#: parsers (hocr-spec's among them) reject the ``<meta></meta>`` lxml's incremental writer makes
_START = DECLARATION + f'<!DOCTYPE html>\n<html xmlns="{XHTML_NS}">\n<head>\n<title>'.encode()
_META = (
    '</title>\n<meta http-equiv="Content-Type" content="text/html; charset=utf-8"/>\n'
    '<meta name="ocr-system" content="{system}"/>\n'
    f'<meta name="ocr-capabilities" content="{CAPABILITIES}"/>\n'
    '<meta name="ocr-number-of-pages" content="1"/>\n</head>\n<body>\n'
)
_END = b"\n</body>\n</html>\n"
_QUOTE = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}  # attribute-safe

Box = tuple[int, int, int, int]


def render(part: Part, document: Document, flt: RegionFilter, *, system: str = "pipeline") -> Iterator[bytes]:
    """Stream one page as hOCR, yielding UTF-8 chunks after the head and after each region.

    ``document`` gives the provenance (``ocr-system``); ``system`` names the producer of a
    document without one.
    """
    lay = layout(part, flt)
    ids = Ids((DUMMY_BLOCK, "page"))
    page_box: Box = (0, 0, max(0, part.width), max(0, part.height))
    if document.provenance is not None:
        system = ocr_system(document.provenance)
    head = escape(clean(part.title, "part", part.id)) + _META.format(system=escape(system, _QUOTE))
    out = Chunks(_START + head.encode())
    title = f'image "{_quoted(part.image_filename, part.id)}"; bbox {_bbox(page_box)}; ppageno {part.order}'
    with etree.xmlfile(out, encoding="UTF-8") as xf, \
            xf.element("div", {"class": "ocr_page", "id": "page", "title": title}):
        xf.write("\n")
        for region, lines in lay.blocks:
            attrs = {"class": "ocr_carea", "id": ids.take(region.external_id, f"eSc_textblock_{region.id}")}
            region_box = pixel_box(region.box)
            if region_box is not None:
                attrs["title"] = f"bbox {_bbox(region_box)}"
            if region.type is not None:
                attrs["data-type"] = clean(region.type.name, "type", region.type.id)
            _area(xf, attrs, lines, region_box or page_box, ids)
            xf.flush()
            yield out.take()
        if lay.orphans:
            _area(xf, {"class": "ocr_carea", "id": DUMMY_BLOCK}, lay.orphans, page_box, ids)
    out.write(_END)
    yield out.take()


def ocr_system(prov: Provenance) -> str:
    """``pipeline 1.2; layer kraken:x; recognition: kraken model x (eScriptorium model 3, …), run
    2023-01-03T02:00:00+00:00``: the producer, the layer, each model's work (segmentation first)."""
    pieces = [prov.producer, f"layer {prov.layer}"]
    for step in prov.steps:
        run = f", run {step.executed_on.isoformat()}" if step.executed_on is not None else ""
        pieces.append(f"{step.job}: {step.summary}{run}")
    return clean("; ".join(pieces), "provenance", prov.layer)


def _area(xf: etree._IncrementalFileWriter, attrs: dict[str, str], lines: list[Line], fallback: Box,
          ids: Ids) -> None:
    with xf.element("div", attrs):
        xf.write("\n")
        for line in lines:
            _line(xf, line, fallback, ids)
    xf.write("\n")


def _line(xf: etree._IncrementalFileWriter, line: Line, fallback: Box, ids: Ids) -> None:
    box = pixel_box(line.mask) or pixel_box(line.baseline) or fallback
    title = f"bbox {_bbox(box)}"
    baseline = _baseline(line.baseline, box)
    if baseline is not None:
        title += f"; baseline {baseline}"
    if line.confidence is not None:
        title += f"; x_wconf {_percent(line.confidence)}"
    attrs = {"class": "ocr_line", "id": ids.take(line.external_id, f"eSc_line_{line.id}"), "title": title}
    text = clean(line.text, "line", line.id) if line.text else ""
    if text and _rtl(text):
        attrs["dir"] = "rtl"
    if line.type is not None:
        attrs["data-type"] = clean(line.type.name, "type", line.type.id)
    with xf.element("span", attrs):
        xf.write(text)
    xf.write("\n")


def _bbox(box: Box) -> str:
    return f"{box[0]} {box[1]} {box[2]} {box[3]}"


def _baseline(points: Polygon | None, box: Box) -> str | None:
    """``slope offset``: the line through the first and last points, its offset measured at the
    box's left edge from its bottom (hOCR's convention); None for a vertical or absent baseline."""
    if not points or len(points) < 2 or bbox(points) is None:
        return None
    (x0, y0), (x1, y1) = points[0], points[-1]
    if x1 == x0:
        return None
    slope = (y1 - y0) / (x1 - x0)
    offset = y0 + slope * (box[0] - x0) - box[3]
    return f"{_decimal(slope, 6)} {_decimal(offset, 2)}"


def _decimal(value: float, places: int) -> str:
    text = f"{value:.{places}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _percent(confidence: float) -> str:
    return _decimal(min(1.0, max(0.0, float(confidence))) * 100, 2)


def _quoted(name: str, part_id: int) -> str:
    """A file name inside ``title``'s double quotes: quotes and semicolons would end it early."""
    return clean(name, "part", part_id).replace('"', "%22").replace(";", "%3B")


def _rtl(text: str) -> bool:
    """True when the first strongly directional character is right-to-left (Hebrew, Arabic...)."""
    for char in text:
        kind = unicodedata.bidirectional(char)
        if kind == "L":
            return False
        if kind in ("R", "AL"):
            return True
    return False
