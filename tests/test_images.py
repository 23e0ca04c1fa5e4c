"""The image stage through the public interface: ``pipeline.cli.main`` and ``export_document``."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import anyio
import pytest
import pyvips
from lxml import etree

from pipeline import images
from pipeline.cli import main
from pipeline.demo import build_demo
from pipeline.errors import PipelineError, UsageError
from pipeline.export import ExportOptions, export_document
from pipeline.images import ImageOptions
from pipeline.model import Part, bbox
from pipeline.registry import Registry
from pipeline.store import Corpus
from pipeline.validate import validate

ALTO = "{http://www.loc.gov/standards/alto/ns-v4#}"
PAGE = "{http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15}"
METS = "{http://www.loc.gov/METS/}"
XLINK = "{http://www.w3.org/1999/xlink}href"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A corpus of its own (tests change its images): 1 document x 3 parts, 600x800 JPEGs.

    Image sizes are stored, as a corpus that has seen its images once has them: a bad image is then
    found by the image stage, not by the store when it reads the size.
    """
    path = tmp_path / "corpus.sqlite"
    build_demo(path, documents=1, parts=3, lines=6, image_size=(600, 800), image_format="jpeg", seed=1)
    with Corpus.open(path) as store, store.transaction() as writer:
        for part in parts_of(path):
            writer.set_image_size(part.id, part.width, part.height)
    return path


def parts_of(corpus: Path) -> list[Part]:
    async def read() -> list[Part]:
        with Corpus.open(corpus) as store:
            document = await store.document(1)
            return [part async for part in store.parts(document)]

    return anyio.run(read)


def export(corpus: Path, out: Path, *args: str) -> int:
    return main(["-q", "export", "--corpus", str(corpus), "--document", "1", "-o", str(out), *args])


def xml_errors(archive: zipfile.ZipFile) -> list[str]:
    return [f"{n}: {e}" for n in archive.namelist() if n.endswith(".xml")
            for e in validate(io.BytesIO(archive.read(n)))]


def mets_pages(archive: zipfile.ZipFile) -> list[list[str]]:
    """The FLocat names each METS page div points to, in order."""
    root = etree.fromstring(archive.read("METS.xml"))
    href = {f.get("ID"): f.find(f"{METS}FLocat").get(XLINK) for f in root.iter(f"{METS}file")}
    return [[href[p.get("FILEID")] for p in div.iter(f"{METS}fptr")]
            for div in root.iter(f"{METS}div") if div.get("TYPE") == "page"]


def line_polygons(xml: etree._Element) -> dict[str, tuple[tuple[float, float], ...]]:
    """Text -> polygon of each ALTO or PAGE text line that has both."""
    found = {}
    for line in xml.iter(f"{ALTO}TextLine"):
        polygon, string = line.find(f"{ALTO}Shape/{ALTO}Polygon"), line.find(f"{ALTO}String")
        if polygon is not None and string is not None:
            v = [float(x) for x in polygon.get("POINTS").split()]
            found[string.get("CONTENT")] = tuple(zip(v[::2], v[1::2], strict=True))
    for line in xml.iter(f"{PAGE}TextLine"):
        text = line.findtext(f"{PAGE}TextEquiv/{PAGE}Unicode")
        if text:
            points = line.find(f"{PAGE}Coords").get("points").split()
            found[text] = tuple(tuple(map(float, p.split(","))) for p in points)
    return found


def test_resized_coordinates_land_on_the_same_content(corpus: Path, tmp_path: Path) -> None:
    """Each line box is painted in its own shade; after resizing, each line's polygon finds its shade."""
    part = parts_of(corpus)[0]
    shades: dict[str, int] = {}
    page = pyvips.Image.black(part.width, part.height) + 255
    for n, line in enumerate(line for line in part.lines if line.box and line.text):
        x0, y0, x1, y1 = line.box
        shades[line.text] = 10 + 30 * n
        page = page.draw_rect(shades[line.text], int(x0), int(y0), int(x1 - x0), int(y1 - y0), fill=True)
    page.cast("uchar").write_to_file(part.image_path)
    image_name, xml_name = f"{Path(part.image_filename).stem}.png", f"{Path(part.image_filename).stem}.xml"

    for fmt in ("alto", "page"):
        out = tmp_path / f"{fmt}.zip"
        assert export(corpus, out, "--format", fmt, "--images", "--image-max-size", "300",
                      "--image-format", "png") == 0
        with zipfile.ZipFile(out) as zf:
            assert xml_errors(zf) == []
            image = pyvips.Image.new_from_buffer(zf.read(image_name), "")
            xml = etree.fromstring(zf.read(xml_name))
        assert (image.width, image.height) == (225, 300)  # 600x800 → longest side 300
        if fmt == "alto":
            size = xml.find(f".//{ALTO}Page")
            assert (size.get("WIDTH"), size.get("HEIGHT")) == ("225", "300")
            space = xml.find(f".//{ALTO}PrintSpace")
            assert (space.get("WIDTH"), space.get("HEIGHT")) == ("225", "300")
        else:
            size = xml.find(f".//{PAGE}Page")
            assert (size.get("imageWidth"), size.get("imageHeight")) == ("225", "300")
        polygons = line_polygons(xml)
        assert len(shades) >= 3 and set(shades) <= set(polygons)
        for text, shade in shades.items():
            x0, y0, x1, y1 = (round(v) for v in bbox(polygons[text]))
            inside = image.crop(x0 + 2, y0 + 2, x1 - x0 - 4, y1 - y0 - 4)
            assert abs(inside.avg() - shade) < 8, f"line {text!r} polygon is not on its rectangle"
        assert image.crop(0, 0, 4, 4).avg() > 250  # and the page around them stays white


def stems(corpus: Path) -> list[str]:
    return [Path(part.image_filename).stem for part in parts_of(corpus)]


def test_format_change_renames_entries_xml_and_mets(corpus: Path, tmp_path: Path) -> None:
    a, b, c = stems(corpus)
    for fmt, image_format, suffix in (("alto", "png", ".png"), ("page", "webp", ".webp")):
        out = tmp_path / f"{fmt}.zip"
        assert export(corpus, out, "--format", fmt, "--images", "--image-format", image_format,
                      "--image-quality", "80") == 0
        with zipfile.ZipFile(out) as zf:
            names = zf.namelist()
            assert names == [a + suffix, a + ".xml", b + suffix, b + ".xml", c + suffix, c + ".xml",
                             "METS.xml"]
            assert xml_errors(zf) == []
            assert mets_pages(zf)[1] == [b + suffix, b + ".xml"]
            xml = etree.fromstring(zf.read(b + ".xml"))
            decoded = pyvips.Image.new_from_buffer(zf.read(b + suffix), "")
        named = xml.findtext(f".//{ALTO}fileName") if fmt == "alto" else xml.find(f".//{PAGE}Page").get(
            "imageFilename")
        assert named == b + suffix
        assert decoded.get("vips-loader").startswith(image_format)


def test_original_without_resize_passes_bytes_through(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.zip"
    assert export(corpus, out, "--images") == 0
    with zipfile.ZipFile(out) as zf:
        for part in parts_of(corpus):
            assert zf.read(part.image_filename) == Path(part.image_path).read_bytes()


def damage(path: Path, kind: str) -> None:
    if kind == "missing":
        path.unlink()
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(b"not an image at all\n" * 50)


@pytest.mark.parametrize("image_format", ["original", "jpeg"])
@pytest.mark.parametrize("kind", ["missing", "truncated", "garbage"])
def test_bad_image_fails_the_export(
    corpus: Path, tmp_path: Path, kind: str, image_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = parts_of(corpus)[1]
    damage(Path(bad.image_path), kind)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert export(corpus, out_dir / "a.zip", "--images", "--image-format", image_format) == 1
    error = capsys.readouterr().err
    assert error.startswith("pipeline: error: document ")
    assert "part 2" in error and bad.image_filename in error
    assert list(out_dir.iterdir()) == []  # nothing at the final name, no partial file either
    (record,) = Registry(corpus).list()
    assert record.status == "failed" and bad.image_filename in (record.error or "")


@pytest.mark.parametrize("image_format", ["original", "jpeg"])
@pytest.mark.parametrize("kind", ["missing", "truncated", "garbage"])
def test_bad_image_is_skipped_and_reported(
    corpus: Path, tmp_path: Path, kind: str, image_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = parts_of(corpus)[1]
    damage(Path(bad.image_path), kind)
    out = tmp_path / "a.zip"
    assert export(corpus, out, "--images", "--image-format", image_format, "--on-error", "skip") == 1
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "page 2" in err_lines[0] and bad.image_filename in err_lines[0]
    a, b, c = stems(corpus)
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == [a + ".jpg", a + ".xml", b + ".xml", c + ".jpg", c + ".xml",
                                 "export-report.json", "METS.xml"]
        assert xml_errors(zf) == []
        assert mets_pages(zf) == [[a + ".jpg", a + ".xml"], [b + ".xml"], [c + ".jpg", c + ".xml"]]
        (entry,) = json.loads(zf.read("export-report.json"))
    assert entry["part_id"] == bad.id and entry["page"] == 2 and entry["file"] == bad.image_filename
    assert entry["error"]
    (record,) = Registry(corpus).list()
    assert record.status == "complete" and record.report == [entry]


def test_a_page_the_encoder_cannot_write_is_a_bad_image_not_an_output_error(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A long scroll of 66,000 x 8 pixels reads fine but JPEG cannot hold it (65,500 at most): the
    transcode fails though the image reads and the disk takes more bytes. That failure is the
    page's (skipped and reported, the export completes), never "cannot write": only evidence from
    the output file makes an output error."""
    bad = parts_of(corpus)[1]
    pyvips.Image.black(66_000, 8, bands=3).write_to_file(str(Path(bad.image_path).with_suffix(".png")))
    Path(bad.image_path).with_suffix(".png").replace(bad.image_path)  # its name stays .jpg, as stored
    with Corpus.open(corpus) as store, store.transaction() as writer:
        writer.set_image_size(bad.id, 66_000, 8)
    out = tmp_path / "a.zip"
    assert export(corpus, out, "--images", "--image-format", "jpeg", "--on-error", "skip") == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "page 2" in line and "65500" in line and "cannot write" not in line
    with zipfile.ZipFile(out) as zf:
        (entry,) = json.loads(zf.read("export-report.json"))
    assert entry["page"] == 2 and "Maximum supported image dimension" in entry["error"]


class SpillSpy:
    """Records the spill files the stage creates, to check that each one is closed (= removed)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.files: list[Any] = []
        real = tempfile.TemporaryFile

        def spy(*args: Any, **kwargs: Any) -> Any:
            fh = real(*args, **kwargs)
            self.files.append(fh)
            return fh

        monkeypatch.setattr(images.tempfile, "TemporaryFile", spy)

    def all_closed(self) -> bool:
        return bool(self.files) and all(fh.closed for fh in self.files)


def run_export(
    corpus: Path, out: Path, options: ExportOptions, *, spy: SpillSpy | None = None, stop: str = "cancel"
) -> Any:
    """``export_document`` on the corpus; with ``spy``, the source cancels the export or fails
    (``stop``) as soon as a spill file exists."""

    class Source:
        def __init__(self, store: Corpus, scope: anyio.CancelScope) -> None:
            self.store, self.scope = store, scope

        async def parts(self, document: Any, layer: str = "manual", part_ids: Any = None) -> Any:
            async for n, part in aenumerate(self.store.parts(document, layer, part_ids)):
                if spy is not None and n == 2:
                    with anyio.fail_after(10):
                        while not spy.files:
                            await anyio.sleep(0.01)
                    if stop == "fail":
                        raise PipelineError("the source broke")
                    self.scope.cancel()
                yield part

    async def go() -> Any:
        with Corpus.open(corpus) as store, anyio.CancelScope() as scope:
            document = await store.document(1)
            return await export_document(Source(store, scope), document, options, str(out))

    return anyio.run(go)


async def aenumerate(items: Any) -> Any:
    n = 0
    async for item in items:
        yield n, item
        n += 1


def spill_options(**kwargs: Any) -> ExportOptions:
    image = ImageOptions(format="jpeg", lookahead=3)
    return ExportOptions(images=True, image=image, **kwargs)


def test_spill_files_removed_after_success(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = SpillSpy(monkeypatch)
    result = run_export(corpus, tmp_path / "a.zip", spill_options(on_error="skip"))
    assert result.parts == 3 and spy.all_closed()
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        for stem in stems(corpus):
            assert pyvips.Image.new_from_buffer(zf.read(stem + ".jpg"), "").width == 600


def test_spill_files_removed_after_failure(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = SpillSpy(monkeypatch)
    with pytest.raises(PipelineError, match="the source broke"):
        run_export(corpus, tmp_path / "a.zip", spill_options(on_error="skip"), spy=spy, stop="fail")
    assert spy.all_closed() and not (tmp_path / "a.zip").exists()

    damage(Path(parts_of(corpus)[1].image_path), "truncated")
    with pytest.raises(PipelineError, match="part 2"):
        run_export(corpus, tmp_path / "a.zip", spill_options())
    assert all(fh.closed for fh in spy.files) and not (tmp_path / "a.zip").exists()


def test_spill_files_removed_after_cancellation(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = SpillSpy(monkeypatch)
    assert run_export(corpus, tmp_path / "a.zip", spill_options(on_error="skip"), spy=spy) is None
    assert spy.all_closed() and not (tmp_path / "a.zip").exists()


def test_unsupported_format_is_a_usage_error(corpus: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    unsupported = next(f for f in images.FORMATS if f not in images.supported_formats())
    assert export(corpus, tmp_path / "a.zip", "--images", "--image-format", unsupported) == 2
    error = capsys.readouterr().err
    assert repr(unsupported) in error and "supported: original, jpeg" in error
    with pytest.raises(UsageError, match="bmp"):
        ImageOptions(format="bmp")
    with pytest.raises(UsageError, match="quality"):
        ImageOptions(format="jpeg", quality=0)


def test_closing_a_running_transcode_kills_it_and_closes_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Released while libvips still writes (a 36 MP noise PNG takes seconds to encode), a transcode
    stops with SpoolClosed instead of finishing, and its temporary file is closed once it stops."""
    big = tmp_path / "noise.jpg"
    pyvips.Image.gaussnoise(6000, 6000, sigma=60, mean=128).cast("uchar").jpegsave(str(big), Q=90)
    part = Part(id=1, document_id=1, order=0, image="noise.jpg", width=6000, height=6000,
                image_path=str(big))
    spy = SpillSpy(monkeypatch)

    async def go() -> None:
        stage = images.ImageStage(ImageOptions(format="png"), spill_dir=tmp_path)
        parts_send, parts = anyio.create_memory_object_stream[Part](1)
        jobs_send, jobs = anyio.create_memory_object_stream[tuple[Part, images.ImageJob]](1)
        with anyio.fail_after(60):
            async with stage, anyio.create_task_group() as tg:
                tg.start_soon(stage.feed, parts, jobs_send)
                async with parts_send, jobs:
                    await parts_send.send(part)
                    _, job = await jobs.receive()
                    while not spy.files:  # libvips has started writing
                        await anyio.sleep(0.005)
                    stage.release(job)
                    with pytest.raises(images.SpoolClosed):
                        await job.data()

    anyio.run(go)
    assert spy.all_closed()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".pipeline-spool-")] == []


#: geometric attributes by axis: x, y, or alternating x y (point lists)
X_ATTRS, Y_ATTRS = {"HPOS", "WIDTH", "imageWidth"}, {"VPOS", "HEIGHT", "imageHeight"}
POINT_ATTRS = {"POINTS", "BASELINE", "points"}
FILE_ATTRS = {"imageFilename", "fileName"}


def _geometry(data: bytes) -> tuple[dict[tuple[str, str], list[float]], dict[tuple[str, str], str]]:
    """Every geometric attribute of a page file as numbers, and every other attribute as text,
    keyed by (``grandparent/parent/element`` local names and the element's path, attribute name)."""
    root = etree.fromstring(data)
    doc = root.getroottree()
    numbers, others = {}, {}
    for el in root.iter():
        where = "/".join(etree.QName(e).localname for e in [*el.iterancestors()][1::-1] + [el])
        for name, value in el.attrib.items():
            key = (f"{where} {doc.getpath(el)}", name)
            if name in X_ATTRS | Y_ATTRS | POINT_ATTRS:
                numbers[key] = [float(v) for v in value.replace(",", " ").split()]
            elif name not in FILE_ATTRS:
                others[key] = value
    return numbers, others


def test_downscaling_scales_every_coordinate_on_its_own_axis(tmp_path: Path) -> None:
    """601x800 pages fitted into 300 px become 225x300: x scales by 225/601, y by 300/800 (not the
    same). Every coordinate of every element (ALTO block/line/String boxes, block and line shapes,
    baselines; PAGE region and line Coords, baselines) must be the unscaled export's times its
    axis' factor; every other attribute must be unchanged."""
    corpus = tmp_path / "c.sqlite"
    build_demo(corpus, documents=1, parts=2, lines=12, image_size=(601, 800), image_format="jpeg", seed=3)
    sx, sy = 225 / 601, 300 / 800
    assert sx != sy
    seen: dict[str, set[str]] = {"alto": set(), "page": set()}
    for fmt, tolerance in (("alto", 0.01), ("page", 1.0)):  # ALTO keeps decimals, PAGE truncates
        plain, small = tmp_path / f"{fmt}.zip", tmp_path / f"{fmt}-small.zip"
        assert export(corpus, plain, "--format", fmt) == 0
        assert export(corpus, small, "--format", fmt, "--images", "--image-format", "jpeg",
                      "--image-max-size", "300") == 0
        with zipfile.ZipFile(plain) as a, zipfile.ZipFile(small) as b:
            names = [n for n in a.namelist() if n.endswith(".xml") and n != "METS.xml"]
            assert len(names) == 2 and xml_errors(b) == []
            for name in names:
                before, before_other = _geometry(a.read(name))
                after, after_other = _geometry(b.read(name))
                assert after_other == before_other, name
                assert after.keys() == before.keys(), name
                for (path, attr), values in before.items():
                    got = after[path, attr]
                    if attr in POINT_ATTRS:
                        factors = [sx, sy] * (len(values) // 2)
                    else:
                        factors = [sx if attr in X_ATTRS else sy] * len(values)
                    expected = [v * f for v, f in zip(values, factors, strict=True)]
                    assert len(got) == len(expected), (name, path, attr)
                    assert all(abs(g - e) <= tolerance for g, e in zip(got, expected, strict=True)), \
                        (name, path, attr, values, got, expected)
                    seen[fmt].add(f"{path.split()[0]}@{attr}")
    block, line = "Page/PrintSpace/TextBlock", "PrintSpace/TextBlock/TextLine"
    string = "TextBlock/TextLine/String"
    assert seen["alto"] >= {
        "alto/Layout/Page@WIDTH", "Layout/Page/PrintSpace@HEIGHT", "TextBlock/Shape/Polygon@POINTS",
        "TextLine/Shape/Polygon@POINTS", f"{line}@BASELINE",
        *(f"{el}@{a}" for el in (block, line, string) for a in ("HPOS", "VPOS", "WIDTH", "HEIGHT")),
    }, seen["alto"]
    assert seen["page"] >= {
        "PcGts/Page@imageWidth", "PcGts/Page@imageHeight", "Page/TextRegion/Coords@points",
        "TextRegion/TextLine/Coords@points", "TextRegion/TextLine/Baseline@points",
    }, seen["page"]
