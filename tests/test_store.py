"""The corpus store on real files: opening checks, reading order and content, bounded cost."""

from __future__ import annotations

import contextlib
import sqlite3
import tracemalloc
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from pipeline.demo import build_demo
from pipeline.errors import CorpusError, UsageError
from pipeline.model import Document, Part
from pipeline.store import Corpus

T = TypeVar("T")


def run(fn: Callable[..., Coroutine[Any, Any, T]], *args: object) -> T:
    return anyio.run(fn, *args)


async def _all_parts(path: Path, layer: str = "manual", **kwargs: Any) -> list[Part]:
    with Corpus.open(path) as corpus:
        document = await corpus.document(1)
        return [part async for part in corpus.parts(document, layer, **kwargs)]


async def _first_document(path: Path) -> Document:
    with Corpus.open(path) as corpus:
        return await corpus.document(1)


def _fingerprint(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


# -- opening ------------------------------------------------------------------------------------


def _assert_rejected(path: Path, words: str) -> None:
    before = _fingerprint(path)
    for create in (False, True):
        with pytest.raises(CorpusError) as info:
            Corpus.open(path, create=create)
        message = str(info.value)
        assert str(path) in message and words in message and "\n" not in message
    assert _fingerprint(path) == before


def test_open_rejects_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_text("just some notes\n" * 20)
    _assert_rejected(path, "not an SQLite database")


def test_open_rejects_another_applications_database(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO things (name) VALUES ('x')")
        conn.commit()
    _assert_rejected(path, "no pipeline_meta")


def test_open_rejects_another_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    Corpus.open(path, create=True).close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE pipeline_meta SET value = '99' WHERE key = 'schema_version'")
        conn.commit()
    _assert_rejected(path, "schema version 99")


def test_open_missing_or_empty_file_needs_create(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no such corpus file"):
        Corpus.open(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with pytest.raises(CorpusError, match="empty file"):
        Corpus.open(empty)
    assert empty.stat().st_size == 0


def test_create_makes_a_corpus_with_media_root_next_to_it(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    with Corpus.open(path, create=True) as corpus:
        assert corpus.path == path
        assert corpus.media_root == (tmp_path / "new.media").resolve()
        meta = dict(corpus.connection.execute("SELECT key, value FROM pipeline_meta"))
        assert meta == {"schema_version": "2", "media_root": "new.media"}
        assert corpus.connection.execute("PRAGMA foreign_keys").fetchone() == (1,)
    with Corpus.open(path, create=True):  # an empty corpus may be reused
        pass


def test_create_refuses_a_corpus_with_documents(demo_corpus: Path) -> None:
    before = _fingerprint(demo_corpus)
    with pytest.raises(CorpusError, match="holds 2 documents"):
        Corpus.open(demo_corpus, create=True)
    assert _fingerprint(demo_corpus) == before


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    with Corpus.open(tmp_path / "c.sqlite", create=True) as corpus:
        with pytest.raises(RuntimeError), corpus.transaction() as writer:
            writer.add_document("doomed")
            raise RuntimeError("boom")
        assert corpus.connection.execute("SELECT COUNT(*) FROM core_document").fetchone() == (0,)
        with corpus.transaction() as writer:
            doc = writer.add_document("kept")
            assert writer.add_block_type("Main") == writer.add_block_type("Main")
            writer.add_layer(doc, "manual")
        assert run(_names, corpus) == ["kept"]


async def _names(corpus: Corpus) -> list[str]:
    return [d.name async for d in corpus.documents()]


# -- documents ----------------------------------------------------------------------------------


def test_documents_by_id_and_name(demo_corpus: Path) -> None:
    async def main() -> None:
        with Corpus.open(demo_corpus) as corpus:
            everything = [d async for d in corpus.documents()]
            assert [d.id for d in everything] == [1, 2]
            name = everything[1].name
            assert [d.id async for d in corpus.documents([name])] == [2]
            assert [d.id async for d in corpus.documents(["2", 1])] == [1, 2]
            with pytest.raises(UsageError, match="'nope'"):
                [d async for d in corpus.documents(["1", "nope"])]
            with pytest.raises(UsageError, match=r"no document 'missing' in corpus .*demo\.sqlite"):
                await corpus.document("missing")
            assert (await corpus.document(name)).id == 2

    run(main)


def test_document_fields(demo_corpus: Path) -> None:
    doc = run(_first_document, demo_corpus)
    assert [t.name for t in doc.valid_block_types] == ["Title", "Main", "Commentary", "Illustration"]
    assert [t.name for t in doc.valid_line_types] == ["Main", "Heading"]
    assert [t.name for t in doc.block_types] == ["Title", "Main", "Commentary", "Illustration", "Marginalia"]
    assert [t.id for t in doc.block_types] == sorted(t.id for t in doc.block_types)
    assert [(la.name, la.archived) for la in doc.layers] == [
        ("manual", False), ("kraken:catmus-medieval-1.5", False), ("Zip import 2024-03-01 10:00", True)]
    assert "demo" in doc.tags and ("Language", "lat") in doc.metadata
    assert doc.part_count == 4
    assert doc.created_at is not None and doc.created_at.tzinfo is not None


# -- parts --------------------------------------------------------------------------------------


def test_parts_come_in_order_and_part_ids_filter_in_any_order(demo_corpus: Path) -> None:
    parts = run(_all_parts, demo_corpus)
    assert [p.order for p in parts] == [0, 1, 2, 3]
    ids = [p.id for p in parts]
    chosen = run(lambda: _all_parts(demo_corpus, part_ids=[ids[3], ids[0], ids[2], ids[0]]))
    assert [p.id for p in chosen] == [ids[0], ids[2], ids[3]]
    with pytest.raises(UsageError, match="no part 9999"):
        run(lambda: _all_parts(demo_corpus, part_ids=[ids[0], 9999]))
    other_documents_part = ids[-1] + 1
    with pytest.raises(UsageError, match=f"no part {other_documents_part} "):
        run(lambda: _all_parts(demo_corpus, part_ids=[other_documents_part]))


def test_part_ids_from_page_numbers(demo_corpus: Path) -> None:
    async def main() -> None:
        with Corpus.open(demo_corpus) as corpus:
            document = await corpus.document(2)
            ids = [p.id async for p in corpus.parts(document)]
            assert await corpus.part_ids(document, [4, 1, 2]) == (ids[0], ids[1], ids[3])
            with pytest.raises(UsageError, match="no page 5, 9 in document 2"):
                await corpus.part_ids(document, [1, 5, 9])

    run(main)


def test_unknown_or_archived_layer_lists_the_available_ones(demo_corpus: Path) -> None:
    doc = run(_first_document, demo_corpus)
    for name, state in (("nope", "does not exist"), (doc.layers[2].name, "is archived")):
        with pytest.raises(UsageError) as info:
            run(lambda name=name: _all_parts(demo_corpus, name))
        message = str(info.value)
        assert f"{name!r} {state}" in message
        assert message.endswith("available: 'manual', 'kraken:catmus-medieval-1.5'")


def test_part_content(demo_corpus: Path) -> None:
    parts = run(_all_parts, demo_corpus)
    first = parts[0]
    assert first.image.startswith("documents/1/")
    assert first.image_path == str(Path(demo_corpus).parent.resolve() / "demo.media" / first.image)
    assert (first.width, first.height) == (600, 800)
    assert ("Folio", "1r") in first.metadata
    assert first.created_at is not None and first.created_at.microsecond
    assert parts[1].original_filename == "" and parts[1].typology == "Page" and parts[1].title == "Page 2"
    assert [p.original_filename for p in parts[2:]] == ["f003.jpg", "f003.png"]
    texts = [line.text for line in first.lines]
    assert "" in texts and "\u05d1" in "".join(t for t in texts if t)
    assert any(line.mask is None and line.baseline is None for line in first.lines)


def test_size_missing_from_the_side_table_comes_from_the_image_header(demo_corpus: Path) -> None:
    with contextlib.closing(sqlite3.connect(demo_corpus)) as conn:
        sized = {pid for (pid,) in conn.execute("SELECT part_id FROM pipeline_image_size")}
    part = run(_all_parts, demo_corpus)[1]
    assert part.id not in sized and (part.width, part.height) == (600, 800)
    with contextlib.closing(sqlite3.connect(demo_corpus)) as conn:
        assert {pid for (pid,) in conn.execute("SELECT part_id FROM pipeline_image_size")} == sized


def test_lines_without_a_row_in_the_layer_have_no_text_and_orphans_no_region(demo_corpus: Path) -> None:
    with contextlib.closing(sqlite3.connect(demo_corpus)) as conn:
        absent = {
            lid
            for (lid,) in conn.execute(
                """SELECT l.id FROM core_line l JOIN core_documentpart p ON p.id = l.document_part_id
                   WHERE p.document_id = 1 AND NOT EXISTS (SELECT 1 FROM core_linetranscription t
                   JOIN core_transcription tr ON tr.id = t.transcription_id
                   WHERE t.line_id = l.id AND tr.name = 'kraken:catmus-medieval-1.5')"""
            )
        }
        orphans = {lid for (lid,) in conn.execute("SELECT id FROM core_line WHERE block_id IS NULL")}
    assert absent and orphans
    kraken = run(_all_parts, demo_corpus, "kraken:catmus-medieval-1.5")
    lines = [line for part in kraken for line in part.lines]
    assert {line.id for line in lines if line.text is None} == absent
    assert all(line.region_id is None for line in lines if line.id in orphans)
    assert {line.confidence for line in lines} >= {0.0, None}


def test_blocks_and_lines_are_ordered_as_the_spec_says(demo_corpus: Path) -> None:
    for part in run(_all_parts, demo_corpus):
        assert [line.order for line in part.lines] == sorted(line.order for line in part.lines)

        def key(region: Any, part: Part = part) -> tuple[bool, float, int, int]:
            orders = [line.order for line in part.lines if line.region_id == region.id]
            avg = sum(orders) / len(orders) if orders else 0.0
            return (not orders, avg, region.order, region.id)

        assert list(part.regions) == sorted(part.regions, key=key)
        assert [r.order for r in part.regions] != sorted(r.order for r in part.regions)
        assert part.regions[-1].type is not None and part.regions[-1].type.name == "Illustration"


def test_annotations_of_the_layer(demo_corpus: Path) -> None:
    first = run(_all_parts, demo_corpus)[0]
    person, place = first.annotations
    assert (person.taxonomy.name, person.taxonomy.abbreviation, person.value) == ("Person", "PER", None)
    assert person.comments == ("check & verify",)
    assert place.start_line_id != place.end_line_id and place.value == "Paris & <Île-de-France>"
    kraken = run(_all_parts, demo_corpus, "kraken:catmus-medieval-1.5")[0]
    assert [a.value for a in kraken.annotations] == ["Q1"]
    bare = run(lambda: _all_parts(demo_corpus, annotations=False))[0]
    assert bare.annotations == () and bare.lines == first.lines


# -- bounded cost -------------------------------------------------------------------------------


def _small_corpus(directory: Path, parts: int, lines: int) -> Path:
    path = directory / f"c{parts}x{lines}.sqlite"
    build_demo(path, documents=1, parts=parts, lines=lines, image_size=(200, 280))
    return path


async def _count_statements(path: Path) -> int:
    with Corpus.open(path) as corpus:
        document = await corpus.document(1)
        statements: list[str] = []
        corpus.connection.set_trace_callback(statements.append)
        async for _ in corpus.parts(document):
            pass
        return len(statements)


def test_statements_per_part_are_constant(tmp_path: Path) -> None:
    few = run(_count_statements, _small_corpus(tmp_path, 20, 5))
    many = run(_count_statements, _small_corpus(tmp_path, 200, 5))
    long_lines = run(_count_statements, _small_corpus(tmp_path, 20, 50))
    assert few == long_lines
    assert many / 200 <= 5
    assert (many - few) / 180 <= 4.1


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _small_corpus(tmp_path_factory.mktemp("big"), 2000, 10)


async def _peak(corpus: Corpus, document: Document, limit: int) -> int:
    tracemalloc.reset_peak()
    seen = 0
    async with contextlib.aclosing(corpus.parts(document)) as parts:
        async for part in parts:
            seen += 1
            del part
            if seen == limit:
                break
    assert seen == limit
    return tracemalloc.get_traced_memory()[1]


def test_memory_stays_flat_over_thousands_of_parts(big_corpus: Path) -> None:
    async def main() -> tuple[int, int]:
        with Corpus.open(big_corpus) as corpus:
            document = await corpus.document(1)
            await _peak(corpus, document, 70)  # warm caches: statements, imports, thread pool
            return await _peak(corpus, document, 100), await _peak(corpus, document, 2000)

    tracemalloc.start()
    try:
        small, large = run(main)
    finally:
        tracemalloc.stop()
    assert large <= max(small * 1.5, small + 2 * 1024 * 1024), (small, large)


@pytest.mark.parametrize(("column", "value"), [
    ("mask", "[[1, 2], [3, 4"),      # not JSON
    ("baseline", "[[1, 2, 3]]"),     # not x,y pairs
    ("baseline", "[1, 2]"),          # not a list of points
    ("mask", "[[1, 2]] [[3, 4]]"),   # two values
])
def test_a_corrupt_polygon_names_its_line(tmp_path: Path, column: str, value: str) -> None:
    corpus = tmp_path / "c.sqlite"
    build_demo(corpus, documents=1, parts=2, lines=12, image_size=(200, 300), link_images=True)
    with contextlib.closing(sqlite3.connect(corpus)) as conn, conn:
        (line_id,) = conn.execute('SELECT id FROM core_line WHERE "order" = 3 LIMIT 1').fetchone()
        conn.execute(f"UPDATE core_line SET {column} = ? WHERE id = ?", (value, line_id))
    named = rf"bad polygon in document 1 \(.*\), part \d \(id \d+\), line {line_id}\b"
    with pytest.raises(CorpusError, match=named):
        run(_all_parts, corpus)
