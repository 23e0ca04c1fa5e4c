"""Incremental jobs decide from each source's change marker (``Source.change_marker``), without
reading an unchanged document's parts, and every kind of edit still makes the document stale.

Statements are counted on every SQLite connection the run opens (``set_trace_callback``), file
opens with Python's ``open`` audit event: counts, never times.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from pipeline.cli import main
from pipeline.demo import build_demo

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@dataclass
class Activity:
    """What the process did while ``watching()`` was on."""

    statements: list[str] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)


_watch: list[Activity] = []


def _hook(event: str, args: tuple) -> None:
    if _watch and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        _watch[-1].opened.append(os.fsdecode(args[0]))


sys.addaudithook(_hook)  # audit hooks cannot be removed: it does nothing unless a test watches


@contextmanager
def watching(monkeypatch: pytest.MonkeyPatch) -> Iterator[Activity]:
    """Every statement on every SQLite connection opened meanwhile, every file opened."""
    activity = Activity()
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = connect(*args, **kwargs)
        connection.set_trace_callback(activity.statements.append)
        return connection

    _watch.append(activity)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(sqlite3, "connect", traced)
            yield activity
    finally:
        _watch.remove(activity)


def job(folder: Path, what: str, outputs: str = '[[outputs]]\nformat = "alto"\n') -> Path:
    config = folder / "job.toml"
    config.write_text(f'{what}\n[select]\nchanged_only = true\n'
                      f'[archive]\ndirectory = "out"\nmode = "document"\n{outputs}')
    return config


def report(folder: Path) -> dict:
    return json.loads((folder / "out" / "job-report.json").read_text())


def exported(folder: Path) -> list[int]:
    return sorted(e["documents"][0]["id"] for e in report(folder)["exported"])


def demo(folder: Path, parts: int, documents: int = 1) -> Path:
    corpus = folder / "corpus.sqlite"
    build_demo(corpus, documents=documents, parts=parts, lines=4, image_size=(100, 140), seed=3)
    return corpus


def unchanged_run(folder: Path, parts: int, monkeypatch: pytest.MonkeyPatch) -> Activity:
    """A first run exports the document; the second, watched, finds it unchanged."""
    corpus = demo(folder, parts)
    config = job(folder, f'corpus = "{corpus}"')
    assert main(["-q", "run", str(config)]) == 0 and exported(folder) == [1]
    with watching(monkeypatch) as activity:
        assert main(["-q", "run", str(config)]) == 0
    assert exported(folder) == [] and len(report(folder)["skipped"]) == 1
    return activity


def test_an_unchanged_document_is_skipped_without_reading_its_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning a 200-part document issues the same statements as a 20-part one (one marker
    statement, no statement per part, none of the parts' block or line queries) and opens none
    of its image files: the cost does not grow with the document."""
    small = unchanged_run(tmp_path / "small", 20, monkeypatch)
    large = unchanged_run(tmp_path / "large", 200, monkeypatch)
    assert len(large.statements) == len(small.statements) < 60, large.statements
    assert sum("pipeline_digest" in s for s in large.statements) == 1
    assert not any("FROM core_line l" in s and "pipeline_digest" not in s for s in large.statements)
    assert not [p for p in large.opened if ".media" in p]


def first(db: sqlite3.Connection, sql: str) -> int:
    return db.execute(sql).fetchone()[0]


def _text(db: sqlite3.Connection) -> None:
    """One letter of one line, the length kept."""
    row = first(db, "SELECT t.id FROM core_linetranscription t JOIN core_line l ON l.id = t.line_id "
                    "JOIN core_documentpart p ON p.id = l.document_part_id WHERE p.document_id = 2 "
                    "AND length(t.content) > 2 ORDER BY t.id LIMIT 1")
    db.execute("UPDATE core_linetranscription SET content = substr(content, 1, 1) || "
               "char(unicode(substr(content, 2, 1)) + 1) || substr(content, 3) WHERE id = ?", (row,))


def _baseline(db: sqlite3.Connection) -> None:
    line = first(db, "SELECT l.id FROM core_line l JOIN core_documentpart p ON p.id = l.document_part_id "
                     "WHERE p.document_id = 2 AND l.baseline IS NOT NULL ORDER BY l.id LIMIT 1")
    points = json.loads(first(db, f"SELECT baseline FROM core_line WHERE id = {line}"))
    points[0][1] += 1
    db.execute("UPDATE core_line SET baseline = ? WHERE id = ?", (json.dumps(points), line))


def _region_type(db: sqlite3.Connection) -> None:
    block = first(db, "SELECT b.id FROM core_block b JOIN core_documentpart p ON p.id = b.document_part_id "
                      "WHERE p.document_id = 2 ORDER BY b.id LIMIT 1")
    db.execute("UPDATE core_block SET typology_id = (SELECT max(id) FROM core_blocktype) WHERE id = ?",
               (block,))


def _order(db: sqlite3.Connection) -> None:
    """Two pages swap places."""
    a, b = db.execute('SELECT id, "order" FROM core_documentpart WHERE document_id = 2 '
                      'ORDER BY "order" LIMIT 2')
    db.execute('UPDATE core_documentpart SET "order" = ? WHERE id = ?', (b[1], a[0]))
    db.execute('UPDATE core_documentpart SET "order" = ? WHERE id = ?', (a[1], b[0]))


def _line_deleted(db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM core_line WHERE id = (SELECT max(l.id) FROM core_line l JOIN core_documentpart p "
               "ON p.id = l.document_part_id WHERE p.document_id = 2)")


def _image_size(db: sqlite3.Connection) -> None:
    part = first(db, "SELECT min(id) FROM core_documentpart WHERE document_id = 2")
    db.execute("INSERT OR REPLACE INTO pipeline_image_size (part_id, width, height) VALUES (?, 101, 140)",
               (part,))


def _part_metadata(db: sqlite3.Connection) -> None:
    part = first(db, "SELECT min(id) FROM core_documentpart WHERE document_id = 2")
    db.execute("INSERT OR IGNORE INTO core_metadata (name) VALUES ('folio')")
    db.execute("INSERT INTO core_documentpartmetadata (part_id, key_id, value) "
               "SELECT ?, id, '12r' FROM core_metadata WHERE name = 'folio'", (part,))


def _line_type_renamed(db: sqlite3.Connection) -> None:
    """A type's name is in every document that uses it: both documents are stale."""
    db.execute("UPDATE core_linetype SET name = name || ' (renamed)' WHERE id = 1")


EDITS: dict[str, tuple[Callable[[sqlite3.Connection], None], list[int]]] = {
    "text, same length": (_text, [2]),
    "baseline point": (_baseline, [2]),
    "region type": (_region_type, [2]),
    "page order": (_order, [2]),
    "line deleted": (_line_deleted, [2]),
    "image size stored": (_image_size, [2]),
    "part metadata": (_part_metadata, [2]),
    "line type renamed": (_line_type_renamed, [1, 2]),
}


def exported_demo(folder: Path) -> Path:
    """Two documents, exported once (the registry is in the corpus file); returns the job."""
    config = job(folder, f'corpus = "{demo(folder, parts=3, documents=2)}"')
    assert main(["-q", "run", str(config)]) == 0 and exported(folder) == [1, 2]
    return config


@pytest.mark.parametrize("edit", list(EDITS))
def test_every_edit_makes_the_document_stale(tmp_path: Path, edit: str) -> None:
    change, stale = EDITS[edit]
    config = exported_demo(tmp_path)
    with sqlite3.connect(tmp_path / "corpus.sqlite") as db:
        change(db)
    assert main(["-q", "run", str(config)]) == 0
    assert exported(tmp_path) == stale


def test_a_replaced_image_file_makes_the_document_stale(tmp_path: Path) -> None:
    """Same name, new bytes (a rescan): seen from the file's size and time, not by reading it."""
    config = exported_demo(tmp_path)
    with sqlite3.connect(tmp_path / "corpus.sqlite") as db:
        image = first(db, "SELECT image FROM core_documentpart WHERE document_id = 1 ORDER BY id LIMIT 1")
    path = tmp_path / "corpus.media" / image
    path.write_bytes(path.read_bytes() + b"\0")
    assert main(["-q", "run", str(config)]) == 0
    assert exported(tmp_path) == [1]


def test_a_folder_source_sees_an_edited_page(tmp_path: Path) -> None:
    folder = shutil.copytree(FIXTURES / "escriptorium-tapuscorpus" / "alto", tmp_path / "alto")
    config = job(tmp_path, f'source = "{folder}"')
    assert main(["-q", "run", str(config)]) == 0 and exported(tmp_path) == [1]
    assert main(["-q", "run", str(config)]) == 0 and exported(tmp_path) == []
    page = sorted(folder.glob("*.xml"))[-1]
    page.write_text(page.read_text(encoding="utf-8").replace('CONTENT="', 'CONTENT="x', 1), encoding="utf-8")
    assert main(["-q", "run", str(config)]) == 0 and exported(tmp_path) == [1]


def test_an_exchange_source_sees_an_edited_text(tmp_path: Path) -> None:
    """The archive's directory is its marker: a text edited in place (its CRC changes) is seen."""
    source = tmp_path / "exchange.zip"
    with zipfile.ZipFile(source, "w") as zf:
        zf.writestr("test/letter_a.txt", "Dear Sir,\nI write to you\n")
        zf.writestr("test/letter_b.txt", "Madam,\nthe parcel came\n")
    config = job(tmp_path, f'source = "{source}"', '[[outputs]]\nformat = "text"\n')
    assert main(["-q", "run", str(config)]) == 0 and len(exported(tmp_path)) == 2
    assert main(["-q", "run", str(config)]) == 0 and exported(tmp_path) == []
    with zipfile.ZipFile(source, "w") as zf:
        zf.writestr("test/letter_a.txt", "Dear Sir,\nI wrote to you\n")
        zf.writestr("test/letter_b.txt", "Madam,\nthe parcel came\n")
    assert main(["-q", "run", str(config)]) == 0 and len(exported(tmp_path)) == 2


#: edits made in eScriptorium's database (its own statements: eScriptorium bumps no timestamp
#: for a line's text or geometry), and which of the two documents they make stale
PG_EDITS: dict[str, tuple[str, set[int]]] = {
    "text, same length": (
        "UPDATE core_linetranscription SET content = translate(content, 'aeiou', 'eioua') WHERE id = ("
        " SELECT t.id FROM core_linetranscription t JOIN core_line l ON l.id = t.line_id"
        " JOIN core_documentpart p ON p.id = l.document_part_id WHERE p.document_id = 2"
        " AND content ~ '[aeiou]' ORDER BY t.id LIMIT 1)", {2}),
    "baseline point": (
        "UPDATE core_line SET baseline = jsonb_set(baseline, '{0,1}', to_jsonb((baseline->0->>1)::float + 1))"
        " WHERE id = (SELECT l.id FROM core_line l JOIN core_documentpart p ON p.id = l.document_part_id"
        " WHERE p.document_id = 2 AND l.baseline IS NOT NULL ORDER BY l.id LIMIT 1)", {2}),
    "line moved to another region": (
        "UPDATE core_line SET block_id = NULL WHERE id = (SELECT l.id FROM core_line l"
        " JOIN core_documentpart p ON p.id = l.document_part_id WHERE p.document_id = 2"
        " AND l.block_id IS NOT NULL ORDER BY l.id LIMIT 1)", {2}),
    "line type renamed": ("UPDATE core_linetype SET name = name || ' (renamed)' WHERE id = 1", {1, 2}),
}


def test_postgres_markers_see_edits_that_bump_no_timestamp(pg_cluster: Any, tmp_path: Path) -> None:
    """The PostgreSQL source's marker changes with each edit, for the documents it touches only,
    and with an image file rescanned under the same name."""
    from pipeline.sources.postgres import PostgresSource
    from tests.pgcluster import demo_database

    store = demo_database(pg_cluster, "markers", tmp_path, documents=2, parts=3, lines=4,
                          image_size=(100, 140), image_format="jpeg", seed=3)

    async def markers() -> dict[int, str]:
        with PostgresSource(store.corpus, media_root=store.media_root) as pg:
            return {doc: await pg.change_marker(await pg.document(doc)) for doc in (1, 2)}

    before = anyio.run(markers)
    assert anyio.run(markers) == before  # stable: nothing of the reading goes into it
    for edit, (statement, stale) in PG_EDITS.items():
        with pg_cluster.connect("markers") as conn:
            assert conn.execute(statement).rowcount == 1 or edit == "line type renamed", edit
        after = anyio.run(markers)
        assert {doc for doc in (1, 2) if after[doc] != before[doc]} == stale, edit
        before = after
    assert store.media_root is not None
    image = sorted((store.media_root / "documents" / "1").iterdir())[0]
    image.write_bytes(image.read_bytes() + b"\0")
    after = anyio.run(markers)
    assert after[1] != before[1] and after[2] == before[2]


def test_a_iiif_manifest_source_sees_an_edited_manifest(demo_corpus: Path, tmp_path: Path) -> None:
    """A job reading a IIIF manifest (a file, the demo's own): skipped unchanged, exported again
    once the manifest is rewritten (its size and time change)."""
    assert main(["-q", "export", "--corpus", str(demo_corpus), "--document", "1", "--format", "iiif",
                 "--registry", str(tmp_path / "r.sqlite"), "-o", str(tmp_path / "m.zip")]) == 0
    manifest = tmp_path / "manifest.json"
    with zipfile.ZipFile(tmp_path / "m.zip") as zf:
        manifest.write_bytes(zf.read("manifest.json"))
    config = job(tmp_path, f'source = "{manifest}"')
    assert main(["-q", "run", str(config)]) == 0 and exported(tmp_path) == [1]
    assert main(["-q", "run", str(config)]) == 0 and exported(tmp_path) == []
    data = json.loads(manifest.read_text(encoding="utf-8"))
    data["label"] = {"none": ["Renamed"]}
    manifest.write_text(json.dumps(data), encoding="utf-8")
    assert main(["-q", "run", str(config)]) == 0 and exported(tmp_path) == [1]
