"""Import of ALTO/PAGE/METS folders and zips (issue 6), on the real samples, and direct conversion."""

from __future__ import annotations

import io
import re
import shutil
import sqlite3
import zipfile
from pathlib import Path

import anyio
import pytest
from lxml import etree

from pipeline.cli import main
from pipeline.importer import import_paths
from pipeline.model import Part
from pipeline.sources.xml import XmlError, points, read_page
from pipeline.store import Corpus
from pipeline.validate import parser, validate

FIXTURES = Path(__file__).parent / "fixtures"
#: sample set -> (its format, the layer an import gives it)
SETS = {
    "escriptorium-alto-cremma-mss-20": ("alto", "Default ALTO Import"),
    "escriptorium-tapuscorpus/alto": ("alto", "METS Import"),
    "escriptorium-tapuscorpus/page": ("page", "Default PAGE Import"),
    "transkribus-page-joseph-hooker": ("page", "Default PAGE Import"),
}
DUMMY = "eSc_dummyblock_"


# --- an independent reading of page files, to compare originals with exports ----------------------


def _numbers(text: str | None) -> tuple[int, ...]:
    return tuple(int(float(v)) for v in re.findall(r"-?[\d.]+", text or ""))


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname


def content(data: bytes) -> dict[str, object]:
    """Regions (id, type, box) and lines (id, region id, type, text, baseline, mask) of one page file."""
    root = etree.fromstring(data, parser())
    regions, lines = [], []
    if _local(root) == "alto":
        tags = {t.get("ID"): t.get("LABEL") for t in root.iter("{*}OtherTag")}
        for block in root.iter("{*}TextBlock"):
            bid = block.get("ID")
            types = [tags[r] for r in (block.get("TAGREFS") or "").split()]
            if bid != DUMMY:
                shape = block.find("{*}Shape/{*}Polygon")
                regions.append((bid, types[0] if types else None, _numbers(shape.get("POINTS"))))
            for line in block.iter("{*}TextLine"):
                polygon = line.find("{*}Shape/{*}Polygon")
                lines.append((
                    line.get("ID"), None if bid == DUMMY else bid,
                    next((tags[r] for r in (line.get("TAGREFS") or "").split()), None),
                    " ".join(s.get("CONTENT") for s in line.iter("{*}String")),
                    _numbers(line.get("BASELINE")),
                    _numbers(polygon.get("POINTS") if polygon is not None else None),
                ))
    else:
        def type_of(el: etree._Element) -> str | None:
            m = re.search(r"structure\s*\{[^}]*type:([^;}]+)", el.get("custom") or "")
            return m[1] if m else None

        for region in root.iter("{*}TextRegion"):
            rid = region.get("id")
            if rid != DUMMY:
                regions.append((rid, type_of(region), _numbers(region.find("{*}Coords").get("points"))))
            for line in region.iter("{*}TextLine"):
                baseline = line.find("{*}Baseline")
                lines.append((
                    line.get("id"), None if rid == DUMMY else rid, type_of(line),
                    line.findtext("{*}TextEquiv/{*}Unicode") or "",
                    _numbers(baseline.get("points") if baseline is not None else None),
                    _numbers(line.find("{*}Coords").get("points")),
                ))
    return {"regions": regions, "lines": lines}


def page_files(folder: Path) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted(folder.glob("*.xml")) if p.name != "METS.xml"}


def zip_pages(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as zf:
        return {Path(n).stem: zf.read(n) for n in zf.namelist() if n.endswith(".xml") and n != "METS.xml"}


def run(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


def assert_same_pages(original: dict[str, bytes], exported: dict[str, bytes]) -> None:
    assert sorted(original) == sorted(exported)
    for stem, data in exported.items():
        assert validate(io.BytesIO(data)) == [], stem
        assert content(data) == content(original[stem]), stem


# --- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SETS)
def test_import_then_export_in_own_format(name: str, tmp_path: Path) -> None:
    fmt, layer = SETS[name]
    corpus = tmp_path / "c.sqlite"
    assert run("import", FIXTURES / name, "--corpus", corpus) == 0
    out = tmp_path / f"out.{fmt}.zip"
    assert run("export", "--corpus", corpus, "--document", "1", "--layer", layer, "--format", fmt,
               "-o", out, "--images") == 0
    assert_same_pages(page_files(FIXTURES / name), zip_pages(out))
    assert run("verify", out) == 0


def test_page_to_alto_to_page(tmp_path: Path) -> None:
    source = FIXTURES / "escriptorium-tapuscorpus/page"
    corpus = tmp_path / "c.sqlite"
    assert run("import", source, "--corpus", corpus) == 0
    alto = tmp_path / "alto.zip"
    assert run("export", "--corpus", corpus, "--document", "1", "--layer", "Default PAGE Import", "-o", alto,
               "--images") == 0
    assert run("import", alto, "--corpus", corpus, "--document", "again", "--layer", "manual") == 0
    back = tmp_path / "page.zip"
    assert run("export", "--corpus", corpus, "--document", "again", "--format", "page", "-o", back) == 0
    assert_same_pages(page_files(source), zip_pages(back))


def test_direct_conversion_from_source(tmp_path: Path) -> None:
    """PAGE 2013 (Transkribus) straight to ALTO and back to PAGE 2019, without a corpus."""
    source = FIXTURES / "transkribus-page-joseph-hooker"
    alto = tmp_path / "alto.zip"
    assert run("export", "--source", source, "--format", "alto", "-o", alto, "--images") == 0
    with zipfile.ZipFile(alto) as zf:
        assert "JDH_2_16_144_001.jpg" in zf.namelist()
    page = tmp_path / "page.zip"
    assert run("export", "--source", alto, "--format", "page", "-o", page, "--parts", "2") == 0
    exported = zip_pages(page)
    assert list(exported) == ["JDH_2_16_144_002"]
    assert_same_pages({"JDH_2_16_144_002": page_files(source)["JDH_2_16_144_002"]}, exported)


def test_document_layer_types_and_sizes(tmp_path: Path) -> None:
    corpus_path = tmp_path / "c.sqlite"
    assert run("import", FIXTURES / "escriptorium-tapuscorpus/alto", "--corpus", corpus_path) == 0

    async def check() -> list[Part]:
        with Corpus.open(corpus_path) as corpus:
            document = await corpus.document(1)
            assert document.name == "alto"
            assert [la.name for la in document.layers] == ["METS Import"]
            assert {t.name for t in document.valid_block_types} == {
                "MainZone", "MarginTextZone", "StampZone", "NumberingZone", "GraphicZone"}
            assert "DefaultLine:Typewritten" in {t.name for t in document.valid_line_types}
            return [part async for part in corpus.parts(document, "METS Import")]

    parts = anyio.run(check)
    assert [p.image_filename for p in parts] == [f"{n}_default.jpg" for n in ("0_4a125", "1_14b3a", "2_a91bf",
                                                                             "3_eac6a")]
    assert (parts[0].width, parts[0].height) == (1817, 762)
    assert parts[0].source.startswith("https://gallica.bnf.fr/iiif/")
    assert Path(parts[0].image_path).is_file() and "documents/1/" in parts[0].image_path
    assert [li.order for li in parts[1].lines] == list(range(len(parts[1].lines)))


def test_link_references_images_in_place(tmp_path: Path) -> None:
    source = FIXTURES / "transkribus-page-joseph-hooker"
    corpus = tmp_path / "c.sqlite"
    assert run("import", source, "--corpus", corpus, "--link", "--document", "hooker") == 0
    with sqlite3.connect(corpus) as conn:
        images = [r[0] for r in conn.execute('SELECT image FROM core_documentpart ORDER BY "order"')]
    assert images == [str((source / f"JDH_2_16_144_00{n}.jpg").resolve()) for n in (1, 2)]
    assert not (tmp_path / "c.media" / "documents").exists() or not any((tmp_path / "c.media").rglob("*.jpg"))
    out = tmp_path / "o.zip"
    assert run("export", "--corpus", corpus, "--document", "hooker", "--layer", "Default PAGE Import",
               "--images", "-o", out) == 0
    with zipfile.ZipFile(out) as zf:
        assert zf.read("JDH_2_16_144_001.jpg") == (source / "JDH_2_16_144_001.jpg").read_bytes()


# --- ordering and pairing ------------------------------------------------------------------------


def _copy_set(name: str, dest: Path, rename: dict[str, str] | None = None) -> Path:
    dest.mkdir(parents=True)
    for path in (FIXTURES / name).iterdir():
        if path.suffix in (".xml", ".jpg"):
            target = dest / (rename or {}).get(path.stem, path.stem)
            shutil.copyfile(path, target.with_suffix(path.suffix))
    return dest


def _image_order(corpus_path: Path) -> list[str]:
    with sqlite3.connect(corpus_path) as conn:
        rows = conn.execute('SELECT original_filename FROM core_documentpart ORDER BY "order"')
        return [r[0] for r in rows]


def test_natural_order_and_pairing_by_base_name(tmp_path: Path) -> None:
    names = {"JDH_2_16_144_001": "page10", "JDH_2_16_144_002": "page2"}
    folder = _copy_set("transkribus-page-joseph-hooker", tmp_path / "set", names)
    corpus = tmp_path / "c.sqlite"
    assert run("import", folder, "--corpus", corpus) == 0
    assert _image_order(corpus) == ["page2.jpg", "page10.jpg"]  # paired by base name, not the XML's name


def test_mets_decides_order(tmp_path: Path) -> None:
    folder = _copy_set("escriptorium-tapuscorpus/alto", tmp_path / "set")
    mets = (FIXTURES / "escriptorium-tapuscorpus/alto/METS.xml").read_text()
    (folder / "METS.xml").write_text(mets.replace("0_4a125", "X").replace("3_eac6a", "0_4a125")
                                     .replace("X", "3_eac6a"))
    corpus = tmp_path / "c.sqlite"
    assert run("import", folder, "--corpus", corpus) == 0
    assert _image_order(corpus) == ["3_eac6a_default.jpg", "1_14b3a_default.jpg", "2_a91bf_default.jpg",
                                    "0_4a125_default.jpg"]


# --- errors and warnings ---------------------------------------------------------------------------


def _counts(corpus_path: Path) -> tuple[int, ...]:
    with sqlite3.connect(corpus_path) as conn:
        return tuple(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                     for t in ("core_document", "core_documentpart", "core_line", "core_linetranscription"))


def test_malformed_xml_names_file_and_line_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _copy_set("escriptorium-alto-cremma-mss-20", tmp_path / "set")
    bad = folder / "01R_P1S7P178_002.xml"
    text = bad.read_text().splitlines()
    text[40] = text[40] + "<broken"
    bad.write_text("\n".join(text))
    corpus = tmp_path / "c.sqlite"
    assert run("import", folder, "--corpus", corpus) == 1
    err = capsys.readouterr().err
    assert "01R_P1S7P178_002.xml: line 4" in err and "not well-formed" in err
    assert err.count("\n") == 1
    assert _counts(corpus) == (0, 0, 0, 0)
    assert not any(p.is_file() for p in (tmp_path / "c.media").rglob("*"))


def test_missing_image_warns_and_uses_xml_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy_set("escriptorium-alto-cremma-mss-20", tmp_path / "set")
    (folder / "01R_P1S7P178_003.jpg").unlink()
    corpus = tmp_path / "c.sqlite"
    assert run("import", folder, "--corpus", corpus) == 0
    assert "01R_P1S7P178_003.xml: image 01R_P1S7P178_003.jpg not found; size from the XML" in \
        capsys.readouterr().err
    with sqlite3.connect(corpus) as conn:
        sizes = conn.execute("SELECT width, height FROM pipeline_image_size ORDER BY part_id").fetchall()
    assert sizes[2] == (1157, 1500)


def test_image_over_pixel_limit_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c.sqlite"
    assert run("import", FIXTURES / "transkribus-page-joseph-hooker", "--corpus", corpus,
               "--max-pixels", "1000000") == 1
    err = capsys.readouterr().err
    assert "JDH_2_16_144_001.jpg is 1423x2151" in err and "--max-pixels" in err
    assert _counts(corpus) == (0, 0, 0, 0)


_PAGE_WITH_DTD = """<?xml version="1.0"?>
<!DOCTYPE PcGts [{entities}]>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15">
<Page imageFilename="x.jpg" imageWidth="10" imageHeight="10"><TextRegion id="r"><Coords points="0,0 9,0 9,9"/>
<TextLine id="l"><Coords points="0,0 9,0 9,9"/><TextEquiv><Unicode>a{ref}b</Unicode></TextEquiv></TextLine>
</TextRegion></Page></PcGts>"""


@pytest.mark.parametrize("entities, ref", [
    ('<!ENTITY xxe SYSTEM "file://{secret}">', "&xxe;"),  # external entity: XXE
    ('<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
     '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">', "&d;"),
], ids=["xxe", "billion-laughs"])
def test_entities_are_refused(
    tmp_path: Path, entities: str, ref: str, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "p.xml").write_text(_PAGE_WITH_DTD.format(entities=entities.format(secret=secret), ref=ref))
    corpus = tmp_path / "c.sqlite"
    assert run("import", folder, "--corpus", corpus) == 1
    assert "DTD declares entities; refused" in capsys.readouterr().err
    assert b"TOP-SECRET" not in corpus.read_bytes() and b"aaaaaaaaaaaaaaaaaaaa" not in corpus.read_bytes()
    with pytest.raises(XmlError):  # the reader itself, too
        read_page((folder / "p.xml").open("rb"), "p.xml")


def test_zip_slip_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(FIXTURES / "transkribus-page-joseph-hooker/JDH_2_16_144_002.xml", "JDH_2_16_144_002.xml")
        zf.writestr("../../JDH_2_16_144_002.jpg", b"not really")
    corpus = tmp_path / "work" / "c.sqlite"
    corpus.parent.mkdir()
    assert run("import", archive, "--corpus", corpus) == 1
    assert "'../../JDH_2_16_144_002.jpg': absolute path or '..' refused" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.jpg"))


def test_zip_bomb_member_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(FIXTURES / "transkribus-page-joseph-hooker/JDH_2_16_144_002.xml", "JDH_2_16_144_002.xml")
        zf.writestr("JDH_2_16_144_002.jpg", bytes(32 << 20))
    assert run("import", archive, "--corpus", tmp_path / "c.sqlite") == 1
    assert "looks like a zip bomb" in capsys.readouterr().err


def test_zip_member_larger_than_declared_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A member whose headers understate its size is never read past that size (zipfile stops there,
    then its CRC fails; SafeZip's bounded reader would stop it otherwise)."""
    xml = (FIXTURES / "transkribus-page-joseph-hooker/JDH_2_16_144_002.xml").read_bytes()
    archive = tmp_path / "liar.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("p.xml", xml)
    data = bytearray(archive.read_bytes())
    size = len(xml).to_bytes(4, "little")
    for offset in [m.start() for m in re.finditer(re.escape(size), data)]:
        data[offset:offset + 4] = (100).to_bytes(4, "little")  # local header and central directory
    archive.write_bytes(bytes(data))
    assert run("import", archive, "--corpus", tmp_path / "c.sqlite") == 1
    assert re.search(r"liar\.zip: member 'p\.xml': (corrupt|more data than its declared size)",
                     capsys.readouterr().err)


def test_text_zip_goes_to_the_exchange_importer(tmp_path: Path) -> None:
    archive = tmp_path / "texts.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("test/letter.txt", "Dear Dyer,\nyours.\n")
    corpus = tmp_path / "c.sqlite"
    assert run("import", archive, "--corpus", corpus) == 0
    assert _counts(corpus)[0] == 1


def test_link_with_zip_is_a_usage_error(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(FIXTURES / "transkribus-page-joseph-hooker/JDH_2_16_144_002.xml", "p.xml")
    assert run("import", archive, "--corpus", tmp_path / "c.sqlite", "--link") == 2


# --- reader details --------------------------------------------------------------------------------

_ALTO = """<alto xmlns="http://www.loc.gov/standards/alto/ns-v3#"><Description/>
<Layout><Page WIDTH="100" HEIGHT="200"><PrintSpace>
<TextBlock ID="b"><TextLine ID="l2" HPOS="10" VPOS="20" WIDTH="30" HEIGHT="5" BASELINE="24">
<String CONTENT="one" WC="0.5"/><SP/><String CONTENT="two" WC="0.7"/></TextLine>
<TextLine ID="l1" BASELINE="1,2 3,4"><Shape><Polygon POINTS="1,1 5,1 5,5"/></Shape>
<String CONTENT="x"/></TextLine>
</TextBlock></PrintSpace></Page></Layout></alto>"""

_PAGE_ORDER = """<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15">
<Metadata><Created>2020-06-11T20:32:25.218-04:00</Created><Foreign/></Metadata>
<Page imageFilename="p.jpg" imageWidth="50" imageHeight="60">
<ReadingOrder><OrderedGroup id="g"><RegionRefIndexed index="1" regionRef="a"/>
<RegionRefIndexed index="0" regionRef="b"/></OrderedGroup></ReadingOrder>
<TextRegion id="a" type="heading">
<TextLine id="a2" custom="readingOrder {index:1;}"><Coords points="1,1 2,2"/>
<TextEquiv conf="0.25"><Unicode>second</Unicode></TextEquiv></TextLine>
<TextLine id="a1" custom="readingOrder {index:0;} structure {type:My\\u0020Line;}"><Coords points="1,1 2,2"/>
<TextEquiv><Unicode>first</Unicode></TextEquiv></TextLine></TextRegion>
<TextRegion id="b" custom="structure {type:Main;}"><Coords points="3,3 9,3 9,9"/></TextRegion>
</Page></PcGts>"""


def test_alto_v3_words_confidence_and_point_forms() -> None:
    page = read_page(io.BytesIO(_ALTO.encode()), "a.xml")
    first, second = page.lines
    assert (first.text, first.confidence) == ("one two", pytest.approx(0.6))
    assert first.baseline == ((10, 24), (40, 24)) and first.mask is None
    assert second.baseline == ((1, 2), (3, 4)) and second.mask == ((1, 1), (5, 1), (5, 5))
    assert page.regions[0].box == ((1, 1), (40, 1), (40, 24), (1, 24))  # no shape: bbox of its lines
    assert points("1 2 3.5 4", "l") == points("1,2 3.5,4", "l") == ((1, 2), (3.5, 4))


def test_page_reading_order_types_and_region_without_coords() -> None:
    page = read_page(io.BytesIO(_PAGE_ORDER.encode()), "p.xml")
    assert [(r.external_id, r.order, r.type) for r in page.regions] == [("a", 1, "heading"), ("b", 0, "Main")]
    assert page.regions[0].box == ((1, 1), (2, 1), (2, 2), (1, 2))
    assert sorted((li.order, li.external_id, li.type, li.text, li.confidence) for li in page.lines) == [
        (0, "a1", "My Line", "first", None), (1, "a2", None, "second", 0.25)]
    assert page.created_at is not None and page.created_at.utcoffset() is not None


def test_malformed_point_list_names_line() -> None:
    bad = _ALTO.replace('POINTS="1,1 5,1 5,5"', 'POINTS="1,1 5"')
    with pytest.raises(XmlError, match=r"a\.xml: line 5: line l1: '1,1 5' is not a list of x,y points"):
        read_page(io.BytesIO(bad.encode()), "a.xml")


def test_import_paths_api(tmp_path: Path) -> None:
    async def go() -> None:
        with Corpus.open(tmp_path / "c.sqlite", create=True) as corpus:
            summary = await import_paths([FIXTURES / "escriptorium-alto-cremma-mss-20"], corpus,
                                         document="cremma", layer="manual")
            assert [(d.name, d.parts, d.lines, d.layer) for d in summary.documents] == [
                ("cremma", 3, 44, "manual")]
            assert summary.warnings == []

    anyio.run(go)


def test_typed_escriptorium_page_round_trip_keeps_region_and_line_types(tmp_path: Path) -> None:
    """eScriptorium's PAGE template writes ``custom="structure {type:…;}"`` on typed regions and
    lines. The real tapuscorpus PAGE export, with its lines put into typed regions the way that
    template writes them (a ``DropCapitalZone``, ``MainZone``s; ``DefaultLine``/``HeadingLine``
    lines, some untyped), imports with block and line type ids both numbered from 1 and must
    re-export with every region and line type unchanged."""
    source = tmp_path / "typed"
    source.mkdir()
    for path in sorted((FIXTURES / "escriptorium-tapuscorpus/page").iterdir()):
        data = path.read_bytes()
        if path.suffix == ".xml":
            root = etree.fromstring(data)
            page_el = root.find("{*}Page")
            w, h = page_el.get("imageWidth"), page_el.get("imageHeight")
            zone = "DropCapitalZone" if path.stem.startswith("0_") else "MainZone"
            data = data.replace(
                b'<TextRegion id="eSc_dummyblock_">',
                f'<TextRegion id="eSc_textblock_{path.stem[:7]}" custom="structure {{type:{zone};}}">'
                f'<Coords points="0,0 {w},0 {w},{h} 0,{h}"/>'.encode(),
            )
            pieces = re.split(rb'(<TextLine id="[^"]+") >', data)  # text, opening, text, opening...
            kinds = (b' custom="structure {type:DefaultLine;}">',
                     b' custom="structure {type:HeadingLine;}">', b">")
            for i in range(1, len(pieces), 2):
                pieces[i] += kinds[i // 2 % 3]
            data = b"".join(pieces)
        (source / path.name).write_bytes(data)
    original = page_files(source)
    kinds = {t for page in original.values() for key in ("regions", "lines")
             for t in (row[1 if key == "regions" else 2] for row in content(page)[key])}
    assert kinds == {"DropCapitalZone", "MainZone", "DefaultLine", "HeadingLine", None}
    corpus = tmp_path / "c.sqlite"
    assert run("import", source, "--corpus", corpus) == 0
    with sqlite3.connect(corpus) as db:  # both tables numbered from 1, as in eScriptorium
        assert db.execute("SELECT id, name FROM core_blocktype ORDER BY id").fetchall() == [
            (1, "DropCapitalZone"), (2, "MainZone")]
        assert [r[0] for r in db.execute("SELECT id FROM core_linetype ORDER BY id")] == [1, 2]
    out = tmp_path / "page.zip"
    assert run("export", "--corpus", corpus, "--document", "1", "--layer", "Default PAGE Import",
               "--format", "page", "-o", out) == 0
    assert_same_pages(original, zip_pages(out))


def test_export_after_import_defaults_to_the_imported_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An import names its layer after itself (``Default PAGE Import``): no ``manual`` layer, so
    export reads the document's only layer; with several and no ``manual``, it asks, listing them."""
    corpus = tmp_path / "c.sqlite"
    assert run("import", FIXTURES / "escriptorium-tapuscorpus/page", "--corpus", corpus) == 0
    out = tmp_path / "page.zip"
    assert run("export", "--corpus", corpus, "--document", "1", "--format", "page", "-o", out) == 0
    assert_same_pages(page_files(FIXTURES / "escriptorium-tapuscorpus/page"), zip_pages(out))
    with sqlite3.connect(corpus) as db:
        layer = db.execute("SELECT layer FROM pipeline_export ORDER BY rowid DESC LIMIT 1").fetchone()[0]
    assert layer == "Default PAGE Import"
    with sqlite3.connect(corpus) as db:  # a second layer, as a transcription by a model adds one
        db.execute("INSERT INTO core_transcription (document_id, name, archived, created_at)"
                   " VALUES (1, 'kraken:catmus-print-fondue-large', 0, '2024-03-01T10:00:00+00:00')")
    capsys.readouterr()
    assert run("export", "--corpus", corpus, "--document", "1", "-o", tmp_path / "x.zip") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'Default PAGE Import'" in err and "'kraken:catmus-print-fondue-large'" in err
    assert "--layer" in err and not (tmp_path / "x.zip").exists()
