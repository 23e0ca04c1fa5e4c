"""Archives that agree with themselves: each XML names the image entry beside it, each image
entry's name says what its bytes are, and ``pipeline verify`` checks both."""

from __future__ import annotations

import posixpath
import zipfile
from pathlib import Path, PurePath

import pytest
from lxml import etree

from pipeline.cli import main
from pipeline.demo import build_demo

#: what files of each extension start with (written out here, independently of the code under test)
MAGIC = {
    ".jpg": (b"\xff\xd8\xff",),
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".tif": (b"II*\x00", b"MM\x00*"),
    ".webp": (b"RIFF",),
}
METS = "{http://www.loc.gov/METS/}"
XLINK = "{http://www.w3.org/1999/xlink}href"


def image_reference(xml: bytes) -> str | None:
    """ALTO ``sourceImageInformation/fileName`` or PAGE ``Page/@imageFilename``."""
    root = etree.fromstring(xml)
    for el in root.iter("{*}fileName", "{*}Page"):
        return el.text if el.tag.endswith("fileName") else el.get("imageFilename")
    return None


def mets_pages(zf: zipfile.ZipFile) -> list[tuple[str | None, str | None]]:
    """(image, xml) entry names per METS page."""
    root = etree.fromstring(zf.read("METS.xml"))
    href = {f.get("ID"): f.find(f"{METS}FLocat").get(XLINK) for f in root.iter(f"{METS}file")}
    pages = []
    for div in root.iter(f"{METS}div"):
        if div.get("TYPE") == "page":
            ids = [f.get("FILEID") for f in div]
            image = next((href[i] for i in ids if i.startswith("image")), None)
            xml = next((href[i] for i in ids if i.startswith("export")), None)
            pages.append((image, xml))
    return pages


def export(corpus: Path, out: Path, document: int, *args: str) -> None:
    code = main(["-q", "export", "--corpus", str(corpus), "--document", str(document), "--images",
                 "--registry", str(out.parent / "registry.sqlite"), "-o", str(out), *args])
    assert code == 0


@pytest.mark.parametrize(
    "args",
    [
        ("--format", "alto"),  # pass-through
        ("--format", "page", "--image-format", "jpeg"),  # transcoded: every name becomes .jpg
        ("--format", "page", "--image-format", "original", "--image-max-size", "300"),  # resized
    ],
    ids=["passthrough", "jpeg", "resized-original"],
)
def test_each_xml_names_the_image_entry_beside_it(
    demo_corpus: Path, tmp_path: Path, args: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo document has ``f003.jpg`` and ``f003.png`` (a JPEG stored as such): their entries
    clash. Every XML must name the image entry of its own page, that entry must exist, its bytes
    must be what its extension says, and verify agrees."""
    out = tmp_path / "a.zip"
    export(demo_corpus, out, 1, *args)
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert sum(PurePath(n).stem.startswith("f003") for n in names if not n.endswith(".xml")) == 2
        for image, xml in mets_pages(zf):
            assert image is not None and xml is not None
            assert image_reference(zf.read(xml)) == image, xml
            head = zf.read(image)[:16]
            suffix = posixpath.splitext(image)[1].lower()
            assert head.startswith(MAGIC[".jpg" if suffix == ".jpeg" else suffix]), (image, head)
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0, capsys.readouterr().out


def rewrite(archive: Path, target: Path, changes: dict[str, bytes]) -> None:
    """A copy of ``archive`` with some entries' bytes replaced (the CRCs are right)."""
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, changes.get(info.filename, src.read(info.filename)))


def test_verify_finds_xml_naming_a_missing_image_and_bytes_unlike_their_extension(
    demo_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.zip"
    export(demo_corpus, good, 1, "--format", "alto")
    with zipfile.ZipFile(good) as zf:
        (first_image, first_xml), (second_image, _), *_ = mets_pages(zf)
        assert first_image and first_xml and second_image
        xml = zf.read(first_xml).replace(f">{first_image}<".encode(), b">elsewhere.jpg<")
        png = b"\x89PNG\r\n\x1a\n" + zf.read(second_image)[8:]
    bad = tmp_path / "bad.zip"
    rewrite(good, bad, {first_xml: xml, second_image: png})
    capsys.readouterr()
    assert main(["verify", str(bad)]) == 1
    problems = capsys.readouterr().out.strip().splitlines()
    assert any(first_xml in p and "'elsewhere.jpg'" in p and "not in the archive" in p
               for p in problems), problems
    assert any(second_image in p and "not a JPEG" in p for p in problems), problems
    assert len(problems) == 2, problems



def test_verify_accepts_the_xml_of_a_page_whose_image_was_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A page whose image was skipped as bad keeps its XML, which names an image that is not in
    the archive: METS gives that page no image, so verify accepts it."""
    corpus = tmp_path / "corpus.sqlite"
    build_demo(corpus, documents=1, parts=3, lines=4, image_size=(300, 400), image_format="jpeg", seed=2)
    stored = sorted((tmp_path / "corpus.media").rglob("*.jpg"))
    stored[1].write_bytes(stored[1].read_bytes()[:2000])  # cut short: a bad image
    out = tmp_path / "a.zip"
    code = main(["-q", "export", "--corpus", str(corpus), "--document", "1", "--images", "--on-error", "skip",
                 "-o", str(out)])
    assert code == 1, capsys.readouterr().err
    with zipfile.ZipFile(out) as zf:
        assert [image is None for image, _ in mets_pages(zf)].count(True) == 1
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0, capsys.readouterr().out
