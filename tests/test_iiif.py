"""IIIF Presentation 3: manifests valid for iiif-prezi3, the annotation mapping."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from pydantic import ValidationError
from test_export import FILTERS as CLI_FILTERS
from test_export import export as export_store
from test_export import run
from test_formats import DOC, FILTERS, TEXT_3, make_part

from pipeline.formats import iiif
from pipeline.formats.xmlutil import clean
from pipeline.model import Line, Part, Region
from pipeline.select import layout
from pipeline.verify import verify_archive
from tests.pgcluster import Store

FIXTURES = Path(__file__).parent / "fixtures"
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


@pytest.mark.parametrize("regions", CLI_FILTERS)
def test_demo_corpus_through_the_cli(demo_corpus: Path, tmp_path: Path, regions: str | None) -> None:
    args = ["--regions", regions] if regions else []
    archive = export(demo_corpus, tmp_path / "m.zip", "--format", "iiif", *args)
    assert verify_archive(archive) == []
    with zipfile.ZipFile(archive) as zf:
        assert zf.namelist() == ["manifest.json"]
        prezi3(json.loads(zf.read("manifest.json")))


def _manifest_of(archive: Path) -> bytes:
    with zipfile.ZipFile(archive) as zf:
        return zf.read("manifest.json")


def _split(data: bytes) -> tuple[dict[str, Any], list[dict[str, Any]], bytes]:
    """A manifest as (its head without the provenance entries, those entries, its canvases as
    bytes); every manifest compared here is also checked by iiif-prezi3."""
    prezi3(json.loads(data))
    head, canvases = data.split(b'\n"items":[\n', 1)
    fields = json.loads(head[:-1] + b"}")
    entries = fields.pop("metadata", [])
    own = [m for m in entries if not iiif.is_provenance(m)]
    if own:
        fields["metadata"] = own
    return fields, [m for m in entries if iiif.is_provenance(m)], canvases


def _provenance(layer: str, *models: tuple[str, str]) -> list[dict[str, Any]]:
    """The provenance entries expected: this program, the layer, then (label, model summary)."""
    from pipeline import __version__

    return [{"label": {"en": ["Exported by"]}, "value": {"none": [f"pipeline {__version__}"]}},
            {"label": {"en": ["Transcription layer"]}, "value": {"none": [layer]}},
            *({"label": {"en": [label]}, "value": {"en": [value]}} for label, value in models)]


def _model(corpus: Path, model_id: int, label: str, run: str, parent: str = "") -> tuple[str, str]:
    """A demo model's provenance entry for document 1, from the corpus's row (dated as the demo's
    ``core_ocrmodeldocument`` dates its run on document 1)."""
    with contextlib.closing(sqlite3.connect(corpus)) as db:
        name, revision, accuracy, epochs = db.execute(
            "SELECT name, revision, training_accuracy, training_epoch FROM core_ocrmodel WHERE id = ?",
            (model_id,)).fetchone()
    parent = f", fine-tuned from {parent}" if parent else ""
    return label, (f"kraken model {name} (eScriptorium model {model_id}, revision {revision}, accuracy "
                   f"{accuracy:.2%} after {epochs} epochs{parent}), run {run}")


def _same_but_provenance(first: bytes, second: bytes, layer: str) -> None:
    """``second`` is ``first`` re-exported from what ``first`` was read into: the same canvases
    byte for byte and the same head, but its own provenance: the layer as imported, and no model
    (the models of the first export are not in the new corpus, and none is invented)."""
    head1, _, canvases1 = _split(first)
    head2, prov2, canvases2 = _split(second)
    assert canvases2 == canvases1 and head2 == head1
    assert prov2 == _provenance(layer)


@pytest.mark.parametrize("options", [
    [], ["--images"], ["--images", "--image-format", "png", "--image-max-size", "500"],
    ["--iiif-image-base", "https://images.example.org/iiif/3", "--iiif-base", "https://example.org/d1/"],
    ["--regions", "Main,orphan", "--layer", "kraken:catmus-medieval-1.5"],
], ids=["plain", "images", "transcoded", "image-server", "filtered"])
def test_export_import_export_is_identical(demo_corpus: Path, tmp_path: Path, options: list[str]) -> None:
    first = export(demo_corpus, tmp_path / "1.zip", "--format", "iiif", *options)
    corpus = tmp_path / "imported.sqlite"
    assert run("import", first, "--corpus", corpus) == 0
    dropped = ("--regions", "--layer", "--parts")  # the imported document is what was exported
    again = [o for i, o in enumerate(options)
             if o not in dropped and (i == 0 or options[i - 1] not in dropped)]
    second = tmp_path / "2.zip"
    assert run("export", "--corpus", corpus, "--document", "1", "--format", "iiif", "--layer", "IIIF Import",
               *again, "-o", second, "--registry", tmp_path / "r.sqlite") == 0
    layer = "kraken:catmus-medieval-1.5" if "--layer" in options else "manual"
    models = [_model(demo_corpus, 1, "Segmentation model", "2023-01-01T02:00:00+00:00")]
    if "--layer" in options:  # the layer named after a recognition model: that model too
        models.append(_model(demo_corpus, 3, "Recognition model", "2023-01-03T02:00:00+00:00",
                             "catmus-medieval-1.0"))
    assert _split(_manifest_of(first))[1] == _provenance(layer, *models)
    _same_but_provenance(_manifest_of(first), _manifest_of(second), "IIIF Import")
    if "--images" in options:  # the images came along, same names, same bytes
        with zipfile.ZipFile(first) as a, zipfile.ZipFile(second) as b:
            images = [[(i.filename, i.CRC) for i in z.infolist() if i.filename != "manifest.json"]
                      for z in (a, b)]
            assert images[0] == images[1] and images[0]
    with sqlite3.connect(corpus) as db:  # the document's metadata came along, the provenance did not
        rows = db.execute("SELECT k.name, m.value FROM core_documentmetadata m JOIN core_metadata k "
                          "ON k.id = m.key_id ORDER BY m.id").fetchall()
        assert db.execute("SELECT count(*) FROM core_ocrmodel").fetchone() == (0,)
    metadata = _split(_manifest_of(first))[0]["metadata"]
    assert rows == [(m["label"]["none"][0], m["value"]["none"][0]) for m in metadata] and rows


def test_document_metadata_named_like_provenance_survives_the_round_trip(
    demo_corpus: Path, tmp_path: Path
) -> None:
    """A document's own metadata key that reads like a provenance label ("Exported by") is the
    document's (a label in no language), kept on import and written back as it was."""
    corpus = tmp_path / "own.sqlite"
    shutil.copyfile(demo_corpus, corpus)
    with contextlib.closing(sqlite3.connect(corpus)) as db:
        db.execute("UPDATE pipeline_meta SET value = ? WHERE key = 'media_root'",
                   (str(demo_corpus.with_suffix(".media")),))  # the demo's images, only read
        key = db.execute("INSERT INTO core_metadata (name) VALUES ('Exported by')").lastrowid
        db.execute("INSERT INTO core_documentmetadata (document_id, key_id, value) VALUES (1, ?, ?)",
                   (key, "the Archives of Ivry"))
        db.commit()
    first = export(corpus, tmp_path / "1.zip", "--format", "iiif")
    entries = json.loads(_manifest_of(first))["metadata"]
    assert {"label": {"none": ["Exported by"]}, "value": {"none": ["the Archives of Ivry"]}} in entries
    imported = tmp_path / "imported.sqlite"
    assert run("import", first, "--corpus", imported) == 0
    with sqlite3.connect(imported) as db:
        rows = db.execute("SELECT k.name, m.value FROM core_documentmetadata m JOIN core_metadata k "
                          "ON k.id = m.key_id ORDER BY m.id").fetchall()
    assert ("Exported by", "the Archives of Ivry") in rows
    assert [name for name, _ in rows].count("Exported by") == 1  # ours was not imported
    second = tmp_path / "2.zip"
    assert run("export", "--corpus", imported, "--document", "1", "--format", "iiif",
               "--layer", "IIIF Import", "-o", second, "--registry", tmp_path / "r.sqlite") == 0
    _same_but_provenance(_manifest_of(first), _manifest_of(second), "IIIF Import")


def test_manifest_alone_and_direct_conversion(demo_corpus: Path, tmp_path: Path) -> None:
    first = export(demo_corpus, tmp_path / "1.zip", "--format", "iiif")
    path = tmp_path / "manifest.json"
    path.write_bytes(_manifest_of(first))
    alto = tmp_path / "alto.zip"
    assert run("export", "--source", path, "--format", "alto", "-o", alto) == 0
    assert verify_archive(alto) == []
    back = tmp_path / "back.zip"
    assert run("export", "--source", path, "--format", "iiif", "--layer", "manual", "-o", back) == 0
    _same_but_provenance(_manifest_of(first), _manifest_of(back), "manual")


def test_page_fixture_to_iiif_keeps_lines(tmp_path: Path) -> None:
    source = FIXTURES / "transkribus-page-joseph-hooker"
    out = tmp_path / "m.zip"
    assert run("export", "--source", source, "--format", "iiif", "-o", out) == 0
    result = json.loads(_manifest_of(out))
    prezi3(result)
    ns = {"p": "http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15"}
    for page_file, canvas in zip(sorted(source.glob("*.xml")), result["items"], strict=True):
        root = etree.parse(str(page_file)).getroot()
        expected = {line.get("id"): line.findtext("p:TextEquiv/p:Unicode", default="", namespaces=ns)
                    for line in root.iterfind(".//p:TextLine", ns)}
        lines = [a for a in annotations(canvas) if a["textGranularity"] == "line"]
        got = {a["id"].rsplit("/", 1)[1]: _text(a) for a in lines}
        assert got == expected


def _text(annotation: dict[str, Any]) -> str:
    body = annotation["body"]
    return (body[0] if isinstance(body, list) else body)["value"]


def test_bad_manifests_fail_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c.sqlite"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert run("import", bad, "--corpus", corpus) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"pipeline: error: {bad}: not valid JSON") and err.count("\n") == 1
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"type": "Collection", "items": []}))
    assert run("import", other, "--corpus", corpus) == 1
    assert "not a IIIF Presentation 3 manifest" in capsys.readouterr().err
    svg = json.loads(iiif.begin(DOC, URLS) + iiif.canvas(make_part(), 1, FILTERS["all"], URLS, "f.jpg")
                     + iiif.end(1))
    svg["items"][0]["annotations"][0]["items"][0]["target"]["selector"][1]["value"] = "<svg"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(svg))
    assert run("import", broken, "--corpus", corpus) == 1
    err = capsys.readouterr().err
    assert "canvas 1: annotation" in err and "SVG selector is not well-formed" in err
    with sqlite3.connect(corpus) as db:  # nothing of the failed imports is left
        assert db.execute("SELECT count(*) FROM core_document").fetchone() == (0,)


def export(corpus: Path, out: Path, *args: str) -> Path:
    """Export document 1 of the SQLite demo corpus (test_export's helper takes a store)."""
    return export_store(Store("sqlite", str(corpus)), out, *args)


@pytest.mark.parametrize(("label", "ours"), [
    ({"en": ["Exported by"]}, True), ({"en": ["Recognition model"]}, True),
    ({"none": ["Exported by"]}, False),  # the document's own key, in no language
    ({"en": ["Exported by"], "fr": ["Exporté par"]}, False), ({"en": ["Author"]}, False),
    ({"en": [["Exported by"]]}, False), ({"en": "Exported by"}, False), ("Exported by", False), (None, False),
])
def test_provenance_entries_are_told_from_the_documents_own(label: Any, ours: bool) -> None:
    """Only an entry labelled in English with one of our labels is provenance; anything else a
    manifest may hold (other shapes, unhashable values) is the document's, and never an error."""
    assert iiif.is_provenance({"label": label, "value": {"none": ["x"]}}) is ours
