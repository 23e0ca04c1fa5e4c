"""hOCR: every page valid per hocr-spec (and well-formed XML), the mapping, edge cases."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
from lxml import etree
from test_export import FILTERS as CLI_FILTERS
from test_export import export as export_store
from test_export import run
from test_formats import DOC, FILTERS, TEXT_3, make_part

from pipeline.formats import hocr
from pipeline.model import Line, Part, Region
from pipeline.select import layout
from pipeline.validate import parser
from pipeline.verify import verify_archive
from tests.pgcluster import Store

H = {"h": hocr.XHTML_NS}
FIXTURES = Path(__file__).parent / "fixtures"


def spec_errors(data: bytes, tmp_path: Path, name: str = "page.html") -> list[str]:
    """hocr-spec's errors (standard profile: capabilities and attributes checked) for one page."""
    from hocr_spec import HocrValidator  # here: importing it (and `future`) changes the stdlib's modules

    path = tmp_path / name
    path.write_bytes(data)
    report = HocrValidator("standard").validate(str(path))
    return [str(item) for item in report.items if item.level in ("ERROR", "FATAL")]


def props(element: etree._Element) -> dict[str, str]:
    return dict(p.split(" ", 1) for p in element.get("title").split("; "))


def test_hocr_spec_check_can_fail(tmp_path: Path) -> None:
    data = b"".join(hocr.render(make_part(), DOC, FILTERS["all"]))
    assert spec_errors(data.replace(b"x_wconf 90", b"x_wconf 900"), tmp_path)
    assert spec_errors(data.replace(b" ocrp_dir", b""), tmp_path)  # dir="rtl" needs the capability


@pytest.mark.parametrize("clean_ids", [False, True])
@pytest.mark.parametrize("name", FILTERS)
def test_every_filter_gives_valid_hocr(name: str, clean_ids: bool, tmp_path: Path) -> None:
    data = b"".join(hocr.render(make_part(clean_ids), DOC, FILTERS[name]))
    assert spec_errors(data, tmp_path) == []
    root = etree.fromstring(data, parser())  # polyglot: well-formed XML too
    ids = root.xpath("//@id")
    assert len(ids) == len(set(ids))
    for value in root.xpath("//@title"):
        assert re.fullmatch(r"[^;]+(; [a-z_]+ [^;]+)*", value), value


def test_structure_boxes_baselines_confidences() -> None:
    part = make_part(clean_ids=True)
    root = etree.fromstring(b"".join(hocr.render(part, DOC, FILTERS["all"])), parser())
    assert root.findtext("h:head/h:title", namespaces=H) == "Element 3"
    metas = {m.get("name"): m.get("content") for m in root.iterfind("h:head/h:meta", H) if m.get("name")}
    assert metas["ocr-system"] == "pipeline" and "ocr_line" in metas["ocr-capabilities"].split()
    page = root.find(".//h:div[@class='ocr_page']", H)
    assert props(page) == {"image": '"f001.jpg"', "bbox": "0 0 1000 1400", "ppageno": "2"}
    lay = layout(part, FILTERS["all"])
    areas = page.findall("h:div[@class='ocr_carea']", H)
    assert [a.get("id") for a in areas] == [f"b{r.id}" for r, _ in lay.blocks] + ["eSc_dummyblock_"]
    types = [r.type.name if r.type else None for r, _ in lay.blocks]
    assert [a.get("data-type") for a in areas] == types + [None]
    lines = {s.get("id"): s for s in page.iterfind(".//h:span[@class='ocr_line']", H)}
    expected = [f"l{li.id}" for _, ls in lay.blocks for li in ls] + [f"l{li.id}" for li in lay.orphans]
    assert list(lines) == expected
    # mask box; baseline slope/offset from the box's bottom-left; confidence in percent, clamped
    assert props(lines["l1"]) == {"bbox": "0 0 100 50", "baseline": "0.010204 -10.01", "x_wconf": "0"}
    assert props(lines["l5"])["x_wconf"] == "100" and props(lines["l3"])["x_wconf"] == "90"
    assert props(lines["l2"])["bbox"] == "1 45 99 48"  # no mask: the baseline's box
    assert props(lines["l4"]) == {"bbox": "0 10 101 61"}  # no geometry: the region's box
    assert lines["l3"].get("dir") == "rtl" and lines["l3"].text == TEXT_3
    assert lines["l1"].get("dir") is None and lines["l1"].text == "Fish & chips <b> \"q\" 'a'"
    assert lines["l5"].text == "ctrlchar" and lines["l8"].text is None


def test_orphans_and_untyped_region_without_geometry(tmp_path: Path) -> None:
    part = Part(5, 7, 0, "documents/7/a;b\".png", 200, 300, regions=(Region(1, 0, (), None, None),),
                lines=(Line(1, 0, None, None, 1, None, None, "\u05e9\u05dc\u05d5\u05dd"),
                       Line(2, 1, ((5, 5), (5, 50)), None, None, None, "", None)))
    data = b"".join(hocr.render(part, DOC, FILTERS["all"]))
    assert spec_errors(data, tmp_path) == []
    root = etree.fromstring(data, parser())
    area = root.find(".//h:div[@class='ocr_carea']", H)
    assert area.get("title") is None and area.get("data-type") is None
    first, second = root.iterfind(".//h:span", H)
    assert props(first) == {"bbox": "0 0 200 300"} and first.get("dir") == "rtl"  # the page's box
    assert props(second) == {"bbox": "5 5 5 50"}  # a vertical baseline has no hOCR slope
    assert props(root.find(".//h:div[@class='ocr_page']", H))["image"] == '"a%3Bb%22.png"'


@pytest.mark.parametrize("regions", CLI_FILTERS)
def test_demo_corpus_through_the_cli(demo_corpus: Path, tmp_path: Path, regions: str | None) -> None:
    args = ["--regions", regions] if regions else []
    archive = export(demo_corpus, tmp_path / "h.zip", "--format", "hocr", *args)
    assert verify_archive(archive) == []
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        assert names[-1] == "METS.xml" and len(names) == 5
        mets = zf.read("METS.xml")
        for name in names[:-1]:
            assert name.endswith(".html") and f'xlink:href="{name}"'.encode() in mets
            assert spec_errors(zf.read(name), tmp_path, name) == [], name


def test_images_and_fixture(tmp_path: Path, demo_corpus: Path) -> None:
    archive = export(demo_corpus, tmp_path / "i.zip", "--format", "hocr", "--images", "--image-format", "png")
    assert verify_archive(archive) == []
    with zipfile.ZipFile(archive) as zf:
        pages = [n for n in zf.namelist() if n.endswith(".html")]
        for name in pages:
            page = etree.fromstring(zf.read(name), parser()).find(".//h:div[@class='ocr_page']", H)
            image = props(page)["image"].strip('"')
            assert image == name.replace(".html", ".png") and image in zf.namelist()
        assert "f003_3.html" in pages  # a clashing name: the page names its image's entry
    out = tmp_path / "f.zip"
    assert run("export", "--source", FIXTURES / "escriptorium-tapuscorpus" / "page", "--format", "hocr",
               "-o", out) == 0
    with zipfile.ZipFile(out) as zf:
        texts = [t for n in zf.namelist() if n.endswith(".html")
                 for t in etree.fromstring(zf.read(n), parser()).xpath("//h:span/text()", namespaces=H)]
    assert len(texts) > 40


def export(corpus: Path, out: Path, *args: str) -> Path:
    """Export document 1 of the SQLite demo corpus (test_export's helper takes a store)."""
    return export_store(Store("sqlite", str(corpus)), out, *args)
