"""ALTO, PAGE, METS and text writers: validity, spec semantics, and structure of real exports."""

from __future__ import annotations

import io
import logging
import re
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import ModuleType

import pytest
from lxml import etree

from pipeline import ns
from pipeline.errors import UsageError
from pipeline.formats import alto, mets, page, text
from pipeline.formats.xmlutil import Ids, alto_points, conf, is_ncname, num, page_points
from pipeline.model import Document, Line, Part, Region, Typology
from pipeline.select import RegionFilter
from pipeline.validate import parser, validate
from pipeline.writers import FORMATS, get

FIXTURES = Path(__file__).parent / "fixtures"
A = {"a": alto.ALTO_NS}
P = {"p": page.PAGE_NS}
M = {"m": mets.METS_NS}

MAIN, TITLE, STRAY = Typology(1, "Main"), Typology(2, "Title"), Typology(5, "Stray")
DEFAULT, ODD = Typology(10, "Default"), Typology(11, "Odd")
DOC = Document(
    7,
    "doc",
    valid_block_types=(MAIN, TITLE),
    valid_line_types=(DEFAULT,),
    block_types=(MAIN, TITLE, STRAY),
)

SQUARE = ((0, 0), (100, 0), (100, 50), (0, 50))
FLOATS = ((-3.25, 10.5), (100.75, 10.5), (100.75, 60.9), (-3.25, 60.9))
TEXT_3 = "שָׁלוֹם e\u0301 😀"
TEXT_1 = "Fish & chips <b> \"q\" 'a'"


def make_part(clean_ids: bool = False) -> Part:
    """Every awkward case in one page; ``clean_ids`` swaps bad external ids for unique good ones."""

    def ext(kind: str, db_id: int, messy: str | None) -> str | None:
        return f"{kind}{db_id}" if clean_ids else messy

    regions = (
        Region(100, 0, SQUARE, MAIN, ext("b", 100, "eSc_textblock_aaaa")),
        Region(101, 1, FLOATS, TITLE, ext("b", 101, None)),
        Region(102, 2, SQUARE, None, ext("b", 102, "")),
        Region(103, 3, SQUARE, STRAY, ext("b", 103, "12")),
        Region(104, 4, SQUARE, MAIN, ext("b", 104, "a b")),  # no lines
        Region(105, 5, SQUARE, TITLE, ext("b", 105, "eSc_textblock_aaaa")),
    )
    lines = (
        Line(1, 3, ((1, 40), (99, 41)), SQUARE, 100, DEFAULT, ext("l", 1, "eSc_line_0f1e"), TEXT_1, 0.0),
        Line(2, 4, ((1, 45), (99, 48)), None, 100, DEFAULT, ext("l", 2, None), None, None),
        Line(3, 0, ((-5.5, 30.25), (90.9, 31)), FLOATS, 101, None, ext("l", 3, "12"), TEXT_3, 0.9),
        Line(4, 1, None, None, 101, None, ext("l", 4, "a b"), "", None),
        Line(5, 2, ((1, 2), (3, 4)), None, 102, None, ext("l", 5, "eSc_line_dup"), "ctrl\x01char", 1.7),
        Line(6, 5, ((100, 300), (400, 300)), None, None, None, ext("l", 6, "eSc_line_dup"), "a stray line"),
        Line(7, 6, ((1, 2), (3, 4)), SQUARE, 103, ODD, ext("l", 7, "eSc_line_7"), "   ", -0.5),
        Line(8, 7, ((1, 2), (3, 4)), None, None, None, ext("l", 8, "eSc_dummyblock_"), None),
        Line(9, 8, ((1, 2), (3, 4)), SQUARE, 105, DEFAULT, ext("l", 9, "eSc_line_3"), "Title two", None),
    )
    return Part(
        1, 7, 2, "documents/7/f001.png", 1000, 1400, original_filename="f001.jpg",
        source="https://example.org/iiif/f1/full/full/0/default.jpg",
        created_at=datetime.fromisoformat("2024-01-02T03:04:05.678901+00:00"),
        regions=regions, lines=lines,
    )  # fmt: skip


#: spec order of the fixture: (region id, type id, [line ids]); orphans last
EXPECTED_BLOCKS = [
    (101, 2, [3, 4]),
    (102, None, [5]),
    (100, 1, [1, 2]),
    (103, 5, [7]),
    (105, 2, [9]),
    (104, 1, []),
]
ORPHANS = [6, 8]

FILTERS = {
    "all": RegionFilter(),
    "main": RegionFilter(frozenset({1}), False, False),
    "title": RegionFilter(frozenset({2}), False, False),
    "stray": RegionFilter(frozenset({5}), False, False),
    "undefined": RegionFilter(frozenset(), True, False),
    "orphan": RegionFilter(frozenset(), False, True),
    "no-orphan": RegionFilter(None, True, False),
    "types": RegionFilter(frozenset({1, 2, 5}), False, False),
    "nothing": RegionFilter(frozenset(), False, False),
}


def keeps(flt: RegionFilter, type_id: int | None) -> bool:
    return flt.undefined if type_id is None else flt.types is None or type_id in flt.types


def render(module: ModuleType, part: Part | None = None, flt: RegionFilter = FILTERS["all"]) -> bytes:
    return b"".join(module.render(part or make_part(), DOC, flt))


def tree(data: bytes) -> etree._Element:
    return etree.fromstring(data, parser())


def assert_clean_bytes(data: bytes) -> None:
    """Valid, no blank or whitespace-only lines, ids unique, '.' decimals only."""
    assert validate(io.BytesIO(data)) == []
    assert all(line.strip() for line in data.split(b"\n")[:-1]), "blank line in output"
    root = tree(data)
    ids = root.xpath("//@ID | //@id")
    assert len(ids) == len(set(ids))
    for attr in root.xpath("//@HPOS|//@VPOS|//@WIDTH|//@HEIGHT|//@WC|//@conf|//@POINTS|//@BASELINE"):
        assert re.fullmatch(r"[-0-9. ]*", attr), attr
    for attr in root.xpath("//@points"):
        assert re.fullmatch(r"\d+,\d+( \d+,\d+)+", attr), attr


# --- validity over every filter ----------------------------------------------------------------


@pytest.mark.parametrize("clean_ids", [False, True])
@pytest.mark.parametrize("name", FILTERS)
@pytest.mark.parametrize("module", [alto, page], ids=["alto", "page"])
def test_xml_valid_for_every_filter(module: ModuleType, name: str, clean_ids: bool) -> None:
    data = render(module, make_part(clean_ids), FILTERS[name])
    assert data.startswith(
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        if module is alto
        else b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    )
    assert_clean_bytes(data)


@pytest.mark.parametrize("name", FILTERS)
def test_alto_blocks_lines_and_order_follow_section_2(name: str) -> None:
    flt = FILTERS[name]
    root = tree(render(alto, make_part(clean_ids=True), flt))
    got = [
        (b.get("ID"), b.get("TAGREFS"), [line.get("ID") for line in b.iterfind("a:TextLine", A)])
        for b in root.iterfind(".//a:TextBlock", A)
    ]
    expected = [
        (f"b{rid}", f"BT{tid}" if tid else None, [f"l{i}" for i in lines])
        for rid, tid, lines in EXPECTED_BLOCKS
        if keeps(flt, tid)
    ]
    if flt.orphan:
        expected.append(("eSc_dummyblock_", None, [f"l{i}" for i in ORPHANS]))
    assert got == expected
    # Tags: valid types plus those used on the page, ascending, block types first
    tags = root.xpath("a:Tags/a:OtherTag/@ID", namespaces=A)
    assert set(tags) >= {"BT1", "BT2", "LT10"} | {tagref for _, tagref, _ in expected if tagref}
    assert ("BT5" in tags) == keeps(flt, 5) and ("LT11" in tags) == keeps(flt, 5)
    assert tags == sorted(tags, key=lambda t: (t[:2], int(t[2:])))


@pytest.mark.parametrize("name", FILTERS)
def test_page_regions_and_order_follow_section_2(name: str) -> None:
    flt = FILTERS[name]
    root = tree(render(page, make_part(clean_ids=True), flt))
    got = [
        (r.get("id"), r.get("custom"), [line.get("id") for line in r.iterfind("p:TextLine", P)])
        for r in root.iterfind(".//p:TextRegion", P)
    ]
    names = {1: "Main", 2: "Title", 5: "Stray"}
    expected = [
        (f"b{rid}", f"structure {{type:{names[tid]};}}" if tid else None, [f"l{i}" for i in lines])
        for rid, tid, lines in EXPECTED_BLOCKS
        if keeps(flt, tid)
    ]
    if flt.orphan:
        expected.append(("eSc_dummyblock_", None, [f"l{i}" for i in ORPHANS]))
    assert got == expected


def test_alto_details() -> None:
    root = tree(render(alto))
    assert root.findtext("a:Description/a:sourceImageInformation/a:fileName", namespaces=A) == "f001.jpg"
    assert root.findtext(".//a:fileIdentifier", namespaces=A) == make_part().source
    pg = root.find(".//a:Page", A)
    assert dict(pg.attrib) == {
        "WIDTH": "1000",
        "HEIGHT": "1400",
        "PHYSICAL_IMG_NR": "2",
        "ID": "eSc_dummypage_",
    }
    assert [b.get("ID") for b in root.iterfind(".//a:TextBlock", A)] == [
        "eSc_textblock_101", "eSc_textblock_102", "eSc_textblock_aaaa", "eSc_textblock_103",
        "eSc_textblock_105", "eSc_textblock_104", "eSc_dummyblock_",
    ]  # fmt: skip
    lines = {line.get("ID"): line for line in root.iterfind(".//a:TextLine", A)}
    assert list(lines) == [
        "eSc_line_3", "eSc_line_4", "eSc_line_dup", "eSc_line_0f1e", "eSc_line_2", "eSc_line_7",
        "eSc_line_9", "eSc_line_6", "eSc_line_8",
    ]  # fmt: skip
    string = lines["eSc_line_0f1e"].find("a:String", A)
    assert string.get("CONTENT") == TEXT_1 and string.get("WC") == "0.0"  # 0.0 kept
    assert lines["eSc_line_3"].find("a:String", A).get("CONTENT") == TEXT_3
    assert lines["eSc_line_3"].get("BASELINE") == "-5.5 30.25 90.9 31"
    assert lines["eSc_line_dup"].find("a:String", A).attrib["CONTENT"] == "ctrlchar"
    assert lines["eSc_line_dup"].find("a:String", A).get("WC") == "1.0"  # clamped
    assert lines["eSc_line_7"].find("a:String", A).get("WC") == "0.0"
    assert lines["eSc_line_2"].find("a:String", A).get("CONTENT") == ""  # no row in the layer
    assert "WC" not in lines["eSc_line_2"].find("a:String", A).attrib
    assert lines["eSc_line_2"].find("a:Shape", A) is None  # mask-less: no Shape, box from baseline
    assert [lines["eSc_line_2"].get(k) for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT")] == ["1", "45", "98", "3"]
    no_geometry = lines["eSc_line_4"]
    assert set(no_geometry.attrib) == {"ID"} and set(no_geometry.find("a:String", A).attrib) == {"CONTENT"}
    block = root.find(".//a:TextBlock[@ID='eSc_textblock_101']", A)
    assert block.get("TAGREFS") == "BT2"
    assert [block.get(k) for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT")] == ["-3.25", "10.5", "104", "50.4"]
    assert block.find("a:Shape/a:Polygon", A).get("POINTS") == "-3.25 10.5 100.75 10.5 100.75 60.9 -3.25 60.9"
    assert root.find(".//a:TextBlock[@ID='eSc_textblock_104']", A).findall("a:TextLine", A) == []
    assert set(root.xpath("a:Tags/a:OtherTag/@ID", namespaces=A)) == {"BT1", "BT2", "BT5", "LT10", "LT11"}
    stray = root.find("a:Tags/a:OtherTag[@ID='BT5']", A)
    assert stray.get("LABEL") == "Stray" and stray.get("DESCRIPTION") == "block type Stray"


def test_alto_without_any_type_has_no_tags() -> None:
    part = Part(1, 1, 0, "x/p.jpg", 10, 10, lines=(Line(1, 0, ((1, 1), (5, 1)), text="x"),))
    data = b"".join(alto.render(part, Document(1, "d"), RegionFilter()))
    assert tree(data).find("a:Tags", A) is None
    assert_clean_bytes(data)


def test_page_details() -> None:
    root = tree(render(page))
    meta = root.find("p:Metadata", P)
    assert meta.get("externalRef") == make_part().source
    assert [(c.tag.split("}")[1], c.text) for c in meta] == [
        ("Creator", "escriptorium"),
        ("Created", "2024-01-02T03:04:05.678901+00:00"),
        ("LastChange", "2024-01-02T03:04:05.678901+00:00"),
    ]
    pg = root.find("p:Page", P)
    assert dict(pg.attrib) == {"imageFilename": "f001.jpg", "imageWidth": "1000", "imageHeight": "1400"}
    lines = {line.get("id"): line for line in root.iterfind(".//p:TextLine", P)}
    region = root.find(".//p:TextRegion[@id='eSc_textblock_101']", P)
    assert region.find("p:Coords", P).get("points") == "0,10 100,10 100,60 0,60"  # truncated, clamped
    assert lines["eSc_line_3"].find("p:Baseline", P).get("points") == "0,30 90,31"
    assert lines["eSc_line_2"].find("p:Coords", P).get("points") == "1,45 99,45 99,48 1,48"  # baseline bbox
    assert lines["eSc_line_4"].find("p:Coords", P).get("points") == "0,10 100,10 100,60 0,60"  # region's
    assert lines["eSc_line_4"].find("p:Baseline", P) is None
    assert lines["eSc_line_0f1e"].find("p:TextEquiv", P).get("conf") == "0.0"
    assert lines["eSc_line_0f1e"].findtext("p:TextEquiv/p:Unicode", namespaces=P) == TEXT_1
    assert "conf" not in lines["eSc_line_2"].find("p:TextEquiv", P).attrib
    assert lines["eSc_line_2"].findtext("p:TextEquiv/p:Unicode", namespaces=P) == ""
    assert lines["eSc_line_7"].get("custom") == "structure {type:Odd;}"
    dummy = root.find(".//p:TextRegion[@id='eSc_dummyblock_']", P)
    assert dummy.find("p:Coords", P).get("points") == "0,0 1000,0 1000,1400 0,1400"


def test_page_timestamps_never_use_the_clock() -> None:
    part = Part(1, 1, 0, "x/p.jpg", 10, 10)
    root = tree(b"".join(page.render(part, DOC, RegionFilter())))
    assert root.findtext("p:Metadata/p:Created", namespaces=P) == "1970-01-01T00:00:00+00:00"
    assert root.findtext("p:Metadata/p:LastChange", namespaces=P) == "1970-01-01T00:00:00+00:00"


@pytest.mark.parametrize("module", [alto, page], ids=["alto", "page"])
def test_warnings_for_dropped_characters_and_missing_geometry(
    module: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        render(module)
    messages = " | ".join(caplog.messages)
    assert "line 5: dropped 1 character" in messages
    assert "line 4: no mask and no baseline" in messages


def test_empty_layer_still_writes_every_line() -> None:
    part = make_part()
    part = replace(part, lines=tuple(replace(ln, text=None, confidence=None) for ln in part.lines))
    for module in (alto, page):
        data = render(module, part)
        assert_clean_bytes(data)
    assert len(tree(render(alto, part)).findall(".//a:String[@CONTENT='']", A)) == 9
    assert b"".join(text.render([part], RegionFilter())) == b""


def test_render_streams_block_by_block() -> None:
    chunks = list(alto.render(make_part(), DOC, RegionFilter()))
    assert len(chunks) >= len(EXPECTED_BLOCKS) + 1
    assert chunks[0].startswith(b"<?xml") and chunks[-1].rstrip().endswith(b"</alto>")


# --- ordering --------------------------------------------------------------------------------------


def test_block_ties_break_by_order_then_id() -> None:
    regions = (Region(3, 1, SQUARE), Region(2, 1, SQUARE), Region(1, 5, SQUARE), Region(4, 0, SQUARE))
    lines = (
        Line(10, 20, region_id=1, baseline=((0, 0), (1, 0))),
        Line(11, 22, region_id=1, baseline=((0, 0), (1, 0))),
        Line(12, 21, region_id=2, baseline=((0, 0), (1, 0))),
        Line(13, 21, region_id=3, baseline=((0, 0), (1, 0))),
    )
    part = Part(1, 1, 0, "x/p.jpg", 10, 10, regions=regions, lines=lines)
    got = tree(render(alto, part)).xpath("//a:TextBlock/@ID", namespaces=A)
    assert got == ["eSc_textblock_2", "eSc_textblock_3", "eSc_textblock_1", "eSc_textblock_4"]


# --- helpers ---------------------------------------------------------------------------------------


def test_number_formatting() -> None:
    assert [num(v) for v in (140, 140.0, 140.5, 12345.678, -0.0, -3.25)] == [
        "140",
        "140",
        "140.5",
        "12345.7",
        "0",
        "-3.25",
    ]
    assert alto_points(((1, 2), (3.0, 4.5))) == "1 2 3 4.5"
    assert page_points(((140.9, -2), (-0.5, 3))) == "140,0 0,3"
    assert page_points(((1, 2),)) is None
    assert conf(0.0) == "0.0" and conf(2) == "1.0" and conf(-1) == "0.0" and conf(0.9123) == "0.9123"


def test_ids() -> None:
    assert [is_ncname(v) for v in ("eSc_line_1", "é", "12", "a b", "", "a:b", "x😀")] == [
        True, True, False, False, False, False, False,
    ]  # fmt: skip
    ids = Ids(("eSc_dummyblock_",))
    assert ids.take("eSc_textblock_7", "x") == "eSc_textblock_7"
    assert ids.take(None, "eSc_textblock_7") == "eSc_textblock_7_2"
    assert ids.take("eSc_textblock_7", "eSc_textblock_7") == "eSc_textblock_7_3"
    assert ids.take("eSc_dummyblock_", "eSc_line_1") == "eSc_line_1"


# --- METS ------------------------------------------------------------------------------------------


def test_mets_with_images_urls_and_failed_parts() -> None:
    entries = [("f 001.jpg", "f 001.xml"), (None, None), (None, "https://example.org/f3.xml")]
    data = b"".join(mets.render(entries))
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    assert_clean_bytes(data)
    root = tree(data)
    assert root.xpath("m:fileSec/m:fileGrp/@USE", namespaces=M) == ["image", "export"]
    files = {f.get("ID"): dict(f[0].attrib) for f in root.iterfind(".//m:file", M)}
    href = f"{{{ns.XLINK}}}href"
    assert files == {
        "image1": {"LOCTYPE": "OTHER", "OTHERLOCTYPE": "FILE", href: "f 001.jpg"},
        "export1": {"LOCTYPE": "OTHER", "OTHERLOCTYPE": "FILE", href: "f 001.xml"},
        "export3": {"LOCTYPE": "URL", href: "https://example.org/f3.xml"},
    }
    pages = root.findall("m:structMap[@TYPE='physical']/m:div[@TYPE='document']/m:div[@TYPE='page']", M)
    assert [[f.get("FILEID") for f in d] for d in pages] == [["image1", "export1"], [], ["export3"]]


def test_mets_without_images_matches_upstream_sample() -> None:
    sample = etree.parse(str(FIXTURES / "escriptorium-tapuscorpus/alto/METS.xml"), parser()).getroot()
    names = sample.xpath("//m:FLocat/@xlink:href", namespaces={**M, "xlink": "http://www.w3.org/1999/xlink"})
    data = b"".join(mets.render([(None, n) for n in names]))
    assert_clean_bytes(data)
    ours = tree(data)
    for el in sample.iter("{*}FLocat"):  # the documented fix
        el.set("LOCTYPE", "OTHER")
        el.set("OTHERLOCTYPE", "FILE")
    assert shape(ours) == shape(sample)


def test_mets_of_100000_pages_streams_in_bounded_memory() -> None:
    """METS is rendered from the compact PageIndex in chunks, never from a list of all pages:
    the traced peak stays far below what 100,000 page tuples and one whole document would take
    (about 25 MB as one chunk), and the chunks put together are the same METS as for a few pages."""
    import tracemalloc

    from pipeline.naming import PageIndex

    index = PageIndex()
    for n in range(100_000):
        index.append(f"f{n:06d}.jpg" if n % 7 else None, f"f{n:06d}.xml")
    tracemalloc.start()
    try:
        total = largest = 0
        for chunk in mets.render(index):
            total += len(chunk)
            largest = max(largest, len(chunk))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 20_000_000
    assert largest < 1 << 20
    assert peak < 4 << 20, f"peak {peak / 1e6:.1f} MB"
    few = PageIndex()
    for names in [("a.jpg", "a.xml"), (None, "b.xml"), (None, None)]:
        few.append(*names)
    root = tree(b"".join(mets.render(few)))
    pages = root.findall("m:structMap/m:div/m:div", M)
    assert [[f.get("FILEID") for f in d] for d in pages] == [["image1", "export1"], ["export2"], []]


# --- text ------------------------------------------------------------------------------------------


def test_text_matches_spec_example() -> None:
    p1 = Part(1, 1, 0, "documents/1/f001.jpg", 10, 10, regions=(Region(1, 0, SQUARE, MAIN),), lines=(
        Line(2, 1, region_id=None, text="a stray line"),
        Line(1, 0, region_id=1, text="Fish & chips"),
        Line(3, 2, region_id=1, text=""),
        Line(4, 3, region_id=1, text=None),
    ))  # fmt: skip
    p2 = Part(2, 1, 1, "documents/1/x.png", 10, 10, name="Folio 2v", original_filename="f002.jpg",
              lines=(Line(5, 0, text="Another line"),))  # fmt: skip
    p3 = Part(3, 1, 2, "documents/1/f003.jpg", 10, 10, lines=(Line(6, 0, text=""),))
    out = b"".join(text.render(iter([p1, p2, p3]), RegionFilter()))
    assert out.decode("utf-8") == (
        "--------------- Element 1 (f001.jpg) ---------------\n"
        "Fish & chips\n"
        "a stray line\n"
        "--------------- Folio 2v (f002.jpg) ---------------\n"
        "Another line\n"
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("all", ["12", "ctrl\x01char", "0f1e", "6", "7", "9"]),
        ("title", ["12", "9"]),
        ("undefined", ["ctrl\x01char"]),
        ("orphan", ["6"]),
        ("stray", ["7"]),
        ("no-orphan", ["12", "ctrl\x01char", "0f1e", "7", "9"]),
        ("nothing", []),
    ],
)
def test_text_row_filter(name: str, expected: list[str]) -> None:
    texts = {"12": TEXT_3, "0f1e": TEXT_1, "6": "a stray line", "7": "   ", "9": "Title two"}
    out = b"".join(text.render([make_part()], FILTERS[name])).decode()
    rows = out.split("\n")[1:-1] if out else []
    assert rows == [texts.get(k, k) for k in expected]


# --- registry --------------------------------------------------------------------------------------


def test_registry() -> None:
    assert get("PAGEXML") is FORMATS["page"] and FORMATS["page"].tag == "pagexml"
    assert FORMATS["alto"].zipped and not FORMATS["text"].zipped and FORMATS["text"].suffix == "txt"
    with pytest.raises(UsageError, match="accepted: alto, page, text, exchange, tei, iiif, hocr, pagexml"):
        get("docx")


# --- structural comparison with real eScriptorium exports -----------------------------------------


def shape(root: etree._Element) -> list[tuple[str, dict[str, str], str]]:
    """Document-order (tag, attributes, text) of every element: what a parsed tree says."""
    return [
        (etree.QName(el).localname, dict(el.attrib), (el.text or "").strip() if len(el) else el.text or "")
        for el in root.iter(etree.Element)
    ]


def _pairs(value: str | None) -> tuple[tuple[int, int], ...] | None:
    if not value:
        return None
    nums = [int(v) for v in re.split(r"[ ,]", value.strip())]
    return tuple(zip(nums[::2], nums[1::2], strict=True))


def parse_alto(path: Path) -> tuple[Part, Document]:
    """Just enough of an ALTO reader to rebuild the Part an eScriptorium export came from."""
    root = etree.parse(str(path), parser()).getroot()
    tags = {
        t.get("ID"): Typology(int(t.get("ID")[2:]), t.get("LABEL")) for t in root.iterfind(".//a:OtherTag", A)
    }
    doc = Document(
        1, "sample",
        valid_block_types=tuple(t for k, t in tags.items() if k.startswith("BT")),
        valid_line_types=tuple(t for k, t in tags.items() if k.startswith("LT")),
    )  # fmt: skip
    regions, lines = [], []
    for rid, block in enumerate(root.iterfind(".//a:TextBlock", A), 1):
        dummy = block.get("ID").startswith("eSc_dummyblock_")
        if not dummy:
            box = _pairs(block.find("a:Shape/a:Polygon", A).get("POINTS"))
            regions.append(Region(rid, rid, box, tags.get(block.get("TAGREFS")), block.get("ID")))
        for tl in block.iterfind("a:TextLine", A):
            polygon = tl.find("a:Shape/a:Polygon", A)
            string = tl.find("a:String", A)
            wc = string.get("WC")
            lines.append(Line(
                len(lines) + 1, len(lines), _pairs(tl.get("BASELINE")),
                _pairs(polygon.get("POINTS")) if polygon is not None else None,
                None if dummy else rid, tags.get(tl.get("TAGREFS")), tl.get("ID"),
                string.get("CONTENT"), float(wc) if wc else None,
            ))  # fmt: skip
    pg = root.find(".//a:Page", A)
    part = Part(
        1, 1, int(pg.get("PHYSICAL_IMG_NR")), "documents/1/stored.png",
        int(pg.get("WIDTH")), int(pg.get("HEIGHT")),
        original_filename=root.findtext(".//a:fileName", namespaces=A),
        source=root.findtext(".//a:fileIdentifier", default="", namespaces=A),
        regions=tuple(regions), lines=tuple(lines),
    )  # fmt: skip
    return part, doc


def parse_page(path: Path) -> Part:
    """Just enough of a PAGE reader to rebuild the Part an eScriptorium export came from."""
    root = etree.parse(str(path), parser()).getroot()
    custom = re.compile(r"structure \{type:([^;]*);\}")
    types: dict[str, Typology] = {}

    def typology(el: etree._Element) -> Typology | None:
        found = custom.search(el.get("custom") or "")
        return types.setdefault(found[1], Typology(len(types) + 1, found[1])) if found else None

    regions, lines = [], []
    for rid, region in enumerate(root.iterfind(".//p:TextRegion", P), 1):
        dummy = region.get("id").startswith("eSc_dummyblock_")
        if not dummy:
            box = _pairs(region.find("p:Coords", P).get("points"))
            regions.append(Region(rid, rid, box, typology(region), region.get("id")))
        for tl in region.iterfind("p:TextLine", P):
            coords, baseline = tl.find("p:Coords", P), tl.find("p:Baseline", P)
            equiv = tl.find("p:TextEquiv", P)
            lines.append(Line(
                len(lines) + 1, len(lines), _pairs(baseline.get("points")) if baseline is not None else None,
                _pairs(coords.get("points")) if coords is not None else None, None if dummy else rid,
                typology(tl), tl.get("id"), equiv.findtext("p:Unicode", namespaces=P),
                float(equiv.get("conf")) if equiv.get("conf") else None,
            ))  # fmt: skip
    pg = root.find("p:Page", P)
    return Part(
        1, 1, 0, "documents/1/stored.png", int(pg.get("imageWidth")), int(pg.get("imageHeight")),
        original_filename=pg.get("imageFilename"), source=root.find("p:Metadata", P).get("externalRef") or "",
        created_at=datetime.fromisoformat(root.findtext("p:Metadata/p:Created", namespaces=P)),
        updated_at=datetime.fromisoformat(root.findtext("p:Metadata/p:LastChange", namespaces=P)),
        regions=tuple(regions), lines=tuple(lines),
    )  # fmt: skip


ALTO_SAMPLES = sorted((FIXTURES / "escriptorium-alto-cremma-mss-20").glob("*.xml")) + sorted(
    (FIXTURES / "escriptorium-tapuscorpus/alto").glob("*_default.xml")
)


@pytest.mark.parametrize("path", ALTO_SAMPLES, ids=lambda p: p.name)
def test_alto_structure_matches_escriptorium(path: Path) -> None:
    part, doc = parse_alto(path)
    data = b"".join(alto.render(part, doc, RegionFilter()))
    assert_clean_bytes(data)
    ours, theirs = tree(data), etree.parse(str(path), parser()).getroot()
    assert ours.nsmap == theirs.nsmap and ours.attrib == theirs.attrib
    # Tags: same OtherTags, but ascending ids (documented fix); everything else identical in order
    their_tags = theirs.find("a:Tags", A)
    ours_tags = ours.find("a:Tags", A)
    assert sorted(t.items() for t in ours_tags) == sorted(t.items() for t in their_tags)
    ids = [t.get("ID") for t in ours_tags]
    assert ids == sorted(ids, key=lambda t: (t[:2], int(t[2:])))
    ours.remove(ours_tags)
    theirs.remove(their_tags)
    assert shape(ours) == shape(theirs)


PAGE_SAMPLES = sorted((FIXTURES / "escriptorium-tapuscorpus/page").glob("*.xml"))


@pytest.mark.parametrize("path", PAGE_SAMPLES, ids=lambda p: p.name)
def test_page_structure_matches_escriptorium(path: Path) -> None:
    part = parse_page(path)
    data = b"".join(page.render(part, DOC, RegionFilter()))
    assert_clean_bytes(data)
    assert validate(str(path)) != []  # the upstream file is invalid: its dummy region has no Coords
    ours, theirs = tree(data), etree.parse(str(path), parser()).getroot()
    for region in theirs.iterfind(".//p:TextRegion[@id='eSc_dummyblock_']", P):  # the documented fix
        coords = etree.Element(f"{{{page.PAGE_NS}}}Coords", points=f"0,0 {part.width},0 {part.width},"
                               f"{part.height} 0,{part.height}")  # fmt: skip
        region.insert(0, coords)
    assert ours.nsmap == theirs.nsmap
    assert shape(ours) == shape(theirs)


def test_page_custom_types_when_block_and_line_type_ids_overlap() -> None:
    """eScriptorium numbers core_blocktype and core_linetype from 1 each: BlockType 1 is Title,
    LineType 1 is Main. Each element must name its own table's type, whichever comes first."""
    title_block, main_line = Typology(1, "Title"), Typology(1, "Main")
    main_block, heading_line = Typology(2, "Main"), Typology(2, "Heading")
    regions = (Region(10, 0, SQUARE, title_block, "r1"), Region(11, 1, SQUARE, main_block, "r2"))
    lines = (
        Line(20, 0, ((1, 40), (99, 40)), SQUARE, 10, heading_line, "l1", "INCIPIT"),
        Line(21, 1, ((1, 45), (99, 45)), SQUARE, 11, main_line, "l2", "text"),
        Line(22, 2, ((1, 48), (99, 48)), SQUARE, 11, heading_line, "l3", "more"),
    )
    part = Part(1, 7, 0, "documents/7/f.jpg", 1000, 1400, regions=regions, lines=lines)
    doc = Document(7, "doc", valid_block_types=(title_block, main_block),
                   valid_line_types=(main_line, heading_line), block_types=(title_block, main_block))
    root = tree(b"".join(page.render(part, doc, RegionFilter.parse(None, doc))))
    customs = {e.get("id"): e.get("custom") for e in root.iter(f"{{{page.PAGE_NS}}}TextRegion",
                                                               f"{{{page.PAGE_NS}}}TextLine")}
    assert customs == {
        "r1": "structure {type:Title;}", "r2": "structure {type:Main;}",
        "l1": "structure {type:Heading;}", "l2": "structure {type:Main;}", "l3": "structure {type:Heading;}",
    }
