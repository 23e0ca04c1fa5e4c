"""Exports of the demo corpus through the CLI: every format and filter, validated with the XSDs.

The tests taking ``demo_store`` run twice: from the SQLite corpus and from the same demo in an
eScriptorium PostgreSQL database.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from lxml import etree

from pipeline.cli import main
from pipeline.demo import OTHER_BLOCK_TYPE, build_demo
from pipeline.registry import Registry
from pipeline.validate import validate
from pipeline.verify import verify_archive
from tests.pgcluster import Store

FILTERS = [
    None,
    "Main",
    "Title,Commentary",
    OTHER_BLOCK_TYPE,
    "undefined",
    "orphan",
    "Main,Title,Commentary,Illustration,undefined",
    "Main,orphan,undefined",
]
ALTO = "{http://www.loc.gov/standards/alto/ns-v4#}"


def run(*args: str | Path) -> int:
    return main([str(a) for a in args])


def export(store: Store, out: Path, *args: str) -> Path:
    """Export document 1; the registry goes next to the output, not into the shared corpus."""
    registry = out.parent / "registry.sqlite"
    assert run("export", *store.args, "--document", "1", "-o", out, "--registry", registry, *args) == 0
    return out


@pytest.mark.parametrize("fmt", ["alto", "page"])
@pytest.mark.parametrize("regions", FILTERS)
@pytest.mark.parametrize("layer", ["manual", "kraken:catmus-medieval-1.5"])
def test_every_xml_export_is_valid(demo_store: Store, tmp_path: Path, fmt: str, regions: str | None,
                                   layer: str) -> None:
    args = ["--format", fmt, "--layer", layer] + (["--regions", regions] if regions else [])
    archive = export(demo_store, tmp_path / "x.zip", *args)
    assert verify_archive(archive) == []
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        assert names[-1] == "METS.xml"
        for name in names:
            errors = validate(zf.open(name))
            assert errors == [], (name, errors[:3])
            data = zf.read(name)
            assert b"\n\n" not in data and b"\n \n" not in data


def test_images_precede_their_xml_and_mets_references_them(demo_store: Store, tmp_path: Path) -> None:
    archive = export(demo_store, tmp_path / "x.zip", "--format", "alto", "--images")
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        mets = etree.fromstring(zf.read("METS.xml"))
    assert len(names) == 2 * 4 + 1
    for image, xml in zip(names[0:-1:2], names[1:-1:2], strict=True):
        assert Path(image).stem == Path(xml).stem and xml.endswith(".xml")
    assert {i.compress_type for i in infos if i.filename.endswith(".xml")} == {zipfile.ZIP_DEFLATED}
    assert {i.compress_type for i in infos if not i.filename.endswith(".xml")} == {zipfile.ZIP_STORED}
    hrefs = mets.xpath("//m:FLocat/@xlink:href", namespaces={
        "m": "http://www.loc.gov/METS/", "xlink": "http://www.w3.org/1999/xlink"})
    assert sorted(hrefs) == sorted(names[:-1])
    assert verify_archive(archive) == []


def test_region_filter_semantics(demo_store: Store, tmp_path: Path) -> None:
    everything = export(demo_store, tmp_path / "all.zip", "--format", "alto")
    main_only = export(demo_store, tmp_path / "main.zip", "--format", "alto", "--regions", "Main")
    with zipfile.ZipFile(everything) as a, zipfile.ZipFile(main_only) as b:
        for name in a.namelist()[:-1]:
            full, only = etree.fromstring(a.read(name)), etree.fromstring(b.read(name))
            tags = {t.get("ID"): t.get("LABEL") for t in full.iter(f"{ALTO}OtherTag")}
            kept = [blk.get("TAGREFS") for blk in only.iter(f"{ALTO}TextBlock")]
            assert all(tags[ref] == "Main" for ref in kept)
            expected = [blk.get("ID") for blk in full.iter(f"{ALTO}TextBlock")
                        if tags.get(blk.get("TAGREFS")) == "Main"]
            assert [blk.get("ID") for blk in only.iter(f"{ALTO}TextBlock")] == expected
            assert "eSc_dummyblock_" in [blk.get("ID") for blk in full.iter(f"{ALTO}TextBlock")]


def test_parts_selection_keeps_document_order(demo_store: Store, tmp_path: Path) -> None:
    archive = export(demo_store, tmp_path / "x.zip", "--format", "alto", "--parts", "4,2-3")
    with zipfile.ZipFile(archive) as zf:
        orders = [etree.fromstring(zf.read(n)).find(f"{ALTO}Layout/{ALTO}Page").get("PHYSICAL_IMG_NR")
                  for n in zf.namelist()[:-1]]
    assert orders == ["1", "2", "3"]


@pytest.mark.parametrize("fmt", ["alto", "page"])
def test_warnings_name_the_part_they_come_from(
    demo_store: Store, tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pages are rendered several per flush; a warning still names the page of its line (the demo's
    first page has a line without mask and baseline, later pages have none)."""
    export(demo_store, tmp_path / "a.zip", "--format", fmt)
    warnings = [m for m in capsys.readouterr().err.splitlines() if "no mask and no baseline" in m]
    assert len(warnings) == 1
    assert warnings[0].startswith("pipeline: document 'Demo 1") and ", part 1 (" in warnings[0]


def test_text_export_to_stdout(demo_store: Store, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    assert run("export", *demo_store.args, "--document", "1", "--format", "text", "-o", "-") == 0
    text = capfdbinary.readouterr().out.decode("utf-8")
    headers = [line for line in text.split("\n") if line.startswith("--------------- ")]
    assert len(headers) == 4 and all(h.endswith(" ---------------") for h in headers)
    assert "\r" not in text and "\n\n" not in text


def test_directory_output_names_and_registry(demo_store: Store, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(2):
        assert run("export", *demo_store.args, "--document", "1", "--format", "page",
                   "-o", f"{tmp_path}/", "--registry", tmp_path / "reg.sqlite") == 0
    files = sorted(tmp_path.glob("export_doc1_*_pagexml_*.zip"))
    assert len(files) == 2
    records = list(Registry(tmp_path / "reg.sqlite").list())
    assert [r.status for r in records] == ["complete", "complete"]
    assert {r.path for r in records} == {str(f) for f in files}
    for rec in records:
        assert Path(rec.path).stat().st_size == rec.size and rec.part_count == 4
    capsys.readouterr()
    assert run("exports", "show", records[0].id[:20], "--registry", tmp_path / "reg.sqlite") == 0
    assert records[0].path in capsys.readouterr().out


def test_verify_detects_tampering(demo_store: Store, tmp_path: Path) -> None:
    archive = export(demo_store, tmp_path / "x.zip", "--format", "alto")
    assert run("verify", archive) == 0
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + 20  # inside the compressed data
    data[start] ^= 0xFF
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(data))
    assert verify_archive(bad) != []
    assert run("verify", bad) == 1

    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(tmp_path / "dangling.zip", "w") as dst:
        for name in src.namelist()[1:]:  # drop the first page's XML: METS now points at nothing
            dst.writestr(name, src.read(name))
    problems = verify_archive(tmp_path / "dangling.zip")
    assert any("not in the archive" in p for p in problems)


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--layer", "nope"], 2, "layers: kraken:catmus-medieval-1.5, manual"),
    (["--regions", "Nope"], 2, "unknown region type 'Nope'"),
    (["--parts", "3-1"], 2, "--parts"),
    (["--parts", "99"], 2, "99"),
])
def test_user_errors_are_one_line(demo_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  args: list[str], code: int, message: str) -> None:
    assert run("export", *demo_store.args, "--document", "1", "-o", tmp_path / "x.zip", *args) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pipeline: error:") and message in err[0]
    assert not (tmp_path / "x.zip").exists()


def test_not_a_corpus_is_refused_and_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "notes.sqlite"
    bogus.write_bytes(b"just some text\n" * 10)
    before = bogus.read_bytes()
    assert run("export", "--corpus", bogus, "--document", "1") == 1
    assert "not an SQLite database" in capsys.readouterr().err
    assert bogus.read_bytes() == before


def test_missing_image_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c.sqlite"
    summary = build_demo(corpus, documents=1, parts=2, lines=12, image_size=(300, 400))
    victim = next((summary.media_root / "documents" / "1").iterdir())
    victim.unlink()
    assert run("export", "--corpus", corpus, "--document", "1", "--images", "-o", tmp_path / "x.zip") == 1
    err = capsys.readouterr().err
    assert "part " in err and victim.name in err
    assert not (tmp_path / "x.zip").exists()
    assert [r.status for r in Registry(corpus).list()] == ["failed"]


def test_killed_export_leaves_nothing_at_the_final_name(tmp_path: Path) -> None:
    corpus = tmp_path / "big.sqlite"
    build_demo(corpus, documents=1, parts=1500, lines=30, image_size=(200, 300), link_images=True)
    final = tmp_path / "out" / "big.zip"
    final.parent.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "export", "--corpus", str(corpus), "--document", "1",
         "--format", "alto", "--images", "-o", str(final)],
        stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        partial = [p for p in final.parent.iterdir() if p.stat().st_size > 1 << 20]
        if partial:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "export finished before it could be killed; make the corpus bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not final.exists()
    with sqlite3.connect(corpus) as db:
        assert db.execute("SELECT status FROM pipeline_export").fetchall() == [("running",)]
    assert [r.state for r in Registry(corpus).list()] == ["interrupted"]


def test_a_registry_from_before_host_and_pid_is_upgraded(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:
        db.execute(
            "CREATE TABLE pipeline_export (id TEXT PRIMARY KEY, document_id INTEGER,"
            " document_name TEXT NOT NULL, format TEXT NOT NULL, layer TEXT, options TEXT NOT NULL,"
            " path TEXT, size INTEGER, sha256 TEXT, part_count INTEGER, fingerprint TEXT,"
            " started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL, error TEXT, report TEXT)")
        db.execute("INSERT INTO pipeline_export (id, document_name, format, options, started_at, status)"
                   " VALUES ('1', 'd', 'alto', '{}', '2024-01-01T00:00:00+00:00', 'running')")
    registry = Registry(old)
    assert [(r.id, r.state, r.pid) for r in registry.list()] == [("1", "running", None)]
    registry.start("2", document_id=1, document_name="d", format="alto", layer="manual", options={}, path="x")
    assert registry.get("2").pid == os.getpid() and registry.get("2").state == "running"


def test_verify_checks_text_exports(
    demo_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``verify`` takes the text exports beside the zips (``make demo`` verifies every export)."""
    text = export(demo_store, tmp_path / "doc.txt", "--format", "text")
    capsys.readouterr()
    assert run("verify", text) == 0
    assert capsys.readouterr().out.strip() == f"{text}: OK"
    data = text.read_bytes()
    first = next(i for i, byte in enumerate(data) if byte >= 0x80)  # Hebrew, Arabic... are there
    for name, bad, problem in (
        ("invalid.txt", data[:first] + b"\xff" + data[first + 1:], "not UTF-8"),
        ("truncated.txt", data[:-3], "does not end with a line break"),
        ("headless.txt", data.split(b"\n", 1)[1], "page header"),
    ):
        assert data != bad
        (tmp_path / name).write_bytes(bad)
        assert run("verify", tmp_path / name) == 1
        out = capsys.readouterr().out
        assert problem in out and out.startswith(f"{tmp_path / name}: "), out
