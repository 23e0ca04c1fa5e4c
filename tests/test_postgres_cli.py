"""eScriptorium's PostgreSQL through the command line: export, run and demo, and their faults.

Exports connect as ``reader``, a role with SELECT grants only, so any write would fail. Faults go
through the CLI: one line on stderr, exit 1 or 2, nothing at the final name, a ``failed`` entry
in the registry, and never the password anywhere.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psycopg
import pytest

from pipeline.cli import main
from pipeline.registry import default_registry
from pipeline.sources.postgres import redact
from pipeline.verify import verify_archive
from tests.pgcluster import READER, READER_PASSWORD, SUPERUSER, PgCluster, Store, free_port

FORMATS = [
    ("alto",),
    ("page",),
    ("text",),
    ("exchange",),
    ("alto", "--images"),
    ("page", "--images", "--image-format", "png"),
]
#: parts of the large document (more than ten pages of PART_PAGE parts)


def run(*args: str | Path) -> int:
    return main([str(a) for a in args])


def export(store: Store, out: Path, *args: str, document: str = "1") -> int:
    return run(
        "export",
        *store.args,
        "--document",
        document,
        "-o",
        out,
        "--registry",
        out.parent / "registry.sqlite",
        *args,
    )


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command in a child process (for faults injected while it runs)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        check=False,
    )


def registry_rows(path: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT status, error FROM pipeline_export ORDER BY started_at").fetchall()


def assert_secret_kept(*texts: str) -> None:
    for text in texts:
        assert READER_PASSWORD not in text


def admin(cluster: PgCluster, db: str) -> psycopg.Connection:
    return cluster.connect(db)


# -- the same data, the same bytes ------------------------------------------------------------


@pytest.mark.parametrize("args", FORMATS, ids=lambda a: "-".join(a))
@pytest.mark.parametrize("document", ["1", "2"])
def test_same_demo_gives_byte_identical_archives(
    demo_corpus: Path, pg_demo: Store, tmp_path: Path, args: tuple[str, ...], document: str
) -> None:
    sqlite_store = Store("sqlite", str(demo_corpus))
    fmt, *rest = args
    a, b = tmp_path / "sqlite.out", tmp_path / "pg.out"
    assert export(sqlite_store, a, "--format", fmt, *rest, document=document) == 0
    assert export(pg_demo, b, "--format", fmt, *rest, document=document) == 0
    assert a.read_bytes() == b.read_bytes()
    if fmt in ("alto", "page"):
        assert verify_archive(b) == []


# -- the command line: export, run, demo ------------------------------------------------------


def test_job_from_a_database_writes_the_same_archives(
    demo_corpus: Path, pg_demo: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "job.toml"
    config.write_text(
        'name = "nightly"\n[select]\ntags = ["demo"]\n'
        '[[outputs]]\nformat = "alto"\n[[outputs]]\nformat = "text"\n'
        '[archive]\ndirectory = "out"\nname = "{document_id}-{format}"\n'
    )
    pg = [
        "--set",
        f"corpus={pg_demo.corpus}",
        "--set",
        f"media_root={pg_demo.media_root}",
        "--set",
        "archive.directory=" + str(tmp_path / "pg"),
    ]
    assert run("run", config, *pg, "--dry-run") == 0
    dry = capsys.readouterr().out
    assert "reader:***@" in dry and "2 documents" in dry
    assert_secret_kept(dry)
    assert run("run", config, *pg) == 0
    assert (
        run(
            "run",
            config,
            "--set",
            f"corpus={demo_corpus}",
            "--set",
            "archive.directory=" + str(tmp_path / "sqlite"),
            "--set",
            f"registry={tmp_path / 'r.sqlite'}",
        )
        == 0
    )
    names = sorted(p.name for p in (tmp_path / "pg").iterdir() if not p.name.startswith("."))
    assert names == ["1-alto.zip", "1-text.txt", "2-alto.zip", "2-text.txt", "nightly-report.json"]
    for name in names[:-1]:
        assert (tmp_path / "pg" / name).read_bytes() == (tmp_path / "sqlite" / name).read_bytes()
    assert_secret_kept(
        (tmp_path / "pg" / "nightly-report.json").read_text(),
        default_registry().read_bytes().decode("latin-1"),
    )
    # unchanged since: a second run exports nothing
    assert run("run", config, *pg, "--set", "select.changed_only=true") == 0
    assert "0 archives written, 4 unchanged" in capsys.readouterr().out


def test_demo_command_fills_an_empty_database_only(
    pg_cluster: PgCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pg_cluster.create_database("fresh")
    url = pg_cluster.url("fresh", user=SUPERUSER, password=None)
    assert (
        run(
            "demo",
            url,
            "--media-root",
            tmp_path / "media",
            "--parts",
            "2",
            "--lines",
            "6",
            "--image-size",
            "300x400",
        )
        == 0
    )
    assert "2 documents, 4 parts" in capsys.readouterr().out
    assert len(list((tmp_path / "media" / "documents").rglob("*.jpg"))) == 4
    with pg_cluster.connect("fresh") as conn:
        assert conn.execute("SELECT name FROM core_blocktype WHERE id = 1").fetchone() == ("Title",)
        assert conn.execute("SELECT COUNT(*) FROM core_documentpart").fetchone() == (4,)
    assert run("demo", url, "--media-root", tmp_path / "media2") == 2
    assert "already has eScriptorium tables" in capsys.readouterr().err
    assert not (tmp_path / "media2").exists() or not any((tmp_path / "media2").iterdir())


# -- faults -----------------------------------------------------------------------------------


def _fault(
    store_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], code: int = 1, *extra: str
) -> str:
    out, registry = tmp_path / "x.zip", tmp_path / "registry.sqlite"
    assert (
        run("-q", "export", *store_args, "--document", "1", "-o", out, "--registry", registry, *extra) == code
    )
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pipeline: error: "), captured.err
    assert not out.exists()
    assert [status for status, _ in registry_rows(registry)] == ["failed"]
    assert_secret_kept(captured.out, captured.err, registry.read_bytes().decode("latin-1"))
    return err[0]


@pytest.mark.parametrize("what", ["host", "port", "password", "database"])
def test_wrong_connection_is_one_line(
    pg_demo: Store, pg_cluster: PgCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    port = pg_cluster.port
    auth = f"{READER}:{READER_PASSWORD}"
    url = {
        "host": f"postgresql://{auth}@127.0.0.2:{port}/demo",
        "port": f"postgresql://{auth}@127.0.0.1:{free_port()}/demo",
        "password": f"postgresql://{READER}:wrong-{READER_PASSWORD}@127.0.0.1:{port}/demo",
        "database": f"postgresql://{auth}@127.0.0.1:{port}/nosuchdb",
    }[what]
    line = _fault(["--corpus", url, "--media-root", str(pg_demo.media_root)], tmp_path, capsys)
    assert redact(url) in line and "cannot connect" in line
    expected = {
        "host": "127.0.0.2",
        "port": "Connection refused",
        "password": "password authentication failed",
        "database": 'database "nosuchdb" does not exist',
    }[what]
    assert expected in line


@pytest.mark.parametrize("missing", ["table", "column"])
def test_not_an_escriptorium_database(
    pg_cluster: PgCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str], missing: str
) -> None:
    from pipeline.pgdemo import ddl

    db = pg_cluster.create_database(f"not_esc_{missing}")
    with pg_cluster.connect(db) as conn:
        conn.execute(ddl())
        if missing == "table":
            conn.execute("DROP TABLE core_linetranscription CASCADE")
        else:
            conn.execute("ALTER TABLE core_line DROP COLUMN baseline")
    pg_cluster.grant_reader(db)
    line = _fault(["--corpus", pg_cluster.url(db), "--media-root", str(tmp_path)], tmp_path, capsys)
    name = "table core_linetranscription" if missing == "table" else "column core_line.baseline"
    assert line.endswith(f"not an eScriptorium database ({name} is missing)")


@pytest.mark.parametrize(
    "geometry", ['[[10, "x"]]', '{"x": 1}', "[[1, 2, 3], [4, 5, 6]]", '"M 1 2"', "[[true, 1]]"]
)
def test_geometry_that_is_not_number_pairs_names_the_line(
    pg_faulty: Store, pg_cluster: PgCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str], geometry: str
) -> None:
    with admin(pg_cluster, "faulty") as conn:
        line_id, old = conn.execute(
            "SELECT l.id, l.baseline::text FROM core_line l"
            " JOIN core_documentpart p ON p.id = l.document_part_id"
            ' WHERE p.document_id = 1 AND p."order" = 1 AND l.baseline IS NOT NULL ORDER BY l.id LIMIT 1'
        ).fetchone()
        conn.execute("UPDATE core_line SET baseline = %s::jsonb WHERE id = %s", (geometry, line_id))
    try:
        line = _fault(pg_faulty.args, tmp_path, capsys)
    finally:
        with admin(pg_cluster, "faulty") as conn:
            conn.execute("UPDATE core_line SET baseline = %s::jsonb WHERE id = %s", (old, line_id))
    assert "document 1 (" in line and "part 2 (id " in line and f"line {line_id}" in line
    assert "geometry is not a list of number pairs" in line


@pytest.mark.parametrize(
    "images",
    [[], ["--images"], ["--images", "--image-format", "png"]],
    ids=["xml-only", "passthrough", "transcoded"],
)
def test_missing_image_follows_on_error(
    pg_faulty: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str], images: list[str]
) -> None:
    assert pg_faulty.media_root is not None
    image = sorted((pg_faulty.media_root / "documents" / "1").iterdir())[1]
    hidden = image.with_name(".hidden-" + image.name)
    image.rename(hidden)
    try:
        (tmp_path / "fail").mkdir()
        line = _fault(pg_faulty.args, tmp_path / "fail", capsys, 1, *images)
        assert "part 2" in line and "image file not found" in line
        out = tmp_path / "skip.zip"
        assert export(pg_faulty, out, "--on-error", "skip", *images) == 1
        assert "skipped image of page 2" in capsys.readouterr().err
        with zipfile.ZipFile(out) as zf:
            report = json.loads(zf.read("export-report.json"))
        assert [(r["page"], r["error"]) for r in report] == [(2, "image file not found")]
    finally:
        hidden.rename(image)


def _wait_for_reader(cluster: PgCluster, db: str, proc: subprocess.Popen[str]) -> int:
    """The backend pid of the export's parts transaction, once it has read a first page of lines."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with cluster.connect(db) as conn:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'pipeline' AND datname = %s"
                " AND xact_start IS NOT NULL AND query LIKE '%%l.baseline, l.mask%%'",
                (db,),
            ).fetchone()
        if row:
            return row[0]
        time.sleep(0.005)
    raise AssertionError(f"the export did not start reading in time: {proc.communicate()}")


@pytest.mark.parametrize("how", ["terminate", "restart"])
def test_connection_lost_mid_export(pg_big: Store, pg_cluster: PgCluster, tmp_path: Path, how: str) -> None:
    out, registry = tmp_path / "big.zip", tmp_path / "registry.sqlite"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "-q",
            "export",
            *pg_big.args,
            "--document",
            "1",
            "-o",
            str(out),
            "--registry",
            str(registry),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid = _wait_for_reader(pg_cluster, "big", proc)
    if how == "terminate":
        with pg_cluster.connect("big") as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    else:
        pg_cluster.restart()
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "connection lost while reading document 1" in lines[0], stderr
    assert not out.exists() and not [
        p for p in tmp_path.iterdir() if p.name.startswith(".") and "big" in p.name
    ]
    assert [status for status, _ in registry_rows(registry)] == ["failed"]
    assert_secret_kept(stdout, stderr)
