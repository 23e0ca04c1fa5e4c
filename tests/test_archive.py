"""The streaming zip, the sinks it writes into (atomic local files, stdout, open_sink), and entry naming."""

from __future__ import annotations

import hashlib
import pathlib
import random
import zipfile
from datetime import datetime
from pathlib import Path

import pytest

from pipeline.archive import CHUNK, ZipArchive
from pipeline.naming import EntryNamer, output_name, safe_basename, slug
from pipeline.sinks import TEMP_PREFIX, LocalFileSink, StdoutSink, open_sink
from pipeline.sinks.threaded import WRITE_BLOCK


def _zip(path: Path, when: datetime | None) -> LocalFileSink:
    out = LocalFileSink(path)
    sink = ZipArchive(out)
    sink.add("page.xml", iter([b"<a>", b"x" * 10_000, b"</a>"]), "xml", when)
    image = path.parent / "img.jpg"
    image.write_bytes(b"\xff\xd8" + bytes(range(256)) * 100)
    sink.add("img.jpg", image, "image", when)
    sink.close()
    out.commit()
    return out


def test_entries_deflate_xml_store_images_and_reproduce(tmp_path: Path) -> None:
    when = datetime(2024, 5, 6, 7, 8, 10)
    a, b = _zip(tmp_path / "a.zip", when), _zip(tmp_path / "b.zip", when)
    assert a.sha256 == b.sha256 and a.size == (tmp_path / "a.zip").stat().st_size
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert zf.testzip() is None
        infos = {i.filename: i for i in zf.infolist()}
        assert infos["page.xml"].compress_type == zipfile.ZIP_DEFLATED
        assert infos["img.jpg"].compress_type == zipfile.ZIP_STORED
        assert infos["page.xml"].date_time == (2024, 5, 6, 7, 8, 10)
        assert zf.read("page.xml") == b"<a>" + b"x" * 10_000 + b"</a>"
    assert _zip(tmp_path / "c.zip", datetime(2025, 1, 1)).sha256 != a.sha256


def test_stored_files_survive_read_buffer_reuse(tmp_path: Path) -> None:
    """Files of several chunks, big and small, interleaved with XML: every byte lands where it
    belongs although read buffers are recycled between entries."""
    rng = random.Random(3)
    sizes = [CHUNK * 3 + 17, 100, CHUNK, CHUNK - 1, 0, WRITE_BLOCK - 1, CHUNK * 2 + WRITE_BLOCK]
    files = {}
    for i, size in enumerate(sizes * 3):
        path = tmp_path / f"{i}.bin"
        path.write_bytes(rng.randbytes(size))
        files[path.name] = path.read_bytes()
    out = LocalFileSink(tmp_path / "out.zip")
    sink = ZipArchive(out)
    for name in files:
        sink.add(name, tmp_path / name, "image")
        sink.add(f"{name}.xml", [f"<p>{name}</p>".encode()], "xml")
        sink.flush()
    sink.close()
    out.commit()
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        assert zf.testzip() is None
        assert {n: zf.read(n) for n in files} == files
    assert out.sha256 == hashlib.sha256((tmp_path / "out.zip").read_bytes()).hexdigest()


def test_failed_output_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "out.zip"
    out = open_sink(final)
    out.write(b"partial")
    assert not final.exists() and out.location == str(final)
    out.abort()
    assert list(tmp_path.iterdir()) == []


def test_directory_output_never_overwrites(tmp_path: Path) -> None:
    final = tmp_path / "x.txt"
    final.write_bytes(b"first")
    for data in (b"second", b"third"):
        out = open_sink(tmp_path, name="x.txt")  # an existing folder: directory mode
        out.write(data)
        out.commit()
    assert final.read_bytes() == b"first"
    assert (tmp_path / "x_2.txt").read_bytes() == b"second"
    assert (tmp_path / "x_3.txt").read_bytes() == b"third"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_entry_names_collide_deterministically() -> None:
    namer = EntryNamer()
    assert namer.part_names("f003.jpg", 2) == ("f003.jpg", "f003.xml")
    assert namer.part_names("f003.png", 3) == ("f003_3.png", "f003_3.xml")
    assert namer.part_names("F003.JPG", 4) == ("F003_4.JPG", "F003_4.xml")
    assert namer.part_names("METS.jpg", 5) == ("METS_5.jpg", "METS_5.xml")
    assert namer.part_names("../../etc/passwd.jpg", 6) == ("passwd.jpg", "passwd.xml")
    assert namer.part_names("a.tif", 7, ".jpg") == ("a.jpg", "a.xml")


def test_slug_and_output_name() -> None:
    assert slug("Lettre d'Auguste Delâtre, 1858") == "lettre_dauguste_delatre_1858"
    assert slug("עברית") == ""
    name = output_name(12, "Fish & Chips", "alto", "zip", datetime(2024, 7, 3, 15, 12, 9), "abcd1234")
    assert name == "export_doc12_fish_chips_alto_20240703151209_abcd1234.zip"
    assert safe_basename('C:\\scans\\a:b*?.jpg') == "a_b__.jpg"


def test_more_than_65535_entries_switch_to_zip64_by_themselves(tmp_path: Path) -> None:
    out = LocalFileSink(tmp_path / "many.zip")
    sink = ZipArchive(out)
    count = 65_536 + 10
    for i in range(count):
        sink.add(f"p{i}.xml", b"<a/>", "xml")
        if i % 4096 == 0:
            sink.flush()
    sink.close()
    out.commit()
    with zipfile.ZipFile(tmp_path / "many.zip") as zf:
        names = zf.namelist()
        assert len(names) == count and names[-1] == f"p{count - 1}.xml"
        assert zf.read(names[-1]) == b"<a/>"


def test_name_set_is_exact_and_case_insensitive() -> None:
    from pipeline.naming import NameSet

    names = NameSet(("METS.xml",))
    added = [f"page_{i:06d}_é.JPG" for i in range(30_000)]
    for name in added:
        names.add(name)
    assert all(n in names and n.lower() in names for n in added[::97])
    assert "mets.XML" in names
    # a Bloom filter says "maybe" for some of these; the exact check must still say no
    assert not any(f"page_{i:06d}_e.jpg" in names or f"other_{i}.jpg" in names for i in range(30_000))
    assert "page_000001" not in names and "age_000001_é.jpg" not in names  # no partial matches


def test_page_index_round_trips_names_and_missing_images() -> None:
    from pipeline.naming import PageIndex

    pages = PageIndex()
    expected = [("f001.jpg", "f001.xml"), (None, "f002.xml"), ("ü ß 🙂.png", "ü ß 🙂.xml")]
    for image, xml in expected:
        pages.append(image, xml)
    assert list(pages) == expected
    assert list(pages) == expected  # can be read again


def test_sinks_by_target_and_their_one_line_errors(tmp_path: Path) -> None:
    """``-`` is stdout, a folder (existing or ending in /) names the file, anything else is a
    file replaced atomically; an unknown scheme and a folder without a name are usage errors;
    a write the system refuses is an OutputError naming the file."""
    from pipeline.errors import OutputError, UsageError

    assert isinstance(open_sink("-"), StdoutSink)
    new = open_sink(f"{tmp_path}/new/", name="a.zip")
    assert new.location == str(tmp_path / "new" / "a.zip")
    new.write(b"x")
    assert new.commit() == str(tmp_path / "new" / "a.zip") and new.size == 1
    with pytest.raises(UsageError, match="nowhere://"):
        open_sink("nowhere://bucket/key")
    with pytest.raises(UsageError, match="file name"):
        open_sink(tmp_path)
    with pytest.raises(OutputError, match="/dev/full: not a regular file"):
        open_sink("/dev/full")  # never replaced by the published file
    assert pathlib.Path("/dev/full").is_char_device()


def test_zipstream_private_state_the_subclass_relies_on() -> None:
    """DataTimedZipStream is the one place that uses zipstream-ng's private state; the version
    range in pyproject.toml is the one tested here. If zipstream-ng changes any of it, this fails
    before an archive comes out wrong."""
    import zipstream.ng

    from pipeline.archive import DataTimedZipStream, _DataTimedInfo

    entry = zipstream.ng.ZipStream._gen_file_entry
    assert "ZipStreamInfo" in entry.__code__.co_names and not entry.__code__.co_freevars
    assert "ZipStreamInfo" not in DataTimedZipStream._gen_file_entry.__globals__ or \
        DataTimedZipStream._gen_file_entry.__globals__["ZipStreamInfo"] is _DataTimedInfo
    footer = zipstream.ng.ZipStream._gen_archive_footer.__code__.co_names
    assert {"_filelist", "_central_directory_header_data"} <= set(footer)
    stream = DataTimedZipStream()
    assert stream._filelist == [] and zipstream.ng.ZipStream.file.__code__.co_names
    # the module itself is left alone: other users of zipstream-ng keep their clock-stamped entries
    assert zipstream.ng.ZipStreamInfo is not _DataTimedInfo
    stream.add(b"data", "a.txt")
    chunks = b"".join(stream.entry((2001, 2, 3, 4, 5, 6)))
    assert chunks and len(stream._filelist) == 1


def test_libvips_cache_is_off_only_while_an_image_stage_runs(tmp_path: Path) -> None:
    """A program that uses the package keeps libvips' operation cache: the image stage turns it
    off while it runs and gives the program's settings back."""
    import subprocess
    import sys

    code = """
import anyio, pyvips
from pipeline.images import ImageStage
from pipeline.options import ImageOptions
pyvips.cache_set_max(77)
before = pyvips.cache_get_max()
import pipeline.export, pipeline.cli
assert pyvips.cache_get_max() == before, "importing changed the cache"
async def run():
    async with ImageStage(ImageOptions(format="jpeg")):
        assert pyvips.cache_get_max() == 0
anyio.run(run)
assert pyvips.cache_get_max() == 77, pyvips.cache_get_max()
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
