"""PAGE 2019-07-15 writer (spec section 4, with the listed defects fixed), streamed block by block."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from lxml import etree

from pipeline import ns
from pipeline.formats.xmlutil import (
    DECLARATION_STANDALONE,
    Chunks,
    Ids,
    clean,
    conf,
    page_points,
    rect_points,
    timestamp,
)
from pipeline.model import Document, Line, Part, Typology, bbox
from pipeline.ocrmodel import Provenance
from pipeline.select import RegionFilter, layout

log = logging.getLogger("pipeline")

PAGE_NS = ns.PAGE
_NSMAP = {None: PAGE_NS, "xsi": ns.XSI}
_ROOT_ATTRS = {f"{{{ns.XSI}}}schemaLocation": f"{PAGE_NS} {PAGE_NS}/pagecontent.xsd"}
DUMMY_BLOCK = ns.DUMMY_BLOCK

(PCGTS, METADATA, CREATOR, CREATED, LAST_CHANGE, PAGE, TEXT_REGION, COORDS, TEXT_LINE, BASELINE,
 TEXT_EQUIV, UNICODE, METADATA_ITEM, LABELS, LABEL) = (f"{{{PAGE_NS}}}{name}" for name in (
    "PcGts", "Metadata", "Creator", "Created", "LastChange", "Page", "TextRegion", "Coords", "TextLine",
    "Baseline", "TextEquiv", "Unicode", "MetadataItem", "Labels", "Label"))  # fmt: skip

_CUSTOM_SPECIALS = frozenset(";{}")
#: ``custom`` attribute values by (``"block"`` or ``"line"``, type id)
_Customs = dict[tuple[str, int], str]


def render(part: Part, document: Document, flt: RegionFilter) -> Iterator[bytes]:
    """Stream one page as PAGE XML, yielding UTF-8 chunks after the header and after each block.

    ``document`` is unused (PAGE has no ontology section) but keeps every page writer's shape.
    """
    lay = layout(part, flt)
    ids = Ids((DUMMY_BLOCK,))
    customs: _Customs = {}
    page_rect = rect_points(0, 0, part.width, part.height)
    out = Chunks(DECLARATION_STANDALONE)
    with etree.xmlfile(out, encoding="UTF-8") as xf, xf.element(PCGTS, _ROOT_ATTRS, nsmap=_NSMAP):
        xf.write("\n")
        _metadata(xf, part, document.provenance)
        page = {
            "imageFilename": clean(part.image_filename, "part", part.id),
            "imageWidth": str(part.width),
            "imageHeight": str(part.height),
        }
        with xf.element(PAGE, page):
            xf.write("\n")
            for region, lines in lay.blocks:
                attrs = {"id": ids.take(region.external_id, f"eSc_textblock_{region.id}")}
                if region.type is not None:
                    attrs["custom"] = _custom("block", region.type, customs)
                coords = page_points(region.box)
                if coords is None:
                    log.warning("region %s: fewer than 2 points, Coords = page rectangle", region.id)
                    coords = page_rect
                _region(xf, attrs, coords, lines, ids, customs)
                xf.flush()
                yield out.take()
            if lay.orphans:  # Coords required: the page rectangle (defect 1)
                _region(xf, {"id": DUMMY_BLOCK}, page_rect, lay.orphans, ids, customs)
        xf.write("\n")
    yield out.take()


def _metadata(xf: etree._IncrementalFileWriter, part: Part, prov: Provenance | None = None) -> None:
    """Creator and the part's own timestamps, never the clock (deterministic output), then one
    ``MetadataItem`` of type ``processingStep`` per step of the provenance."""
    created = part.created_at or part.updated_at
    attrs = {"externalRef": clean(part.source, "part", part.id)} if part.source else {}
    with xf.element(METADATA, attrs):
        for tag, text in (
            (CREATOR, "escriptorium"),
            (CREATED, timestamp(created)),
            (LAST_CHANGE, timestamp(part.updated_at or created)),
        ):
            with xf.element(tag):
                xf.write(text)
        if prov is not None:
            _processing_steps(xf, prov)
    xf.write("\n")


def _processing_steps(xf: etree._IncrementalFileWriter, prov: Provenance) -> None:
    """Each model's work (dated as the data records it), then this export (undated: the clock
    would change the bytes); the details as labels."""
    for step in prov.steps:
        value = clean(f"kraken {step.name}", "model", step.model_id)
        attrs = {"type": "processingStep", "name": step.job, "value": value}
        if step.executed_on is not None:
            attrs["date"] = timestamp(step.executed_on)
        labels = [("model", step.name), ("model-id", str(step.model_id)), ("revision", step.revision),
                  ("accuracy", f"{step.accuracy:.4f}"), ("epochs", str(step.epochs))]
        if step.parent:
            labels.append(("parent", step.parent))
        if step.job == "recognition":
            labels.append(("layer", prov.layer))
        _item(xf, attrs, labels, step.model_id)
    attrs = {"type": "processingStep", "name": "export", "value": prov.producer}
    labels = [("software", prov.software), ("version", prov.version), ("layer", prov.layer)]
    _item(xf, attrs, labels, "export")


def _item(xf: etree._IncrementalFileWriter, attrs: dict[str, str], labels: list[tuple[str, str]],
          owner: object) -> None:
    with xf.element(METADATA_ITEM, attrs), xf.element(LABELS):
        for kind, value in labels:
            with xf.element(LABEL, {"type": kind, "value": clean(value, "provenance", owner)}):
                pass


def _custom(kind: str, typology: Typology, cache: _Customs) -> str:
    """``structure {type:<name>;}``; names with ``; { }`` break that syntax: kept, but warned.

    Cached by kind and id: block types and line types are separate tables, both numbered from 1.
    """
    custom = cache.get((kind, typology.id))
    if custom is None:
        name = clean(typology.name, f"{kind} type", typology.id)
        if not _CUSTOM_SPECIALS.isdisjoint(name):
            log.warning("%s type %s: name %r contains ; { or }, breaking PAGE custom", kind, typology.id,
                        name)
        custom = cache[kind, typology.id] = f"structure {{type:{name};}}"
    return custom


def _region(
    xf: etree._IncrementalFileWriter,
    attrs: dict[str, str],
    coords: str,
    lines: list[Line],
    ids: Ids,
    customs: _Customs,
) -> None:
    with xf.element(TEXT_REGION, attrs):
        xf.write("\n")
        with xf.element(COORDS, {"points": coords}):
            pass
        xf.write("\n")
        for line in lines:
            _line(xf, line, coords, ids, customs)
    xf.write("\n")


def _line(
    xf: etree._IncrementalFileWriter, line: Line, region_coords: str, ids: Ids, customs: _Customs
) -> None:
    """Coords always present (defect 2): mask, else baseline bbox, else the region's Coords."""
    attrs = {"id": ids.take(line.external_id, f"eSc_line_{line.id}")}
    if line.type is not None:
        attrs["custom"] = _custom("line", line.type, customs)
    coords = page_points(line.mask)
    if coords is None:
        box = bbox(line.baseline)
        if box is not None:
            coords = rect_points(*box)
        else:
            log.warning("line %s: no mask and no baseline, Coords = enclosing region's", line.id)
            coords = region_coords
    baseline = page_points(line.baseline)
    with xf.element(TEXT_LINE, attrs):
        xf.write("\n")
        with xf.element(COORDS, {"points": coords}):
            pass
        if baseline is not None:
            with xf.element(BASELINE, {"points": baseline}):
                pass
        xf.write("\n")
        equiv = {"conf": conf(line.confidence)} if line.confidence is not None else {}
        with xf.element(TEXT_EQUIV, equiv), xf.element(UNICODE):
            if line.text:
                xf.write(clean(line.text, "line", line.id))
        xf.write("\n")
    xf.write("\n")
