"""IIIF Presentation 3: manifests valid for iiif-prezi3, the annotation mapping."""

from __future__ import annotations

import json
from typing import Any

import pytest
from lxml import etree
from pydantic import ValidationError
from test_formats import DOC, FILTERS, TEXT_3, make_part

from pipeline.formats import iiif
from pipeline.formats.xmlutil import clean
from pipeline.model import Line, Part, Region
from pipeline.select import layout

URLS = iiif.Urls("https://example.org/iiif/doc7")


def prezi3(data: dict[str, Any]) -> Any:
    """iiif-prezi3's Manifest model (generated from the IIIF JSON schema) built from ``data``;
    imported when first needed, so collecting these tests loads none of its models."""
    from iiif_prezi3 import Manifest

    return Manifest(**data)


def manifest(parts: list[Part], flt: Any = FILTERS["all"], urls: iiif.Urls = URLS) -> dict[str, Any]:
    data = iiif.begin(DOC, urls) + b"".join(
        iiif.canvas(p, n, flt, urls, p.image_filename) for n, p in enumerate(parts, 1)) + iiif.end(len(parts))
    result = json.loads(data)
    prezi3(result)  # iiif-prezi3's models accept it
    return result


def annotations(canvas: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for page in canvas.get("annotations", ()) for a in page["items"]]


def svg_shapes(annotation: dict[str, Any]) -> dict[str, str]:
    target = annotation["target"]
    if isinstance(target, str):
        return {}
    svg = next(s["value"] for s in target["selector"] if s["type"] == "SvgSelector")
    root = etree.fromstring(svg.encode())
    return {etree.QName(e).localname: e.get("points") for e in root}


def test_prezi3_check_can_fail() -> None:
    good = manifest([make_part()])
    broken = json.loads(json.dumps(good))
    del broken["items"][0]["items"][0]["items"][0]["target"]
    with pytest.raises(ValidationError):
        prezi3(broken)


@pytest.mark.parametrize("name", FILTERS)
def test_every_filter_gives_a_valid_manifest(name: str) -> None:
    part = make_part(clean_ids=True)
    result = manifest([part, make_part()], FILTERS[name])
    assert result["@context"][-1] == iiif.CONTEXT and result["type"] == "Manifest"
    canvas = result["items"][0]
    lay = layout(part, FILTERS[name])
    items = annotations(canvas)
    blocks = [a for a in items if a["textGranularity"] == "block"]
    lines = [a for a in items if a["textGranularity"] == "line"]
    assert [a["id"].rsplit("/", 1)[1] for a in blocks] == [f"b{r.id}" for r, _ in lay.blocks]
    expected = [f"l{li.id}" for _, ls in lay.blocks for li in ls] + [f"l{li.id}" for li in lay.orphans]
    assert [a["id"].rsplit("/", 1)[1] for a in lines] == expected
    ids = [a["id"] for canvas in result["items"] for a in annotations(canvas)]
    assert len(ids) == len(set(ids))


def test_lines_regions_and_geometry() -> None:
    part = make_part(clean_ids=True)
    result = manifest([part])
    assert result["id"] == "https://example.org/iiif/doc7/manifest.json"
    assert result["label"] == {"none": ["doc"]}
    canvas = result["items"][0]
    assert (canvas["id"], canvas["width"], canvas["height"]) == (f"{URLS.base}canvas/1", 1000, 1400)
    assert canvas["label"] == {"none": ["Element 3"]}
    painting = canvas["items"][0]["items"][0]
    assert painting["motivation"] == "painting" and painting["target"] == canvas["id"]
    assert painting["body"] == {"id": f"{URLS.base}f001.jpg", "type": "Image", "width": 1000, "height": 1400,
                                "format": "image/jpeg"}
    by_id = {a["id"].rsplit("/", 1)[1]: a for a in annotations(canvas)}
    line = by_id["l1"]
    assert line["motivation"] == "supplementing"
    text = clean(part.lines[0].text or "", "", 0)
    assert line["body"] == [{"type": "TextualBody", "value": text, "format": "text/plain"},
                            {"type": "TextualBody", "value": "Default", "purpose": "classifying"}]
    assert line["partOf"] == [{"id": by_id["b100"]["id"], "type": "Annotation"}]
    fragment = line["target"]["selector"][0]
    assert fragment == {"type": "FragmentSelector", "conformsTo": "http://www.w3.org/TR/media-frags/",
                        "value": "xywh=0,0,100,50"}
    assert svg_shapes(line) == {"polygon": "0,0 100,0 100,50 0,50", "polyline": "1,40 99,41"}
    assert svg_shapes(by_id["l3"])["polygon"] == "-3.25,10.5 100.75,10.5 100.75,60.9 -3.25,60.9"
    assert by_id["l3"]["body"]["value"] == TEXT_3
    assert svg_shapes(by_id["l2"]) == {"polyline": "1,45 99,48"}  # no mask: the baseline only
    assert by_id["l4"]["target"] == canvas["id"]  # no geometry: the whole canvas
    assert "partOf" not in by_id["l6"] and "partOf" not in by_id["l8"]  # orphans
    assert by_id["b101"]["body"][0]["value"] == f"{TEXT_3}\n"  # the block's lines, one per row
    assert by_id["b102"]["body"] == {"type": "TextualBody", "value": "ctrlchar", "format": "text/plain"}


def test_image_api_base_and_awkward_names() -> None:
    part = Part(5, 7, 0, "documents/7/a b#é.tif", 200, 300, regions=(Region(1, 0, (), None, "r 1"),),
                lines=(Line(1, 0, None, None, 1, None, "l/1", "x"),))
    urls = iiif.Urls("https://example.org/m/", "https://images.example.org/iiif/3/")
    body = manifest([part], urls=urls)["items"][0]["items"][0]["items"][0]["body"]
    assert body["service"] == [{"id": "https://images.example.org/iiif/3/a%20b%23%C3%A9.tif",
                                "type": "ImageService3", "profile": "level1"}]
    assert body["id"] == "https://images.example.org/iiif/3/a%20b%23%C3%A9.tif/full/max/0/default.jpg"
    plain = manifest([part])["items"][0]
    assert plain["items"][0]["items"][0]["body"]["id"] == f"{URLS.base}a%20b%23%C3%A9.tif"
    ids = [a["id"] for a in annotations(plain)]
    assert ids == [f"{URLS.base}canvas/1/block/eSc_textblock_1", f"{URLS.base}canvas/1/line/eSc_line_1"]
