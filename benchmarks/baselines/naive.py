"""The naive exporter: the obvious way to export a document, which is what users have today.

It is the baseline of ``benchmarks.compare``, so it does the same job as the pipeline and writes
the same kind of archive (one ALTO per page, the page images, a METS), the obvious way:

- the whole document (parts, regions, lines and their texts) is read from the corpus with plain
  ``sqlite3`` into Python lists before anything is written;
- each page's ALTO is a whole ``xml.etree.ElementTree`` tree, serialised and ``writestr``-ed into
  a stdlib ``zipfile``;
- images are read whole (pass-through) or opened, converted and saved into a ``BytesIO`` with
  Pillow (transcoding).

XML is deflated and images are stored, as the pipeline does, so the comparison measures the
approach and not the compression settings.
"""

from __future__ import annotations

import io
import json
import sqlite3
import xml.etree.ElementTree as ET
import zipfile
from collections import defaultdict
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

ALTO_NS = "http://www.loc.gov/standards/alto/ns-v4#"
METS_NS = "http://www.loc.gov/METS/"
XLINK_NS = "http://www.w3.org/1999/xlink"
Points = list[list[float]]
#: Pillow format name -> suffix of the transcoded entry
SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif"}


@dataclass
class Line:
    id: int
    region_id: int | None
    baseline: Points | None
    mask: Points | None
    text: str


@dataclass
class Region:
    id: int
    box: Points


@dataclass
class Page:
    id: int
    order: int
    image: Path
    width: int | None
    height: int | None
    regions: list[Region] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)


def load_document(corpus: Path, document_id: int, layer: str) -> list[Page]:
    """Every part of the document with its regions, lines and texts, in memory."""
    with closing(sqlite3.connect(corpus)) as conn:
        (media,) = conn.execute("SELECT value FROM pipeline_meta WHERE key = 'media_root'").fetchone()
        (layer_id,) = conn.execute(
            "SELECT id FROM core_transcription WHERE document_id = ? AND name = ?", (document_id, layer)
        ).fetchone()
        parts = conn.execute(
            """SELECT p.id, p."order", p.image, s.width, s.height FROM core_documentpart p
               LEFT JOIN pipeline_image_size s ON s.part_id = p.id
               WHERE p.document_id = ? ORDER BY p."order", p.id""",
            (document_id,),
        ).fetchall()
        blocks = conn.execute(
            """SELECT b.id, b.document_part_id, b.box FROM core_block b
               JOIN core_documentpart p ON p.id = b.document_part_id
               WHERE p.document_id = ? ORDER BY b."order", b.id""",
            (document_id,),
        ).fetchall()
        lines = conn.execute(
            """SELECT l.id, l.document_part_id, l.block_id, l.baseline, l.mask, t.content FROM core_line l
               JOIN core_documentpart p ON p.id = l.document_part_id
               LEFT JOIN core_linetranscription t ON t.line_id = l.id AND t.transcription_id = ?
               WHERE p.document_id = ? ORDER BY l."order", l.id""",
            (layer_id, document_id),
        ).fetchall()
    media_root = corpus.parent / media
    pages = {pid: Page(pid, order, media_root / image, w, h) for pid, order, image, w, h in parts}
    for bid, pid, box in blocks:
        pages[pid].regions.append(Region(bid, json.loads(box)))
    for lid, pid, bid, baseline, mask, text in lines:
        pages[pid].lines.append(
            Line(lid, bid, json.loads(baseline) if baseline else None, json.loads(mask) if mask else None,
                 text or "")
        )
    return list(pages.values())


def _points(points: Points) -> str:
    return " ".join(f"{round(x)} {round(y)}" for x, y in points)


def alto(page: Page, image_name: str) -> bytes:
    """One page's ALTO, built as a whole tree."""
    q = f"{{{ALTO_NS}}}"
    root = ET.Element(q + "alto")
    desc = ET.SubElement(root, q + "Description")
    ET.SubElement(desc, q + "MeasurementUnit").text = "pixel"
    ET.SubElement(ET.SubElement(desc, q + "sourceImageInformation"), q + "fileName").text = image_name
    size = {"WIDTH": str(page.width), "HEIGHT": str(page.height)}
    layout = ET.SubElement(root, q + "Layout")
    page_el = ET.SubElement(layout, q + "Page", PHYSICAL_IMG_NR=str(page.order + 1), ID=f"p{page.id}", **size)
    space = ET.SubElement(page_el, q + "PrintSpace", HPOS="0", VPOS="0", **size)
    by_region: dict[int | None, list[Line]] = defaultdict(list)
    for line in page.lines:
        by_region[line.region_id].append(line)
    blocks: list[tuple[str, Region | None]] = [(f"b{r.id}", r) for r in page.regions]
    if by_region[None]:
        blocks.append(("dummyblock", None))
    for block_id, region in blocks:
        block = ET.SubElement(space, q + "TextBlock", ID=block_id)
        if region is not None:
            ET.SubElement(ET.SubElement(block, q + "Shape"), q + "Polygon", POINTS=_points(region.box))
        for line in by_region[region.id if region else None]:
            outline = line.mask or line.baseline or [[0, 0]]
            xs, ys = [p[0] for p in outline], [p[1] for p in outline]
            pos = {"HPOS": str(round(min(xs))), "VPOS": str(round(min(ys))),
                   "WIDTH": str(round(max(xs) - min(xs))), "HEIGHT": str(round(max(ys) - min(ys)))}
            text_line = ET.SubElement(block, q + "TextLine", ID=f"l{line.id}", **pos)
            if line.baseline:
                text_line.set("BASELINE", _points(line.baseline))
            if line.mask:
                ET.SubElement(ET.SubElement(text_line, q + "Shape"), q + "Polygon", POINTS=_points(line.mask))
            ET.SubElement(text_line, q + "String", CONTENT=line.text, **pos)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def mets(pages: list[tuple[str | None, str]]) -> bytes:
    """METS listing every ``(image, xml)`` entry of the archive, one physical page each."""
    m, href = f"{{{METS_NS}}}", f"{{{XLINK_NS}}}href"
    root = ET.Element(m + "mets")
    file_sec = ET.SubElement(root, m + "fileSec")
    groups = {use: ET.SubElement(file_sec, m + "fileGrp", USE=use) for use in ("image", "export")}
    struct = ET.SubElement(ET.SubElement(root, m + "structMap", TYPE="physical"), m + "div", TYPE="document")
    for n, (image, xml) in enumerate(pages, start=1):
        div = ET.SubElement(struct, m + "div", TYPE="page")
        for use, name in (("image", image), ("export", xml)):
            if name is None:
                continue
            file = ET.SubElement(groups[use], m + "file", ID=f"{use}{n}")
            ET.SubElement(file, m + "FLocat", LOCTYPE="OTHER", OTHERLOCTYPE="file", attrib={href: name})
            ET.SubElement(div, m + "fptr", FILEID=f"{use}{n}")
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def export(
    corpus: Path, document_id: int, out: Path, *, layer: str = "manual", images: bool = False,
    image_format: str | None = None, quality: int = 85,
) -> int:
    """Write the document's archive to ``out``; ``image_format`` (a Pillow format name such as
    ``JPEG``) transcodes the images, None passes them through. Returns the number of pages."""
    ET.register_namespace("", ALTO_NS)
    ET.register_namespace("mets", METS_NS)
    ET.register_namespace("xlink", XLINK_NS)
    Image.MAX_IMAGE_PIXELS = None  # scans beyond Pillow's decompression-bomb guard are the point
    pages = load_document(corpus, document_id, layer)
    entries: list[tuple[str | None, str]] = []
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for page in pages:
            stem = PurePosixPath(page.image.name).stem
            image_name = None
            if page.width is None or page.height is None:
                with Image.open(page.image) as im:
                    page.width, page.height = im.size
            if images:
                image_name, data = _image(page.image, image_format, quality)
                zf.writestr(image_name, data, compress_type=zipfile.ZIP_STORED)
            xml_name = f"{stem}.xml"
            zf.writestr(xml_name, alto(page, image_name or page.image.name))
            entries.append((image_name, xml_name))
        zf.writestr("METS.xml", mets(entries))
    return len(pages)


def _image(path: Path, image_format: str | None, quality: int) -> tuple[str, bytes]:
    """The entry name and bytes of a page image, read whole or transcoded whole."""
    if image_format is None:
        return path.name, path.read_bytes()
    buffer = io.BytesIO()
    with Image.open(path) as im:
        im.convert("RGB").save(buffer, image_format, quality=quality)
    return f"{path.stem}{SUFFIXES[image_format]}", buffer.getvalue()
