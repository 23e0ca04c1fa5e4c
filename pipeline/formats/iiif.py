"""IIIF Presentation 3 manifest with the transcription as W3C annotations, written canvas by canvas.

One ``manifest.json`` per document: a ``Canvas`` per page (its size; the image as a ``painting``
annotation) whose ``annotations`` hold one ``AnnotationPage`` of ``supplementing`` annotations:
per region a ``textGranularity: "block"`` annotation (the region's text, its type as a
``classifying`` body), then per line a ``"line"`` annotation (a ``TextualBody`` with the text,
``partOf`` naming its region's annotation; orphan lines have none). Each targets the canvas
through a ``SpecificResource`` with a ``FragmentSelector`` (``xywh``, the integer box) and an
``SvgSelector`` (the mask as a ``polygon``, the baseline as a ``polyline``); a shape without
geometry targets the whole canvas.

:func:`begin`, :func:`canvas` per page and :func:`end` are pure; the manifest is never held in
memory, one canvas at a time is. Ids are URLs below ``base`` (where the manifest will be served);
the image is ``base`` + its path in the archive, or an IIIF Image API URL below ``image_base``.

Provenance (who made the manifest: this program and version, the layer, the models whose work it
holds) goes in ``metadata``, after the document's own entries: ``metadata`` is what viewers
(Mirador's "About", the Universal Viewer's "More information") show a reader, while ``provider``
is an Agent for the institution, and ``seeAlso``/``rendering``/``service`` point at other
resources a viewer does not show inline. The document's entries have labels in no language
(``"none"``: a key as the corpus stores it); ours have English labels (``"en"``: we wrote them)
from :data:`PROVENANCE_LABELS`, so the IIIF importer tells them apart (:func:`is_provenance`),
does not take them for the document's metadata, and a re-export derives them anew from its own
data (the imported layer's name, no model).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pipeline import ns
from pipeline.formats.xmlutil import Ids, clean, decimal, pixel_box
from pipeline.model import Document, Line, Part, Polygon, Region
from pipeline.ocrmodel import Provenance
from pipeline.select import RegionFilter, layout

CONTEXT = ns.IIIF_PRESENTATION_3
TEXT_GRANULARITY = ns.IIIF_TEXT_GRANULARITY
MANIFEST_NAME = "manifest.json"
SVG_NS = ns.SVG
_MEDIA_TYPES = {
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "jpe": "image/jpeg", "png": "image/png", "tif": "image/tiff",
    "tiff": "image/tiff", "webp": "image/webp", "jp2": "image/jp2", "gif": "image/gif", "bmp": "image/bmp",
}  # fmt: skip
#: the labels of provenance entries in ``metadata`` (English), by what they name
EXPORTED_BY, LAYER = "Exported by", "Transcription layer"
MODEL_LABELS = {"segmentation": "Segmentation model", "recognition": "Recognition model"}
PROVENANCE_LABELS = frozenset({EXPORTED_BY, LAYER, *MODEL_LABELS.values()})
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


@dataclass(frozen=True, slots=True)
class Urls:
    """Where things will be: ``base`` for the manifest and its ids (ends with ``/``), and an
    optional IIIF Image API ``image_base`` the images are served from."""

    base: str
    image_base: str | None = None

    def __post_init__(self) -> None:
        if not self.base.endswith("/"):
            object.__setattr__(self, "base", self.base + "/")
        if self.image_base is not None and self.image_base.endswith("/"):
            object.__setattr__(self, "image_base", self.image_base.rstrip("/"))


def begin(document: Document, urls: Urls) -> bytes:
    """The manifest up to its first canvas: context, id, label, document metadata."""
    head: dict[str, Any] = {
        "@context": [TEXT_GRANULARITY, CONTEXT],
        "id": urls.base + MANIFEST_NAME,
        "type": "Manifest",
        "label": _label(clean(document.name, "document", document.id)),
    }
    metadata = [
        {"label": _label(clean(key, "document", document.id)),
         "value": _label(clean(value, "document", document.id))}
        for key, value in document.metadata
    ]
    if document.provenance is not None:
        metadata += provenance_entries(document.provenance)
    if metadata:
        head["metadata"] = metadata
    text = _dumps(head)
    return f'{text[:-1]},\n"items":[\n'.encode()


def provenance_entries(prov: Provenance) -> list[dict[str, Any]]:
    """``metadata`` entries saying who made the manifest (English labels, see the module's
    docstring): the program and version, the layer, then each model's work with the run's time
    as the data records it (never the clock)."""
    entries = [_entry(EXPORTED_BY, {"none": [prov.producer]}),
               _entry(LAYER, {"none": [clean(prov.layer, "layer", prov.layer)]})]
    for step in prov.steps:
        run = f", run {step.executed_on.isoformat()}" if step.executed_on is not None else ""
        value = clean(step.summary + run, "model", step.model_id)
        entries.append(_entry(MODEL_LABELS[step.job], {"en": [value]}))
    return entries


def _entry(label: str, value: dict[str, list[str]]) -> dict[str, Any]:
    return {"label": {"en": [label]}, "value": value}


def is_provenance(entry: dict[str, Any]) -> bool:
    """A ``metadata`` entry :func:`provenance_entries` wrote: an English label of ours (the
    document's own entries have labels in no language)."""
    label = entry.get("label")
    values = label.get("en") if isinstance(label, dict) and len(label) == 1 else None
    return isinstance(values, list) and len(values) == 1 and isinstance(values[0], str) \
        and values[0] in PROVENANCE_LABELS


def end(count: int) -> bytes:
    """The end of the manifest after ``count`` canvases."""
    return b"\n]}\n" if count else b"]}\n"


def canvas(part: Part, position: int, flt: RegionFilter, urls: Urls, image: str) -> bytes:
    """Canvas number ``position`` (1-based) of the manifest, with a leading comma after the first.

    ``image`` is the image's path in the archive or its file name (``urls.image_base`` unset), or
    its identifier on the image server.
    """
    cid = f"{urls.base}canvas/{position}"
    width, height = part.width, part.height
    body: dict[str, Any]
    if urls.image_base is not None:
        service = f"{urls.image_base}/{quote(image, safe='')}"
        body = {"id": f"{service}/full/max/0/default.jpg", "type": "Image", "format": "image/jpeg",
                "width": width, "height": height,
                "service": [{"id": service, "type": "ImageService3", "profile": "level1"}]}
    else:
        body = {"id": urls.base + quote(image), "type": "Image", "width": width, "height": height}
        media = _MEDIA_TYPES.get(image.rpartition(".")[2].lower())
        if media:
            body["format"] = media
    painting = {"id": f"{cid}/paint", "type": "AnnotationPage", "items": [
        {"id": f"{cid}/paint/image", "type": "Annotation", "motivation": "painting", "body": body,
         "target": cid},
    ]}  # fmt: skip
    result: dict[str, Any] = {
        "id": cid, "type": "Canvas", "label": _label(clean(part.title, "part", part.id)),
        "width": width, "height": height, "items": [painting],
    }  # fmt: skip
    items = list(_annotations(part, flt, cid))
    if items:
        result["annotations"] = [{"id": f"{cid}/text", "type": "AnnotationPage", "items": items}]
    text = _dumps(result)
    return (b",\n" if position > 1 else b"") + text.encode()


def _annotations(part: Part, flt: RegionFilter, cid: str) -> Iterator[dict[str, Any]]:
    lay = layout(part, flt)
    ids = Ids()
    for region, lines in lay.blocks:
        rid = f"{cid}/block/{quote(ids.take(region.external_id, f'eSc_textblock_{region.id}'))}"
        value = "\n".join(clean(li.text, "line", li.id) if li.text else "" for li in lines)
        yield _annotation(rid, "block", value, region.type.name if region.type else None,
                          _target(cid, region.box or None, None), None, region)
        for line in lines:
            yield _line(line, cid, ids, rid)
    for line in lay.orphans:
        yield _line(line, cid, ids, None)


def _line(line: Line, cid: str, ids: Ids, parent: str | None) -> dict[str, Any]:
    lid = f"{cid}/line/{quote(ids.take(line.external_id, f'eSc_line_{line.id}'))}"
    text = clean(line.text, "line", line.id) if line.text else ""
    target = _target(cid, line.mask, line.baseline)
    return _annotation(lid, "line", text, line.type.name if line.type else None, target, parent, line)


def _annotation(
    aid: str, granularity: str, text: str, type_name: str | None, target: Any, parent: str | None,
    owner: Region | Line,
) -> dict[str, Any]:
    body: Any = {"type": "TextualBody", "value": text, "format": "text/plain"}
    if type_name is not None:
        kind = clean(type_name, "type", owner.id)
        body = [body, {"type": "TextualBody", "value": kind, "purpose": "classifying"}]
    annotation = {"id": aid, "type": "Annotation", "motivation": "supplementing",
                  "textGranularity": granularity, "body": body, "target": target}
    if parent is not None:
        annotation["partOf"] = [{"id": parent, "type": "Annotation"}]
    return annotation


def _target(cid: str, shape: Polygon | None, baseline: Polygon | None) -> Any:
    """The canvas (no geometry), or the canvas with an ``xywh`` fragment and an SVG selector."""
    box = pixel_box(shape) or pixel_box(baseline)
    if box is None:
        return cid
    x0, y0, x1, y1 = box
    polygon = f'<polygon points="{svg_points(shape)}"/>' if shape and pixel_box(shape) else ""
    polyline = f'<polyline points="{svg_points(baseline)}" fill="none"/>' if pixel_box(baseline) else ""
    svg = f'<svg xmlns="{SVG_NS}">{polygon}{polyline}</svg>'
    return {"type": "SpecificResource", "source": {"id": cid, "type": "Canvas"}, "selector": [
        {"type": "FragmentSelector", "conformsTo": "http://www.w3.org/TR/media-frags/",
         "value": f"xywh={x0},{y0},{x1 - x0},{y1 - y0}"},
        {"type": "SvgSelector", "value": svg},
    ]}  # fmt: skip


def svg_points(points: Polygon) -> str:
    """``x,y x,y …`` with :func:`~pipeline.formats.xmlutil.decimal` numbers."""
    text = " ".join(map("%s,%s".__mod__, points))
    if "." in text or "e" in text:
        text = " ".join([f"{decimal(x)},{decimal(y)}" for x, y in points])
    return text


def _label(text: str) -> dict[str, list[str]]:
    return {"none": [text]}


class IiifManifest:
    """One document's manifest as pieces: :meth:`head`, a canvas per part, :meth:`tail`."""

    opening = b""

    def __init__(self, document: Document, flt: RegionFilter, urls: Urls) -> None:
        self.document, self.flt, self.urls = document, flt, urls
        self.count = 0

    def head(self) -> bytes:
        return begin(self.document, self.urls)

    def pieces(self, part: Part, url: str) -> tuple[bytes]:
        self.count += 1
        return (canvas(part, self.count, self.flt, self.urls, url),)

    def separator(self, n: int) -> bytes:
        return b""

    def tail(self) -> bytes:
        return end(self.count)
