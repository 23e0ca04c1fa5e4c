"""ALTO v4 writer (spec section 3, with the listed defects fixed), streamed block by block."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime

from lxml import etree

from pipeline import ns
from pipeline.formats.xmlutil import DECLARATION, Chunks, Ids, alto_points, clean, conf, num, timestamp
from pipeline.model import Document, Line, Part, Polygon, Typology, bbox
from pipeline.ocrmodel import Provenance
from pipeline.select import PageLayout, RegionFilter, layout

log = logging.getLogger("pipeline")

ALTO_NS = ns.ALTO
_NSMAP = {None: ALTO_NS, "xsi": ns.XSI}
_ROOT_ATTRS = {f"{{{ns.XSI}}}schemaLocation": f"{ALTO_NS} http://www.loc.gov/standards/alto/v4/alto-4-2.xsd"}
DUMMY_PAGE, DUMMY_BLOCK = ns.DUMMY_PAGE, ns.DUMMY_BLOCK

(ALTO, DESCRIPTION, UNIT, SOURCE_INFO, FILE_NAME, FILE_ID, TAGS, OTHER_TAG, LAYOUT, PAGE, PRINT_SPACE,
 TEXT_BLOCK, SHAPE, POLYGON, TEXT_LINE, STRING) = (f"{{{ALTO_NS}}}{name}" for name in (
    "alto", "Description", "MeasurementUnit", "sourceImageInformation", "fileName", "fileIdentifier",
    "Tags", "OtherTag", "Layout", "Page", "PrintSpace", "TextBlock", "Shape", "Polygon", "TextLine",
    "String"))  # fmt: skip
(PROCESSING, PROC_CATEGORY, PROC_TIME, PROC_DESCRIPTION, PROC_SETTINGS, PROC_SOFTWARE, SOFTWARE_NAME,
 SOFTWARE_VERSION) = (f"{{{ALTO_NS}}}{name}" for name in (
    "Processing", "processingCategory", "processingDateTime", "processingStepDescription",
    "processingStepSettings", "processingSoftware", "softwareName", "softwareVersion"))  # fmt: skip
#: IDs of the Processing elements (``eSc_processing_1``...), reserved in the file's ID space
PROCESSING_ID = "eSc_processing_"

#: OtherTag ID prefix and DESCRIPTION word, block types first (spec 3.1)
_TAG_KINDS = (("BT", "block"), ("LT", "line"))


def render(part: Part, document: Document, flt: RegionFilter) -> Iterator[bytes]:
    """Stream one page as ALTO, yielding UTF-8 chunks after the header and after each block."""
    lay = layout(part, flt)
    steps = _processing_steps(document.provenance)
    ids = Ids((DUMMY_PAGE, DUMMY_BLOCK, *(step[0] for step in steps)))
    out = Chunks(DECLARATION)
    with etree.xmlfile(out, encoding="UTF-8") as xf, xf.element(ALTO, _ROOT_ATTRS, nsmap=_NSMAP):
        xf.write("\n")
        _description(xf, part, steps)
        _tags(xf, document, lay)
        width, height = str(part.width), str(part.height)
        page = {"WIDTH": width, "HEIGHT": height, "PHYSICAL_IMG_NR": str(part.order), "ID": DUMMY_PAGE}
        with xf.element(LAYOUT), xf.element(PAGE, page):
            space = {"HPOS": "0", "VPOS": "0", "WIDTH": width, "HEIGHT": height}
            with xf.element(PRINT_SPACE, space):
                xf.write("\n")
                for region, lines in lay.blocks:
                    attrs = _box(region.box) or {}
                    attrs["ID"] = ids.take(region.external_id, f"eSc_textblock_{region.id}")
                    if region.type is not None:
                        attrs["TAGREFS"] = f"BT{region.type.id}"
                    _block(xf, attrs, region.box and alto_points(region.box), lines, ids)
                    xf.flush()
                    yield out.take()
                if lay.orphans:
                    _block(xf, {"ID": DUMMY_BLOCK}, None, lay.orphans, ids)
        xf.write("\n")
    yield out.take()


def _description(xf: etree._IncrementalFileWriter, part: Part, steps: list[_Step]) -> None:
    with xf.element(DESCRIPTION):
        with xf.element(UNIT):
            xf.write("pixel")
        with xf.element(SOURCE_INFO):
            with xf.element(FILE_NAME):
                xf.write(clean(part.image_filename, "part", part.id))
            if part.source:
                with xf.element(FILE_ID):
                    xf.write(clean(part.source, "part", part.id))
        for step_id, category, when, description, settings, software in steps:
            xf.write("\n")
            with xf.element(PROCESSING, {"ID": step_id}):
                _text(xf, PROC_CATEGORY, category)
                if when is not None:
                    _text(xf, PROC_TIME, timestamp(when))
                _text(xf, PROC_DESCRIPTION, clean(description, "provenance", step_id))
                if settings:
                    _text(xf, PROC_SETTINGS, clean(settings, "provenance", step_id))
                with xf.element(PROC_SOFTWARE):
                    for tag, value in zip((SOFTWARE_NAME, SOFTWARE_VERSION), software, strict=True):
                        if value:
                            _text(xf, tag, value)
    xf.write("\n")


#: (ID, processingCategory, processingDateTime, description, settings, (software, version))
_Step = tuple[str, str, datetime | None, str, str, tuple[str, str | None]]


def _processing_steps(prov: Provenance | None) -> list[_Step]:
    """ALTO ``Processing`` per step of the provenance: each model's work (content generation, at
    the time the data records), then this export (no time: the clock would change the bytes)."""
    if prov is None:
        return []
    steps: list[_Step] = []
    for n, step in enumerate(prov.steps, 1):
        what = step.job if step.job != "recognition" else f"recognition: layer {prov.layer}"
        steps.append((f"{PROCESSING_ID}{n}", "contentGeneration", step.executed_on, what, step.summary,
                      ("kraken", None)))
    steps.append((f"{PROCESSING_ID}{len(steps) + 1}", "other", None,
                  f"export of transcription layer {prov.layer}", "", (prov.software, prov.version)))
    return steps


def _text(xf: etree._IncrementalFileWriter, tag: str, text: str) -> None:
    with xf.element(tag):
        xf.write(text)


def _tags(xf: etree._IncrementalFileWriter, document: Document, lay: PageLayout) -> None:
    """Valid types plus every type used on the page, so no TAGREFS dangles (defect 2)."""
    blocks = {t.id: t for t in document.valid_block_types}
    lines = {t.id: t for t in document.valid_line_types}
    for region, region_lines in lay.blocks:
        if region.type is not None:
            blocks.setdefault(region.type.id, region.type)
        _add_line_types(lines, region_lines)
    _add_line_types(lines, lay.orphans)
    if not blocks and not lines:
        return
    with xf.element(TAGS):
        xf.write("\n")
        for (prefix, kind), types in zip(_TAG_KINDS, (blocks, lines), strict=True):
            for type_id in sorted(types):
                label = clean(types[type_id].name, f"{kind} type", type_id)
                attrs = {"ID": f"{prefix}{type_id}", "LABEL": label, "DESCRIPTION": f"{kind} type {label}"}
                with xf.element(OTHER_TAG, attrs):
                    pass
                xf.write("\n")
    xf.write("\n")


def _add_line_types(types: dict[int, Typology], lines: list[Line]) -> None:
    for line in lines:
        if line.type is not None:
            types.setdefault(line.type.id, line.type)


def _box(points: Polygon | None) -> dict[str, str] | None:
    """HPOS/VPOS/WIDTH/HEIGHT of a point list's bbox, None without (finite) points."""
    box = bbox(points)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    return {"HPOS": num(x0), "VPOS": num(y0), "WIDTH": num(x1 - x0), "HEIGHT": num(y1 - y0)}


def _block(
    xf: etree._IncrementalFileWriter, attrs: dict[str, str], polygon: str | None, lines: list[Line], ids: Ids
) -> None:
    with xf.element(TEXT_BLOCK, attrs):
        xf.write("\n")
        if polygon:
            with xf.element(SHAPE), xf.element(POLYGON, {"POINTS": polygon}):
                pass
            xf.write("\n")
        for line in lines:
            _line(xf, line, ids)
    xf.write("\n")


def _line(xf: etree._IncrementalFileWriter, line: Line, ids: Ids) -> None:
    attrs = {"ID": ids.take(line.external_id, f"eSc_line_{line.id}")}
    if line.type is not None:
        attrs["TAGREFS"] = f"LT{line.type.id}"
    if line.baseline:
        attrs["BASELINE"] = alto_points(line.baseline)
    position = _box(line.mask) or _box(line.baseline)
    if position is None:
        log.warning("line %s: no mask and no baseline, written without position (ALTO)", line.id)
        string = {"CONTENT": clean(line.text, "line", line.id) if line.text else ""}
    else:
        attrs.update(position)
        string = {"CONTENT": clean(line.text, "line", line.id) if line.text else "", **position}
    if line.confidence is not None:
        string["WC"] = conf(line.confidence)
    with xf.element(TEXT_LINE, attrs):
        xf.write("\n")
        if line.mask:
            with xf.element(SHAPE), xf.element(POLYGON, {"POINTS": alto_points(line.mask)}):
                pass
            xf.write("\n")
        with xf.element(STRING, string):
            pass
        xf.write("\n")
    xf.write("\n")
