"""Bad input from other people's machines (issue 12, items 8-11, 13, 16): every defect is one line on
stderr naming the file and the part, exit 1 or 2, and nothing half-written is left behind."""

from __future__ import annotations

import re
import sqlite3
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.errors import PipelineError, UsageError

FIXTURES = Path(__file__).parent / "fixtures"
CREMMA = FIXTURES / "escriptorium-alto-cremma-mss-20"
XML, JPG = "01R_P1S7P178_001.xml", "01R_P1S7P178_001.jpg"


def run(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


def one_error(err: str, *needles: str) -> str:
    """The single stderr line of a failed command, checked to name each of ``needles``."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pipeline: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    return lines[0]


# --- zips that zipfile cannot read (item 8) ------------------------------------------------------


def _zip(path: Path, method: int = zipfile.ZIP_DEFLATED, xml_name: str = XML) -> bytearray:
    with zipfile.ZipFile(path, "w", method) as zf:
        zf.write(CREMMA / XML, xml_name)
        zf.write(CREMMA / JPG, JPG)
    return bytearray(path.read_bytes())


def _central(data: bytearray, n: int) -> int:
    return [m.start() for m in re.finditer(b"PK\x01\x02", data)][n]


def _local(data: bytearray, n: int) -> int:
    return [m.start() for m in re.finditer(b"PK\x03\x04", data)][n]


def _put(data: bytearray, offset: int, fmt: str, value: int) -> None:
    data[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, value)


def bad_utf8_name(path: Path) -> str:
    data = _zip(path, xml_name="01R_P1S7P178_00X.xml")
    for header, flags in ((_central(data, 0), 8), (_local(data, 0), 6)):
        data[data.find(b"00X.xml", header) + 2] = 0xFF
        _put(data, header + flags, "<H", 0x800)
    path.write_bytes(data)
    return "01R_P1S7P178_00"


def encrypted(path: Path) -> str:
    data = _zip(path)
    _put(data, _central(data, 0) + 8, "<H", 1)
    _put(data, _local(data, 0) + 6, "<H", 1)
    path.write_bytes(data)
    return XML


def unsupported_method(path: Path) -> str:
    data = _zip(path)
    _put(data, _central(data, 0) + 10, "<H", 99)
    _put(data, _local(data, 0) + 8, "<H", 99)
    path.write_bytes(data)
    return XML


def corrupt_deflate(path: Path) -> str:
    data = _zip(path)
    start = _local(data, 0) + 30 + len(XML) + 200
    data[start:start + 40] = bytes(40)
    path.write_bytes(data)
    return XML


def damaged_central_directory(path: Path) -> str:
    data = _zip(path)
    start = _central(data, 1)
    data[start:start + 4] = b"XXXX"
    path.write_bytes(data)
    return ""


def sizes_without_zip64(path: Path) -> str:
    data = _zip(path, zipfile.ZIP_STORED)
    _put(data, _central(data, 0) + 20, "<I", 0xFFFFFFFF)
    _put(data, _central(data, 0) + 24, "<I", 0xFFFFFFFF)
    path.write_bytes(data)
    return XML


def corrupt_lzma(path: Path) -> str:
    """Found by fuzzing: a member whose method says LZMA over data that is not (lzma.LZMAError)."""
    data = _zip(path)
    _put(data, _central(data, 0) + 10, "<H", 14)
    _put(data, _local(data, 0) + 8, "<H", 14)
    start = _local(data, 0) + 30 + len(XML)
    data[start:start + 9] = b"\x09\x14\x05\x00" + b"\xff" * 5  # LZMA header, impossible properties
    path.write_bytes(data)
    return XML


def end_record_past_the_file(path: Path) -> str:
    data = _zip(path)
    _put(data, data.rfind(b"PK\x05\x06") + 16, "<I", 0x7FFFFFF0)
    path.write_bytes(data)
    return ""


ZIP_DEFECTS: dict[str, Callable[[Path], str]] = {
    f.__name__: f for f in (bad_utf8_name, encrypted, unsupported_method, corrupt_deflate,
                            damaged_central_directory, sizes_without_zip64, end_record_past_the_file,
                            corrupt_lzma)
}
#: what the message must say of each defect
ZIP_REASONS = {
    "bad_utf8_name": "not valid UTF-8", "encrypted": "encrypted",
    "unsupported_method": "compression method 99",
    "corrupt_deflate": "corrupt", "damaged_central_directory": "central directory",
    "sizes_without_zip64": "zip64", "end_record_past_the_file": "past the end",
    "corrupt_lzma": "corrupt compressed data",
}


@pytest.mark.parametrize("defect", ZIP_DEFECTS)
@pytest.mark.parametrize("command", ["import", "export", "verify"])
def test_unreadable_zip_is_one_line_naming_archive_and_member(
    defect: str, command: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "bad.zip"
    member = ZIP_DEFECTS[defect](archive)
    reason = ZIP_REASONS[defect]
    if command == "verify":
        assert run("verify", archive) == 1
        out, err = capfd.readouterr()
        assert err == ""
        assert out.startswith(f"{archive}: ") and member in out and reason in out, out
        assert "OK" not in out
        return
    if command == "import":
        rc = run("import", archive, "--corpus", tmp_path / "c.sqlite")
    else:
        rc = run("export", "--source", archive, "--images", "-o", tmp_path / "out.zip")
    assert rc in (1, 2)
    one_error(capfd.readouterr().err, str(archive), member, reason)
    assert not (tmp_path / "out.zip").exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".jpg"]


# --- a failed import leaves no file behind (item 9) ----------------------------------------------


def _dump(corpus: Path) -> list[str]:
    with sqlite3.connect(corpus) as conn:
        return list(conn.iterdump())


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def image_declaring_one_byte(path: Path) -> None:
    """The image member says 1 byte (central directory and local header) and holds the whole JPEG."""
    data = _zip(path, zipfile.ZIP_STORED)
    _put(data, _central(data, 1) + 24, "<I", 1)
    _put(data, _local(data, 1) + 22, "<I", 1)
    path.write_bytes(data)


def image_corrupt_near_its_end(path: Path) -> None:
    """The image's deflate stream breaks after more than a megabyte has been copied out."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(CREMMA / XML, XML)
        zf.writestr(JPG, (CREMMA / JPG).read_bytes() * 8)
    data = bytearray(path.read_bytes())
    start = _central(data, 0) - 400
    data[start:start + 40] = bytes(40)
    path.write_bytes(data)


@pytest.mark.parametrize("defect", [image_declaring_one_byte, image_corrupt_near_its_end])
def test_failed_zip_import_removes_every_file_it_wrote(
    defect: Callable[[Path], None], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "c.sqlite"
    assert run("import", CREMMA, "--corpus", corpus) == 0  # a corpus with a document already
    before, media = _dump(corpus), _files(tmp_path / "c.media")
    capfd.readouterr()
    archive = tmp_path / "bad.zip"
    defect(archive)
    assert run("import", archive, "--corpus", corpus) == 1
    one_error(capfd.readouterr().err, str(archive), JPG)
    assert _files(tmp_path / "c.media") == media
    assert _dump(corpus) == before


# --- XML values and shapes that broke the readers (item 10) ---------------------------------------

_ALTO_BODY = (CREMMA / XML).read_text(encoding="utf-8").split("\n", 1)[1]  # without the declaration


def _alto_page(folder: Path, text: str) -> Path:
    folder.mkdir()
    (folder / XML).write_text(text, encoding="utf-8")
    return folder


XML_DEFECTS: dict[str, tuple[Callable[[], str], str]] = {
    # page file text, what the message says
    "infinite_height": (lambda: _ALTO_BODY.replace('HEIGHT="1500"', 'HEIGHT="Infinity"', 1),
                        "'Infinity' is not a finite number"),
    "nan_width": (lambda: _ALTO_BODY.replace('WIDTH="1157"', 'WIDTH="NaN"', 1),
                  "'NaN' is not a finite number"),
    "huge_width": (lambda: _ALTO_BODY.replace('WIDTH="1157"', f'WIDTH="1{"0" * 40}"', 1), "page size"),
    "attlist_default_inf": (
        lambda: '<?xml version="1.0"?>\n<!DOCTYPE alto [<!ATTLIST Page HEIGHT CDATA "inf">]>\n'
        + _ALTO_BODY.replace('HEIGHT="1500"', "", 1),
        "'inf' is not a finite number"),
    "coordinate_1e999": (lambda: re.sub(r'POINTS="\d+', 'POINTS="1e999', _ALTO_BODY, count=1),
                         "not a finite number"),
    "undeclared_root_prefix": (lambda: _ALTO_BODY.replace("<alto ", "<x:alto ", 1)
                               .replace("</alto>", "</x:alto>"),
                               "neither ALTO nor PAGE"),
    "11_MB_attribute": (lambda: _ALTO_BODY.replace("<Page ", f'<Page foo="{"a" * 11_000_000}" ', 1),
                        "not well-formed XML"),
}


@pytest.mark.parametrize("defect", XML_DEFECTS)
@pytest.mark.parametrize("command", ["import", "export"])
def test_bad_xml_values_are_one_line_naming_file_and_line(
    defect: str, command: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    text, reason = XML_DEFECTS[defect]
    folder = _alto_page(tmp_path / "set", text())
    if command == "import":
        rc = run("import", folder, "--corpus", tmp_path / "c.sqlite")
    else:
        rc = run("export", "--source", folder, "-o", tmp_path / "out.zip")
    assert rc == 1
    line = one_error(capfd.readouterr().err, f"{folder}: {XML}: line ", reason)
    assert re.search(rf"{XML}: line \d+: ", line), line
    assert not (tmp_path / "out.zip").exists()


def test_megabyte_custom_attribute_is_read_in_linear_time(tmp_path: Path) -> None:
    """A 1 MB ``custom`` attribute (no closing brace, a word before every brace) used to send the
    regular expression into quadratic backtracking: the import never ended. A subprocess with a
    generous deadline turns that hang into a failure."""
    import subprocess
    import sys

    page = (FIXTURES / "transkribus-page-joseph-hooker/JDH_2_16_144_002.xml").read_text(encoding="utf-8")
    customs = ["a" * 1_000_000, "structure {type:" + "x" * 1_000_000, "a{" * 500_000, "a " * 500_000 + "{"]
    folder = tmp_path / "set"
    folder.mkdir()
    for n, value in enumerate(customs):
        mutated = page.replace('custom="readingOrder {index:0;}"', f'custom="{value}"', 1)
        (folder / f"p{n}.xml").write_text(mutated, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "export", "--source", str(folder), "--format", "page", "-o",
         str(tmp_path / "out.zip")], capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.zip").exists()


# --- brat offsets and ids of any length (item 11) -------------------------------------------------

_HUGE = "9" * 4401  # past Python's 4,300-digit limit on int(str)


def _exchange(path: Path, ann: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("test/letter.txt", "Dear Dyer,\nyours truly.\n")
        zf.writestr("ann/letter.ann", ann)
    return path


@pytest.mark.parametrize("ann", [
    f"T1\tPerson.Name 0 {_HUGE}\tDyer\n",
    f"T1\tPerson.Name {_HUGE} 9\tDyer\n",
    f"T1\tPerson.Name 5 9\tDyer\nT2\tPerson.Name 0 1;{_HUGE} 9\tD\n",
], ids=["end", "start", "discontinuous"])
def test_brat_offset_of_thousands_of_digits_is_one_line(
    ann: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "c.sqlite"
    assert run("import", _exchange(tmp_path / "x.zip", ann), "--corpus", corpus) == 1
    line = one_error(capfd.readouterr().err, "ann/letter.ann:", "offset")
    assert re.search(r"ann/letter\.ann:[12]: ", line), line


def test_brat_id_of_thousands_of_digits_round_trips(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """An id too long for int() is an unparseable line: kept verbatim, and written back on export."""
    corpus = tmp_path / "c.sqlite"
    odd = f"R{_HUGE}\tRel Arg1:T1 Arg2:T1"
    assert run("import", _exchange(tmp_path / "x.zip", f"T1\tPerson.Name 5 9\tDyer\n{odd}\n"),
               "--corpus", corpus) == 0
    assert run("export", "--corpus", corpus, "--document", "1", "--format", "exchange", "--layer", "manual",
               "-o", tmp_path / "out.zip") == 0, capfd.readouterr().err
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        assert odd in zf.read("ann/letter.ann").decode()
    assert "Traceback" not in capfd.readouterr().err


# --- user errors that reached cli.main as raw tracebacks (item 16) --------------------------------


@pytest.mark.parametrize("ids", [
    '{"tags": {}, "annotations": {"1": "Tx"}, "regions": {}}',
    f'{{"tags": {{}}, "annotations": {{"1": "T{_HUGE}"}}, "regions": {{}}}}',
    '{"tags": {"Dyer": "C-1"}, "annotations": {}, "regions": {}}',
], ids=["letters", "thousands-of-digits", "negative"])
def test_edited_exchange_ids_are_one_line(
    ids: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Part metadata is editable (eScriptorium shows it): a kept brat id that is no id is an error
    naming the part and the key, raised where the metadata is read."""
    corpus = tmp_path / "c.sqlite"
    archive = _exchange(tmp_path / "x.zip", "T1\tPerson.Name 5 9\tDyer\n")
    assert run("import", archive, "--corpus", corpus) == 0
    with sqlite3.connect(corpus) as conn:
        updated = conn.execute(
            "UPDATE core_documentpartmetadata SET value = ? WHERE key_id = "
            "(SELECT id FROM core_metadata WHERE name = 'exchange:ids')", (ids,)).rowcount
    assert updated == 1
    capfd.readouterr()
    assert run("export", "--corpus", corpus, "--document", "1", "--format", "exchange", "--layer", "manual",
               "-o", tmp_path / "out.zip") == 1
    one_error(capfd.readouterr().err, "part 1", "exchange:ids", "is not a brat id")
    assert not (tmp_path / "out.zip").exists()


def test_unreadable_registry_record_is_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c.sqlite"
    assert run("import", CREMMA, "--corpus", corpus) == 0
    assert run("export", "--corpus", corpus, "--document", "1", "--layer", "Default ALTO Import",
               "-o", tmp_path) == 0
    with sqlite3.connect(corpus) as conn:
        (export_id,) = conn.execute("SELECT id FROM pipeline_export").fetchone()
        conn.execute("UPDATE pipeline_export SET options = '{not json'")
    capfd.readouterr()
    assert run("exports", "show", export_id[:10], "--corpus", corpus) == 1
    one_error(capfd.readouterr().err, str(corpus), export_id, "unreadable")
    assert run("exports", "list", "--corpus", corpus) == 1
    one_error(capfd.readouterr().err, str(corpus), export_id, "unreadable")


def _raises(exc: BaseException) -> Callable[[object], int]:
    def command(_: object) -> int:
        raise exc
    return command


_GROUP = ExceptionGroup("tasks failed", [
    PipelineError("a.zip: member 'p.xml': corrupt compressed data"),
    ExceptionGroup("inner", [UsageError("job.toml: archive.keep: -1 is not a count"),
                             FileNotFoundError(2, "No such file or directory", "/srv/old.zip")]),
])


def test_exception_group_of_user_errors_is_one_line_each(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Task groups (a job's concurrent archives) raise groups: each user error in one gets its own
    line, the exit code is the most severe, and --debug shows every traceback of the group."""
    monkeypatch.setattr("pipeline.cli.cmd_verify", _raises(_GROUP))
    assert run("verify", "x.zip") == 2
    err = capfd.readouterr().err
    assert err.splitlines() == [
        "pipeline: error: a.zip: member 'p.xml': corrupt compressed data",
        "pipeline: error: job.toml: archive.keep: -1 is not a count",
        "pipeline: error: [Errno 2] No such file or directory: '/srv/old.zip'",
    ]
    with pytest.raises(ExceptionGroup) as raised:
        run("--debug", "verify", "x.zip")
    assert raised.value is _GROUP


def test_a_bug_inside_a_group_still_shows_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    group = ExceptionGroup("tasks failed", [PipelineError("a.zip: corrupt"), KeyError("bug")])
    monkeypatch.setattr("pipeline.cli.cmd_verify", _raises(group))
    with pytest.raises(ExceptionGroup):
        run("verify", "x.zip")


def test_an_error_message_spanning_lines_prints_as_one(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("pipeline.cli.cmd_verify", _raises(PipelineError("p.xml: line 3: limit\n, line 3")))
    assert run("verify", "x.zip") == 1
    assert capfd.readouterr().err == "pipeline: error: p.xml: line 3: limit , line 3\n"


# --- libvips' own warnings stay off stderr (item 13) ----------------------------------------------


def test_lying_jpeg_header_is_one_line_without_vips_warnings(tmp_path: Path) -> None:
    """The APP1 segment's length claims 115 bytes more than it holds, so libjpeg reads the next
    segments out of step. The error is one line; libvips' warnings about the read (given when the
    image is freed, which used to be at exit, after pyvips stopped routing them to logging) must
    not follow it. A subprocess, since they went straight to file descriptor 2 at exit."""
    import subprocess
    import sys

    folder = tmp_path / "set"
    folder.mkdir()
    (folder / XML).write_bytes((CREMMA / XML).read_bytes())
    data = bytearray((CREMMA / JPG).read_bytes())
    assert data[20:22] == b"\xff\xe1"  # APP1 (Exif) right after APP0
    _put(data, 22, ">H", struct.unpack_from(">H", data, 22)[0] + 115)
    (folder / JPG).write_bytes(data)
    for options in (["--image-format", "png"], ["--image-max-size", "400"]):
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "export", "--source", str(folder), "--images", *options,
             "-o", str(tmp_path / "out.zip")], capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 1
        line = one_error(done.stderr, f"{folder / JPG}", "part 1")
        assert "VIPS" not in done.stderr and "unable to write to target" not in line, done.stderr
        assert not (tmp_path / "out.zip").exists()


# --- found by tests/test_fuzz.py ------------------------------------------------------------------


@pytest.mark.parametrize("setting", ['name = "night\\u0000ly"', 'name = "../../escaped"',
                                     '[archive]\nname = "{document_id}\\u0000.zip"'])
def test_job_names_that_are_no_file_names_are_config_errors(
    setting: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A NUL in the job or archive name reached open() as 'embedded null byte' with a traceback;
    a job name with a slash, used as {job} in archive names, put archives outside the folder."""
    corpus = tmp_path / "c.sqlite"
    assert run("import", CREMMA, "--corpus", corpus, "--layer", "manual") == 0
    text = (Path(__file__).resolve().parent.parent / "configs/nightly.toml").read_text()
    if setting.startswith("[archive]"):
        text = text.replace('name = "{job}_{format}_{date}_{fingerprint}"', setting.split("\n")[1])
    else:
        text = text.replace('name = "nightly"', setting)
    config = tmp_path / "job.toml"
    config.write_text(text)
    capfd.readouterr()
    out = tmp_path / "out"
    assert run("run", config, "--set", f"corpus={corpus}", "--set", f"archive.directory={out}") == 2
    one_error(capfd.readouterr().err, str(config), "name")
    assert not list(tmp_path.rglob("*.zip"))
