"""TEI P5: every file valid against tei_all (Jing), the TEI4HTR/page2tei mapping, edge cases, CLI."""

from __future__ import annotations

import re
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree
from test_export import FILTERS as CLI_FILTERS
from test_export import export as export_store
from test_export import run
from test_formats import DOC, FILTERS, TEXT_1, TEXT_3, make_part

from pipeline.formats import tei
from pipeline.formats.xmlutil import clean
from pipeline.model import Line, Part, Region, Typology
from pipeline.select import RegionFilter, layout
from pipeline.validate import jing, parser, validate_tei
from pipeline.verify import verify_archive
from pipeline.writers import stream
from tests.pgcluster import Store

FIXTURES = Path(__file__).parent / "fixtures"
T = {"t": tei.TEI_NS}
XML_ID = "{http://www.w3.org/XML/1998/namespace}id"
APP = tei.Application("pipeline", "0.1.0", "manual")

pytestmark = pytest.mark.skipif(jing() is None, reason="needs Jing (make tools installs it)")


def assert_valid(files: dict[str, bytes], tmp_path: Path) -> None:
    """Every file passes tei_all (one Jing run), its ids are unique and every facs resolves."""
    paths = []
    for n, (name, data) in enumerate(files.items()):
        path = tmp_path / f"{n}-{Path(name).name}"
        path.write_bytes(data)
        paths.append(path)
        root = etree.fromstring(data, parser())
        ids = root.xpath("//@xml:id")
        assert len(ids) == len(set(ids)), name
        targets = {f"#{i}" for i in ids}
        assert set(root.xpath("//@facs")) <= targets, name
    errors = validate_tei(paths)
    assert {p.name: e for p, e in errors.items() if e} == {}


def document_tei(parts: list[Part], flt: RegionFilter, passes: int = 1) -> bytes:
    """The pieces put together as the export does, one pass (ids once) or two (ids twice)."""
    ids = tei.document_ids()
    prepared = [tei.prepare(p, flt, ids) for p in parts]
    if passes == 2:
        second = tei.document_ids()
        texts = [tei.page(p, *tei.prepare(p, flt, second)) for p in parts]
    else:
        texts = [tei.page(p, lay, pids) for p, (lay, pids) in zip(parts, prepared, strict=True)]
    surfaces = [tei.surface(p, lay, pids, p.image_filename)
                for p, (lay, pids) in zip(parts, prepared, strict=True)]
    return b"".join([
        tei.begin(replace(DOC, metadata=(("Author", "A & B <c>"), ("Lang", "heb"))), APP),
        tei.FACSIMILE if parts else b"", *surfaces, tei.between(bool(parts)), *texts,
        tei.end(empty=not any(tei.has_text(lay) for lay, _ in prepared)),
    ])  # fmt: skip


def two_pages() -> list[Part]:
    """The awkward page twice: every external id repeats on the second page."""
    return [make_part(), replace(make_part(), id=2, order=3, name="", typology="Folio")]


# --- the renderer ----------------------------------------------------------------------------


def test_every_filter_gives_valid_tei(tmp_path: Path) -> None:
    files = {f"doc-{name}.xml": document_tei(two_pages(), flt) for name, flt in FILTERS.items()}
    files |= {f"page-{name}.xml": b"".join(tei.render(make_part(), DOC, flt, APP))
              for name, flt in FILTERS.items()}
    files["clean-ids.xml"] = document_tei([make_part(clean_ids=True)], FILTERS["all"])
    files["no-parts.xml"] = document_tei([], FILTERS["all"])
    assert_valid(files, tmp_path)


def test_jing_check_can_fail(tmp_path: Path) -> None:
    """The validity check of these tests reports a wrong document (so its silence means something)."""
    bad = document_tei([make_part()], FILTERS["all"]).replace(b"<lb ", b"<lbx ", 1)
    path = tmp_path / "bad.xml"
    path.write_bytes(bad.replace(b"</lb>", b"</lbx>"))
    assert validate_tei([path])[path]


def test_facsimile_and_text_follow_the_layout() -> None:
    part = make_part(clean_ids=True)
    root = etree.fromstring(document_tei([part], FILTERS["all"]), parser())
    surface = root.find("t:facsimile/t:surface", T)
    assert surface.get(XML_ID) == "facs_3" and surface.get("n") == "Element 3"
    graphic = surface.find("t:graphic", T)
    assert dict(graphic.attrib) == {"url": "f001.jpg", "width": "1000px", "height": "1400px"}
    lay = layout(part, FILTERS["all"])
    zones = surface.findall("t:zone", T)
    # one zone per region in layout order, holding its lines' zones; orphans directly in the surface
    expected = [f"b{r.id}" for r, _ in lay.blocks] + [f"l{li.id}" for li in lay.orphans]
    assert [z.get(XML_ID) for z in zones] == expected
    for zone, (region, lines) in zip(zones, lay.blocks, strict=False):
        assert zone.get("type") == (region.type.name if region.type else None)
        assert [z.get(XML_ID) for z in zone.findall("t:zone", T)] == [f"l{li.id}" for li in lines]
    body = root.find("t:text/t:body", T)
    assert body[0].tag == f"{{{tei.TEI_NS}}}pb" and body[0].get("facs") == "#facs_3"
    blocks = body.findall("t:ab", T)
    assert [b.get("facs") for b in blocks] == [f"#b{r.id}" for r, _ in lay.blocks] + [None]
    types = [r.type.name if r.type else None for r, _ in lay.blocks]
    assert [b.get("type") for b in blocks] == types + [None]
    for block, lines in zip(blocks, [ls for _, ls in lay.blocks] + [lay.orphans], strict=True):
        assert [lb.get("facs") for lb in block.findall("t:lb", T)] == [f"#l{li.id}" for li in lines]
        texts = [(lb.tail or "").removesuffix("\n") for lb in block.findall("t:lb", T)]
        assert texts == [clean(li.text, "line", li.id) if li.text else "" for li in lines]


def test_header_says_what_wrote_it_and_from_what() -> None:
    root = etree.fromstring(document_tei([make_part()], FILTERS["all"]), parser())
    header = root.find("t:teiHeader", T)
    assert header.findtext("t:fileDesc/t:titleStmt/t:title", namespaces=T) == "doc"
    gloss = header.find(".//t:note[@type='metadata']/t:list", T)
    assert [(e.tag.split("}")[1], e.text) for e in gloss] == [
        ("label", "Author"), ("item", "A & B <c>"), ("label", "Lang"), ("item", "heb")]
    assert header.findtext("t:fileDesc/t:sourceDesc/t:bibl/t:idno[@type='document']", namespaces=T) == "7"
    app = header.find("t:encodingDesc/t:appInfo/t:application", T)
    assert (app.get("ident"), app.get("version")) == ("pipeline", "0.1.0")
    assert app.findtext("t:desc[@type='layer']", namespaces=T) == "manual"
    page_header = etree.fromstring(b"".join(tei.render(make_part(), DOC, FILTERS["all"], APP)), parser())
    assert page_header.findtext(".//t:titleStmt/t:title", namespaces=T) == "doc, Element 3"
    assert page_header.findtext(".//t:idno[@type='source']", namespaces=T) == make_part().source


def test_edge_cases_geometry_ids_text() -> None:
    root = etree.fromstring(document_tei(two_pages(), FILTERS["all"]), parser())
    zone = {z.get(XML_ID): z for z in root.iter(f"{{{tei.TEI_NS}}}zone") if z.get(XML_ID)}
    # a mask of 4 points is kept; no mask -> no points; a 2-point baseline is padded to three pairs
    assert zone["eSc_line_0f1e"].get("points") == "0,0 100,0 100,50 0,50"
    assert zone["eSc_line_2"].get("points") is None
    assert zone["eSc_line_2"].find("t:zone[@type='baseline']", T).get("points") == "1,45 99,48 99,48"
    assert zone["eSc_line_4"].find("t:zone", T) is None  # no mask, no baseline: an empty zone
    # float coordinates: no exponent, two decimals at most; negative values kept
    assert zone["eSc_line_3"].get("points") == "-3.25,10.5 100.75,10.5 100.75,60.9 -3.25,60.9"
    # non-NCName ("12", "a b"), NULL, empty and duplicate ids fall back; page 2 keeps its ids with a prefix
    assert "eSc_line_3" in zone and "eSc_line_4" in zone and "eSc_textblock_102" in zone
    assert "facs_3_eSc_line_dup" in zone  # the second line with that id on page 1
    assert "facs_4_eSc_line_0f1e" in zone and "facs_4_eSc_textblock_aaaa" in zone
    text = "".join(root.find("t:text", T).itertext())
    assert TEXT_3 in text and TEXT_1 in text  # RTL, combining, emoji; XML-hostile characters escaped
    assert "ctrlchar" in text and "\x01" not in text  # a control character dropped


def test_type_names_become_xml_names() -> None:
    raw = ("Main", "MainZone:column", "Running title", "12", "", "é t")
    names = {n: tei.type_name(Typology(9, n)) for n in raw}
    assert names == {"Main": "Main", "MainZone:column": "MainZone:column", "Running title": "Running_title",
                     "12": "_12", "": "type9", "é t": "é_t"}


def test_untyped_region_without_geometry_and_orphans_only(tmp_path: Path) -> None:
    part = Part(5, 7, 0, "documents/7/a.png", 200, 300, regions=(Region(1, 0, (), None, None),),
                lines=(Line(1, 0, None, None, 1, None, None, "\u05e9\u05dc\u05d5\u05dd"),
                       Line(2, 1, ((5, 5), (50, 5)), None, None, None, "", None)))
    data = document_tei([part], FILTERS["all"])
    assert_valid({"x.xml": data}, tmp_path)
    root = etree.fromstring(data, parser())
    blocks = root.findall(".//t:body/t:ab", T)
    assert [b.attrib for b in blocks] == [{"facs": "#eSc_textblock_1"}, {}]
    assert root.find(".//t:zone", T).attrib == {XML_ID: "eSc_textblock_1"}


def test_two_passes_give_the_same_file() -> None:
    parts = two_pages() + [replace(make_part(clean_ids=True), id=3, order=4)]
    assert document_tei(parts, FILTERS["all"], passes=2) == document_tei(parts, FILTERS["all"], passes=1)


# --- through the CLI --------------------------------------------------------------------------


def tei_entries(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as zf:
        return {n: zf.read(n) for n in zf.namelist() if n.endswith(".xml") and n != "METS.xml"}


@pytest.mark.parametrize("layer", ["manual", "kraken:catmus-medieval-1.5"])
def test_demo_corpus_every_filter(demo_corpus: Path, tmp_path: Path, layer: str) -> None:
    files: dict[str, bytes] = {}
    for n, regions in enumerate(CLI_FILTERS):
        args = ["--format", "tei", "--layer", layer] + (["--regions", regions] if regions else [])
        archive = export(demo_corpus, tmp_path / f"{n}.zip", *args)
        assert verify_archive(archive) == []
        entries = tei_entries(archive)
        assert len(entries) == 1
        files |= {f"{n}-{name}": data for name, data in entries.items()}
    assert_valid(files, tmp_path)


def test_unit_part_images_and_scaling(demo_corpus: Path, tmp_path: Path) -> None:
    archive = export(demo_corpus, tmp_path / "p.zip", "--format", "tei", "--unit", "part", "--images",
                     "--image-format", "png", "--image-max-size", "400", "--parts", "1-3")
    assert verify_archive(archive) == []
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
    entries = tei_entries(archive)
    assert len(entries) == 3 and names[-1] == "METS.xml"
    for name, data in entries.items():
        graphic = etree.fromstring(data, parser()).find(".//t:graphic", T)
        assert graphic.get("url") == Path(name).with_suffix(".png").name and graphic.get("url") in names
        assert max(int(graphic.get("width")[:-2]), int(graphic.get("height")[:-2])) == 400
    assert_valid(entries, tmp_path)


def test_document_with_images_names_the_image_entries(demo_corpus: Path, tmp_path: Path) -> None:
    with_images = export(demo_corpus, tmp_path / "i.zip", "--format", "tei", "--images")
    without = export(demo_corpus, tmp_path / "n.zip", "--format", "tei")
    (name, data), = tei_entries(with_images).items()
    with zipfile.ZipFile(with_images) as zf:
        images = [n for n in zf.namelist() if not n.endswith(".xml")]
    urls = etree.fromstring(data, parser()).xpath("//t:graphic/@url", namespaces=T)
    assert urls == images and "f003_3.jpg" in urls  # a clashing name: the entry's, not the file's
    # otherwise the same file: the pieces spooled beside the images = the ones pulled without
    pulled = tei_entries(without)[name]
    assert re.sub(rb'url="[^"]*"', b"", pulled) == re.sub(rb'url="[^"]*"', b"", data)


def test_one_and_two_passes_export_the_same(demo_corpus: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    one = tei_entries(export(demo_corpus, tmp_path / "1.zip", "--format", "tei"))
    monkeypatch.setattr(stream, "TWO_PASSES", True)
    two = tei_entries(export(demo_corpus, tmp_path / "2.zip", "--format", "tei"))
    assert one == two


@pytest.mark.parametrize("fixture", ["transkribus-page-joseph-hooker", "escriptorium-tapuscorpus/page"])
def test_page_fixture_keeps_every_line_text_id_and_polygon(fixture: str, tmp_path: Path) -> None:
    """Read the PAGE files and the TEI back with lxml: each TextLine is a zone with its id (prefixed by
    its surface when an earlier page used it), its polygon, and an lb followed by its text."""
    source = FIXTURES / fixture
    per_document = tmp_path / "doc.zip"
    per_page = tmp_path / "pages.zip"
    for out, unit in ((per_document, "document"), (per_page, "part")):
        assert run("export", "--source", source, "--format", "tei", "--unit", unit, "-o", out) == 0
    (_, doc_data), = tei_entries(per_document).items()
    doc_root = etree.fromstring(doc_data, parser())
    pages = sorted(source.glob("*.xml"))
    page_entries = tei_entries(per_page)
    assert len(page_entries) == len(pages)
    for n, page_file in enumerate(pages, 1):
        page_root = etree.parse(str(page_file), parser()).getroot()
        ns = {"p": etree.QName(page_root).namespace}
        expected = [(line.get("id"), line.find("p:Coords", ns).get("points"),
                     line.findtext("p:TextEquiv/p:Unicode", default="", namespaces=ns))
                    for line in page_root.iterfind(".//p:TextLine", ns)]
        assert expected
        one = etree.fromstring(page_entries[page_file.name], parser())
        for root, prefix in ((one, ""), (doc_root, f"facs_{n}_")):
            zones = {z.get(XML_ID): z for z in root.iter(f"{{{tei.TEI_NS}}}zone") if z.get(XML_ID)}
            texts = {lb.get("facs")[1:]: (lb.tail or "").removesuffix("\n")
                     for lb in root.iter(f"{{{tei.TEI_NS}}}lb")}
            for line_id, points, text in expected:
                zone_id = line_id if line_id in zones and (prefix == "" or _on_page(zones[line_id], n)) \
                    else prefix + line_id
                assert zone_id in zones, (page_file.name, line_id)
                assert _pairs(zones[zone_id].get("points")) == _pairs(points)
                assert texts[zone_id] == text
    assert_valid({"doc.xml": doc_data, **page_entries}, tmp_path)


def _on_page(zone: etree._Element, n: int) -> bool:
    surface = next(a for a in zone.iterancestors() if a.tag == f"{{{tei.TEI_NS}}}surface")
    return surface.get(XML_ID) == f"facs_{n}"


def _pairs(points: str | None) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in (points or "").split()]


def test_verify_without_jing_says_so(demo_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    archive = export(demo_corpus, tmp_path / "x.zip", "--format", "tei")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    assert run("verify", archive) == 0
    out = capsys.readouterr().out
    assert "note: TEI schema not checked (1 file(s)): jing is not installed" in out
    assert f"{archive}: OK" in out


def test_verify_reports_invalid_tei(demo_corpus: Path, tmp_path: Path) -> None:
    archive = export(demo_corpus, tmp_path / "x.zip", "--format", "tei")
    (name, data), = tei_entries(archive).items()
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr(name, data.replace(b"<pb ", b"<pbx ", 1).replace(b"</pb>", b"</pbx>", 1))
    problems = verify_archive(broken)
    assert len(problems) == 1 and problems[0].startswith(f"{name}: line ") and "pbx" in problems[0]


def export(corpus: Path, out: Path, *args: str) -> Path:
    """Export document 1 of the SQLite demo corpus (test_export's helper takes a store)."""
    return export_store(Store("sqlite", str(corpus)), out, *args)
