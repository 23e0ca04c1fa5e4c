"""eScriptorium's PostgreSQL as a source, through its Python interface, against a real server.

The source connects as ``reader``, a role with SELECT grants only, so any write would fail. The
demo is the same in both stores (``pipeline.pgdemo`` copies it), so archives must be the same bytes.
"""

from __future__ import annotations

import dataclasses
import math
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from pipeline.errors import CorpusError, UsageError
from pipeline.export import ExportOptions, export_document
from pipeline.images import ImageOptions
from pipeline.imagesizes import ImageSizeCache
from pipeline.model import Part
from pipeline.pgdemo import build_postgres_demo, ddl
from pipeline.registry import Registry
from pipeline.sources.postgres import FIRST_PAGE, PAGE_LINES, PART_PAGE, PostgresSource, Selection, redact
from pipeline.store import Corpus
from pipeline.verify import verify_archive
from tests.pgcluster import BIG_PARTS, READER, READER_PASSWORD, SUPERUSER, PgCluster, Store, free_port

FORMATS = [
    ExportOptions(format="alto"),
    ExportOptions(format="page", layer="kraken:catmus-medieval-1.5", regions="Main,orphan"),
    ExportOptions(format="text"),
    ExportOptions(format="exchange"),
    ExportOptions(format="alto", images=True),
    ExportOptions(format="page", images=True, image=ImageOptions(format="png", max_size=300)),
]


def source(store: Store, **kw: Any) -> PostgresSource:
    return PostgresSource(store.corpus, media_root=store.media_root, **kw)


async def _export(
    src: Any, out: Path, options: ExportOptions, doc: int = 1, registry: Path | None = None
) -> None:
    document = await src.document(doc)
    await export_document(
        src, document, options, out, registry=Registry(registry) if registry else None
    )


def export(src: Any, out: Path, options: ExportOptions, doc: int = 1, registry: Path | None = None) -> None:
    anyio.run(_export, src, out, options, doc, registry)


def statuses(registry: Path) -> list[str]:
    with sqlite3.connect(registry) as db:
        return [r[0] for r in db.execute("SELECT status FROM pipeline_export ORDER BY started_at")]


@pytest.mark.parametrize("options", FORMATS, ids=lambda o: f"{o.format}{'-images' if o.images else ''}")
@pytest.mark.parametrize("doc", [1, 2])
def test_same_demo_gives_byte_identical_archives(
    demo_corpus: Path, pg_demo: Store, tmp_path: Path, options: ExportOptions, doc: int
) -> None:
    with Corpus.open(demo_corpus, readonly=True) as corpus:
        export(corpus, tmp_path / "sqlite.out", options, doc)
    with source(pg_demo) as pg:
        export(pg, tmp_path / "pg.out", options, doc)
    assert (tmp_path / "sqlite.out").read_bytes() == (tmp_path / "pg.out").read_bytes()
    if options.format in ("alto", "page"):
        assert verify_archive(tmp_path / "pg.out") == []


def _no_path(part: Part) -> Part:
    return dataclasses.replace(part, image_path=None)


def test_documents_and_parts_read_alike_from_both_stores(demo_corpus: Path, pg_demo: Store) -> None:
    """Documents (layers, types, tags, metadata) and every field of every part, in every layer;
    parts by id come in document order."""

    async def read() -> None:
        with source(pg_demo) as pg, Corpus.open(demo_corpus, readonly=True) as corpus:
            pg_docs = [d async for d in pg.documents()]
            assert pg_docs == [d async for d in corpus.documents()]
            for doc in pg_docs:
                for layer in (la.name for la in doc.layers if not la.archived):
                    pg_parts = [p async for p in pg.parts(doc, layer)]
                    parts = [p async for p in corpus.parts(doc, layer)]
                    assert [p.image_path for p in pg_parts] == [
                        str(pg_demo.media_root / p.image) for p in parts
                    ]
                    assert [_no_path(p) for p in pg_parts] == [_no_path(p) for p in parts]
                picked = [p.id for p in parts[::-2]]
                assert [p.id async for p in pg.parts(doc, layer, picked)] == sorted(picked)
                assert await pg.part_ids(doc, [3, 1]) == await corpus.part_ids(doc, [3, 1])

    anyio.run(read)


def test_image_sizes_are_cached_by_path_size_and_mtime(pg_demo: Store, tmp_path: Path) -> None:
    cache = tmp_path / "registry.sqlite"

    async def sizes() -> list[tuple[int, int]]:
        with source(pg_demo, sizes=ImageSizeCache(cache)) as pg:
            doc = await pg.document(1)
            return [(p.width, p.height) async for p in pg.parts(doc, "manual")]

    assert anyio.run(sizes) == [(600, 800)] * 4
    with sqlite3.connect(cache) as db:
        db.execute("UPDATE pipeline_image_size_cache SET width = 1")  # what a stale entry would say
    assert anyio.run(sizes) == [(1, 800)] * 4  # read from the cache, not the files
    assert pg_demo.media_root is not None
    first = sorted((pg_demo.media_root / "documents" / "1").iterdir())[0]
    stat = first.stat()
    import os

    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # touched: read again
    try:
        assert anyio.run(sizes) == [(600, 800)] + [(1, 800)] * 3
    finally:
        os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_document_is_one_snapshot_while_others_edit(pg_big: Store, pg_cluster: PgCluster) -> None:
    """REPEATABLE READ: an edit committed after reading began is not seen, even pages later; the
    next read sees it."""
    edit = (
        "UPDATE core_linetranscription SET content = %s WHERE id = ("
        " SELECT t.id FROM core_linetranscription t JOIN core_line l ON l.id = t.line_id"
        " JOIN core_documentpart p ON p.id = l.document_part_id"
        ' WHERE p."order" = %s AND t.transcription_id = 1 ORDER BY l."order" LIMIT 1)'
    )

    async def last_text(change: bool) -> str | None:
        with source(pg_big, part_page=16) as pg:
            doc = await pg.document(1)
            last = None
            async for part in pg.parts(doc, "manual"):
                if part.order == 0 and change:
                    with pg_cluster.connect("big") as conn:
                        conn.execute(edit, ("edited meanwhile", BIG_PARTS - 1))
                last = part.lines[0].text
            return last

    before = anyio.run(last_text, True)
    try:
        assert before != "edited meanwhile"
        assert anyio.run(last_text, False) == "edited meanwhile"
    finally:
        with pg_cluster.connect("big") as conn:
            conn.execute(edit, (before, BIG_PARTS - 1))


def test_statements_per_document_are_bounded_by_pages(
    pg_big: Store, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    """``pg_stat_statements`` counts what the reader role ran for one ALTO export of BIG_PARTS parts:
    five per page of parts plus a constant, whatever the number of parts or lines."""
    with pg_cluster.connect("big") as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")
    with source(pg_big) as pg:
        export(pg, tmp_path / "big.zip", ExportOptions(format="alto"))
    with pg_cluster.connect("big") as conn:
        (calls,) = conn.execute(
            "SELECT COALESCE(SUM(s.calls), 0) FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid"
            " JOIN pg_database d ON d.oid = s.dbid WHERE r.rolname = %s AND d.datname = 'big'",
            (READER,),
        ).fetchone()
    pages = 1 + math.ceil((BIG_PARTS - FIRST_PAGE) / PART_PAGE)
    print(f"{calls} statements for one document of {BIG_PARTS} parts ({pages} pages of {PART_PAGE})")
    assert pages * 5 <= calls <= pages * 5 + 30


def test_selection_by_project_tag_and_workflow_state(pg_faulty: Store, pg_cluster: PgCluster) -> None:
    async def chosen(selection: Selection | None = None) -> list[int]:
        with source(pg_faulty) as pg:
            return [d.id async for d in pg.documents(selection)]

    with pg_cluster.connect("faulty") as conn:
        conn.execute("UPDATE core_document SET workflow_state = 3 WHERE id = 2")
        conn.execute(
            "INSERT INTO core_project (id, name, slug, created_at, updated_at)"
            " VALUES (7, 'Other', 'other', now(), now())"
        )
    try:
        assert anyio.run(chosen) == [1]
        assert anyio.run(chosen, Selection(include_archived=True)) == [1, 2]
        assert anyio.run(chosen, Selection(states=("archived",))) == [2]
        assert anyio.run(chosen, Selection(project="demo", include_archived=True)) == [1, 2]
        assert anyio.run(chosen, Selection(project=1)) == [1]
        assert anyio.run(chosen, Selection(project="other")) == []
        assert anyio.run(chosen, Selection(tags=("médiéval",), include_archived=True)) == [1]
        assert anyio.run(chosen, Selection(documents=(2,))) == [2]  # named: archived or not
        with pytest.raises(UsageError, match="no project 'nope'"):
            anyio.run(chosen, Selection(project="nope"))
        with pytest.raises(UsageError, match="unknown workflow state"):
            anyio.run(chosen, Selection(states=("lost",)))
    finally:
        with pg_cluster.connect("faulty") as conn:
            conn.execute("UPDATE core_document SET workflow_state = 0 WHERE id = 2")
            conn.execute("DELETE FROM core_project WHERE id = 7")


def test_libpq_environment_passfile_and_service(
    pg_demo: Store, pg_cluster: PgCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg_cluster.port}:demo:{READER}:{READER_PASSWORD}\n")
    passfile.chmod(0o600)
    services = tmp_path / "services"
    services.write_text(f"[pipetest]\nhost=127.0.0.1\nport={pg_cluster.port}\ndbname=demo\nuser={READER}\n")
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    monkeypatch.setenv("PGSERVICEFILE", str(services))

    async def name(url: str) -> str:
        with PostgresSource(url, media_root=pg_demo.media_root) as pg:
            return (await pg.document(1)).name

    expected = anyio.run(name, pg_demo.corpus)
    assert anyio.run(name, "postgresql:///?service=pipetest") == expected
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(pg_cluster.port))
    monkeypatch.setenv("PGUSER", READER)
    assert anyio.run(name, "postgresql:///demo") == expected


def test_demo_fills_an_empty_database_only(pg_cluster: PgCluster, tmp_path: Path) -> None:
    pg_cluster.create_database("fresh")
    url = pg_cluster.url("fresh", user=SUPERUSER, password=None)
    summary = build_postgres_demo(url, media_root=tmp_path / "media", parts=2, lines=6, image_size=(300, 400))
    assert (summary.parts, len(list((tmp_path / "media" / "documents").rglob("*.jpg")))) == (4, 4)
    with pg_cluster.connect("fresh") as conn:
        assert conn.execute("SELECT COUNT(*) FROM core_documentpart").fetchone() == (4,)
    with pytest.raises(UsageError, match="already has eScriptorium tables"):
        build_postgres_demo(url, media_root=tmp_path / "media2")
    assert not any((tmp_path / "media2").iterdir())


def test_schema_is_escriptoriums(pg_demo: Store, pg_cluster: PgCluster) -> None:
    """Deferred foreign keys without ON DELETE, no composite index on lines, stock types from 1,
    jsonb geometry and timestamptz, no image size column anywhere."""
    with pg_cluster.connect("demo") as conn:
        fks = conn.execute(
            "SELECT confdeltype, condeferrable, condeferred FROM pg_constraint WHERE contype = 'f'"
        )
        assert set(fks.fetchall()) == {("a", True, True)}
        multi = conn.execute(
            "SELECT indexrelid::regclass FROM pg_index"
            " WHERE indrelid = 'core_line'::regclass AND indnatts > 1"
        ).fetchall()
        assert multi == []
        kinds = conn.execute(
            "SELECT DISTINCT data_type FROM information_schema.columns"
            " WHERE column_name IN ('box', 'mask', 'baseline', 'created_at')"
        ).fetchall()
        assert sorted(kinds) == [("jsonb",), ("timestamp with time zone",)]
        sizes = "SELECT COUNT(*) FROM information_schema.columns WHERE column_name IN ('width', 'height')"
        assert conn.execute(sizes).fetchone() == (0,)
        assert conn.execute("SELECT id, name FROM core_linetype ORDER BY id LIMIT 1").fetchone() == (
            1,
            "Main",
        )
        assert conn.execute("SELECT id, name FROM core_blocktype ORDER BY id LIMIT 1").fetchone() == (
            1,
            "Title",
        )


# -- faults -----------------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and READER_PASSWORD not in text
    return text


@pytest.mark.parametrize("what", ["host", "port", "password", "database"])
def test_wrong_connection_is_one_line(pg_demo: Store, pg_cluster: PgCluster, what: str) -> None:
    port, auth = pg_cluster.port, f"{READER}:{READER_PASSWORD}"
    url = {
        "host": f"postgresql://{auth}@127.0.0.2:{port}/demo",
        "port": f"postgresql://{auth}@127.0.0.1:{free_port()}/demo",
        "password": f"postgresql://{READER}:wrong-{READER_PASSWORD}@127.0.0.1:{port}/demo",
        "database": f"postgresql://{auth}@127.0.0.1:{port}/nosuchdb",
    }[what]
    with pytest.raises(CorpusError) as caught, PostgresSource(url, media_root=pg_demo.media_root) as pg:
        anyio.run(pg.document, 1)
    line = _one_line(caught.value)
    assert line.startswith(f"{redact(url)}: cannot connect: ")
    expected = {
        "host": "127.0.0.2",
        "port": "Connection refused",
        "password": "password authentication failed",
        "database": 'database "nosuchdb" does not exist',
    }[what]
    assert expected in line


@pytest.mark.parametrize("missing", ["table", "column"])
def test_not_an_escriptorium_database_names_what_is_missing(
    pg_cluster: PgCluster, tmp_path: Path, missing: str
) -> None:
    db = pg_cluster.create_database(f"not_esc_{missing}")
    with pg_cluster.connect(db) as conn:
        conn.execute(ddl())
        conn.execute(
            "DROP TABLE core_linetranscription CASCADE"
            if missing == "table"
            else "ALTER TABLE core_line DROP COLUMN baseline"
        )
    pg_cluster.grant_reader(db)
    with pytest.raises(CorpusError) as caught, PostgresSource(pg_cluster.url(db), media_root=tmp_path) as pg:
        anyio.run(pg.document, 1)
    name = "table core_linetranscription" if missing == "table" else "column core_line.baseline"
    assert _one_line(caught.value).endswith(f"not an eScriptorium database ({name} is missing)")


@pytest.mark.parametrize(
    "geometry", ['[[10, "x"]]', '{"x": 1}', "[[1, 2, 3], [4, 5, 6]]", '"M 1 2"', "[[true, 1]]"]
)
def test_geometry_that_is_not_number_pairs_names_the_line(
    pg_faulty: Store, pg_cluster: PgCluster, tmp_path: Path, geometry: str
) -> None:
    with pg_cluster.connect("faulty") as conn:
        line_id, old = conn.execute(
            "SELECT l.id, l.baseline::text FROM core_line l"
            " JOIN core_documentpart p ON p.id = l.document_part_id"
            ' WHERE p.document_id = 1 AND p."order" = 1 AND l.baseline IS NOT NULL ORDER BY l.id LIMIT 1'
        ).fetchone()
        conn.execute("UPDATE core_line SET baseline = %s::jsonb WHERE id = %s", (geometry, line_id))
    registry = tmp_path / "registry.sqlite"
    try:
        with pytest.raises(CorpusError) as caught, source(pg_faulty) as pg:
            export(pg, tmp_path / "x.zip", ExportOptions(format="alto"), registry=registry)
    finally:
        with pg_cluster.connect("faulty") as conn:
            conn.execute("UPDATE core_line SET baseline = %s::jsonb WHERE id = %s", (old, line_id))
    line = _one_line(caught.value)
    assert "document 1 (" in line and "part 2 (id " in line and f"line {line_id}" in line
    assert "geometry is not a list of number pairs" in line
    assert not (tmp_path / "x.zip").exists() and statuses(registry) == ["failed"]


def _terminate_when_reading(cluster: PgCluster, db: str, how: str, stop: threading.Event) -> None:
    """Once the export's parts transaction has read a first page of lines: drop its connection."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not stop.is_set():
        with cluster.connect(db) as conn:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'pipeline' AND datname = %s"
                " AND xact_start IS NOT NULL AND query LIKE '%%l.baseline, l.mask%%'",
                (db,),
            ).fetchone()
            if row and how == "terminate":
                conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        if row:
            if how == "restart":
                cluster.restart()
            return
        time.sleep(0.002)


@pytest.mark.parametrize("how", ["terminate", "restart"])
def test_connection_lost_mid_export(pg_big: Store, pg_cluster: PgCluster, tmp_path: Path, how: str) -> None:
    out, registry = tmp_path / "big.zip", tmp_path / "registry.sqlite"
    stop = threading.Event()
    killer = threading.Thread(target=_terminate_when_reading, args=(pg_cluster, "big", how, stop))
    killer.start()
    try:
        with pytest.raises(CorpusError) as caught, source(pg_big) as pg:
            export(pg, out, ExportOptions(format="alto"), registry=registry)
    finally:
        stop.set()
        killer.join()
    assert "connection lost while reading document 1" in _one_line(caught.value)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["registry.sqlite"]
    assert statuses(registry) == ["failed"]
    with psycopg.connect(pg_big.corpus) as conn:  # the server is up again for what follows
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_cli_exports_from_the_database_by_url(
    demo_corpus: Path, pg_demo: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--corpus postgresql://... --media-root DIR`` opens the database through the sources seam:
    the archive is the one the SQLite corpus gives, recorded in the registry named, never in the
    database; the URL's password appears nowhere in the output."""
    from pipeline.cli import main

    registry = tmp_path / "registry.sqlite"
    assert main(["export", *pg_demo.args, "--document", "1", "--images", "--registry", str(registry),
                 "-o", str(tmp_path / "pg.zip")]) == 0
    assert main(["export", "--corpus", str(demo_corpus), "--document", "1", "--images",
                 "--registry", str(tmp_path / "other.sqlite"), "-o", str(tmp_path / "sqlite.zip")]) == 0
    assert (tmp_path / "pg.zip").read_bytes() == (tmp_path / "sqlite.zip").read_bytes()
    assert statuses(registry) == ["complete"]
    assert READER_PASSWORD not in capsys.readouterr().out


def test_session_is_read_only_repeatable_read_without_jit(pg_demo: Store) -> None:
    """What every connection of the source runs under (eScriptorium's jit=off; UTC for archives
    that do not depend on the server's time zone)."""

    async def settings() -> list[str]:
        with source(pg_demo) as pg:
            async with pg._connect("testing") as conn, conn.transaction():
                cur = await conn.execute(
                    "SELECT current_setting('jit'), current_setting('TimeZone'),"
                    " current_setting('transaction_read_only'), current_setting('transaction_isolation')"
                )
                row = await cur.fetchone()
                with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                    await conn.execute("CREATE TEMP TABLE t (x int)")
                return list(row or ())

    assert anyio.run(settings) == ["off", "UTC", "on", "repeatable read"]


def test_image_paths_never_leave_the_media_root(
    pg_faulty: Store, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    """A stored path with ``..`` (or absolute) is no file of this machine: the part has no image."""
    with pg_cluster.connect("faulty") as conn:
        (old,) = conn.execute("SELECT image FROM core_documentpart WHERE id = 2").fetchone()
        conn.execute("UPDATE core_documentpart SET image = '../../../../etc/passwd' WHERE id = 2")

    async def image_paths() -> list[str | None]:
        with source(pg_faulty) as pg:
            doc = await pg.document(1)
            return [p.image_path async for p in pg.parts(doc)]

    try:
        paths = anyio.run(image_paths)
    finally:
        with pg_cluster.connect("faulty") as conn:
            conn.execute("UPDATE core_documentpart SET image = %s WHERE id = 2", (old,))
    assert paths[1] is None and all(p and p.startswith(str(pg_faulty.media_root)) for p in paths[::2])


def test_pages_of_many_lines_hold_fewer_parts(pg_cluster: PgCluster, tmp_path: Path) -> None:
    """Memory holds about PAGE_LINES lines of rows: parts of 400 lines come 20 a page, not 64."""
    from tests.pgcluster import demo_database

    heavy = demo_database(
        pg_cluster,
        "heavy",
        tmp_path,
        documents=1,
        parts=40,
        lines=400,
        image_size=(300, 2400),
        link_images=True,
    )
    with pg_cluster.connect("heavy") as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")

    async def count() -> int:
        with source(heavy) as pg:
            doc = await pg.document(1)
            return sum([1 async for _ in pg.parts(doc)])

    assert anyio.run(count) == 40
    with pg_cluster.connect("heavy") as conn:
        (pages,) = conn.execute(
            "SELECT SUM(calls) FROM pg_stat_statements WHERE query LIKE '%%l.baseline, l.mask%%'"
        ).fetchone()
    per_page = PAGE_LINES // 400
    assert pages == 1 + math.ceil((40 - FIRST_PAGE) / per_page)
