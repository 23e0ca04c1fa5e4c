"""The demo corpus inside an eScriptorium-shaped PostgreSQL database (``pipeline demo postgresql://``).

The demo builder writes an SQLite corpus; its rows are then copied, ids included, into a new
eScriptorium schema (``sources/escriptorium.sql``) in one transaction, and its images moved under
the media root at the same relative paths. So both stores hold the same data, and the same demo
gives byte-identical archives from either. Columns eScriptorium has and the mirror lacks get the
values eScriptorium gives a new object (draft documents, one project and owner, ...).

This writes only into a database that has no eScriptorium tables yet: never into a real one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg

from pipeline.demo import DemoSummary, build_demo
from pipeline.errors import CorpusError, UsageError
from pipeline.sources.postgres import _message, redact

#: the demo's owner and project: what eScriptorium needs before a document can exist
DEMO_USER = (1, "demo")
DEMO_PROJECT = (1, "Demo project", "demo")
#: marks the time of the rows the demo adds itself (the project, its owner)
DEMO_TIME = "2023-01-01T00:00:00+00:00"


def ddl() -> str:
    """eScriptorium's tables as its migrations create them, with the stock types seeded."""
    return resources.files("pipeline.sources").joinpath("escriptorium.sql").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class _Copy:
    """One table: a SELECT on the SQLite corpus whose columns are ``columns`` of the PostgreSQL table,
    with ``fix`` applied to each row (JSON text to arrays, file sizes...)."""

    table: str
    columns: str
    select: str
    fix: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None
    #: rows whose id may already be there (seeded stock types): replace their name
    upsert: bool = False


def _json_list(value: str | None) -> list[Any] | None:
    return None if value is None else list(json.loads(value))


def _copies(media: Path) -> tuple[_Copy, ...]:
    def part_fix(row: tuple[Any, ...]) -> tuple[Any, ...]:
        image = row[4]
        try:
            size = (media / image).stat().st_size if image else 0
        except OSError:
            size = 0
        return (*row, size)

    def comments_fix(index: int) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
        def fix(row: tuple[Any, ...]) -> tuple[Any, ...]:
            return (*row[:index], _json_list(row[index]), *row[index + 1 :])

        return fix

    types = 'id, name, public, "default"'
    return (
        _Copy(
            "users_user",
            "id, password, is_superuser, username, first_name, last_name, email, is_staff, is_active,"
            " date_joined",
            f"SELECT id, '!', 0, username, '', '', '', 0, 1, '{DEMO_TIME}' FROM users_user",
            lambda r: (r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6], bool(r[7]), bool(r[8]), r[9]),
            upsert=True,
        ),
        _Copy("auth_group", "id, name", "SELECT id, name FROM auth_group"),
        _Copy(
            "core_script",
            "id, name, name_fr, iso_code, text_direction",
            "SELECT id, name, name, '', 'horizontal-lr' FROM core_script",
        ),
        _Copy("core_blocktype", types, "SELECT id, name, 1, 0 FROM core_blocktype", upsert=True),
        _Copy("core_linetype", types, "SELECT id, name, 1, 0 FROM core_linetype", upsert=True),
        _Copy(
            "core_documentparttype", types, "SELECT id, name, 1, 0 FROM core_documentparttype", upsert=True
        ),
        _Copy(
            "core_document",
            "id, name, created_at, updated_at, workflow_state, owner_id, read_direction, project_id,"
            " line_offset, show_confidence_viz",
            f"SELECT id, name, created_at, updated_at, 0, {DEMO_USER[0]}, 'ltr', {DEMO_PROJECT[0]}, 0, 0"
            " FROM core_document",
        ),
        _Copy(
            "core_document_valid_block_types",
            "id, document_id, blocktype_id",
            "SELECT id, document_id, blocktype_id FROM core_document_valid_block_types",
        ),
        _Copy(
            "core_document_valid_line_types",
            "id, document_id, linetype_id",
            "SELECT id, document_id, linetype_id FROM core_document_valid_line_types",
        ),
        _Copy(
            "core_documentpart",
            'id, document_id, "order", name, image, original_filename, source, typology_id, created_at,'
            " updated_at, bw_backend, workflow_state, transcription_progress, image_file_size",
            'SELECT id, document_id, "order", name, image, original_filename, source, typology_id,'
            " created_at, updated_at, 'kraken', 0, 0 FROM core_documentpart",
            part_fix,
        ),
        _Copy(
            "core_block",
            'id, document_part_id, "order", box, typology_id, external_id',
            'SELECT id, document_part_id, "order", box, typology_id, external_id FROM core_block',
        ),
        _Copy(
            "core_line",
            'id, document_part_id, block_id, "order", baseline, mask, typology_id, external_id',
            'SELECT id, document_part_id, block_id, "order", baseline, mask, typology_id, external_id'
            " FROM core_line",
        ),
        _Copy(
            "core_transcription",
            "id, document_id, name, archived, created_at, updated_at",
            "SELECT id, document_id, name, archived, created_at, created_at FROM core_transcription",
        ),
        _Copy(
            "core_linetranscription",
            "id, line_id, transcription_id, content, avg_confidence, graphs, versions, version_author,"
            " version_source, version_created_at, version_updated_at, revision",
            "SELECT id, line_id, transcription_id, content, avg_confidence, graphs, versions,"
            " COALESCE(version_author, 'demo'), COALESCE(version_source, 'pipeline demo'),"
            f" COALESCE(version_updated_at, '{DEMO_TIME}'), COALESCE(version_updated_at, '{DEMO_TIME}'),"
            " printf('00000000-0000-4000-8000-%012x', id) FROM core_linetranscription",
        ),
        _Copy(
            "core_documenttag",
            "id, name, color, project_id",
            f"SELECT id, name, CASE WHEN length(color) = 7 THEN color ELSE '#6c757d' END, {DEMO_PROJECT[0]}"
            " FROM core_documenttag",
        ),
        _Copy(
            "core_document_tags",
            "id, document_id, documenttag_id",
            "SELECT id, document_id, documenttag_id FROM core_document_tags",
        ),
        _Copy("core_metadata", "id, name", "SELECT id, name FROM core_metadata"),
        _Copy(
            "core_documentmetadata",
            "id, document_id, key_id, value",
            "SELECT id, document_id, key_id, value FROM core_documentmetadata",
        ),
        _Copy(
            "core_documentpartmetadata",
            "id, part_id, key_id, value",
            "SELECT id, part_id, key_id, value FROM core_documentpartmetadata",
        ),
        _Copy("core_annotationtype", "id, name", "SELECT id, name FROM core_annotationtype"),
        _Copy(
            "core_annotationtaxonomy",
            "id, document_id, typology_id, name, abbreviation, marker_type, marker_detail, has_comments,"
            ' "order"',
            "SELECT id, document_id, typology_id, name, abbreviation, COALESCE(marker_type, 3),"
            ' marker_detail, has_comments, "order" FROM core_annotationtaxonomy',
        ),
        _Copy(
            "core_annotationcomponent",
            "id, document_id, name, allowed_values",
            "SELECT id, document_id, name, allowed_values FROM core_annotationcomponent",
            comments_fix(3),
        ),
        _Copy(
            "core_annotationtaxonomy_components",
            "id, annotationtaxonomy_id, annotationcomponent_id",
            "SELECT id, annotationtaxonomy_id, annotationcomponent_id"
            " FROM core_annotationtaxonomy_components",
        ),
        _Copy(
            "core_textannotation",
            "id, taxonomy_id, part_id, transcription_id, start_line_id, start_offset, end_line_id,"
            " end_offset, comments",
            "SELECT id, taxonomy_id, part_id, transcription_id, start_line_id, start_offset, end_line_id,"
            " end_offset, comments FROM core_textannotation",
            comments_fix(8),
        ),
        _Copy(
            "core_textannotationcomponentvalue",
            "id, annotation_id, component_id, value",
            "SELECT id, annotation_id, component_id, value FROM core_textannotationcomponentvalue",
        ),
        _Copy(
            "core_imageannotation",
            "id, taxonomy_id, part_id, coordinates, comments",
            "SELECT id, taxonomy_id, part_id, coordinates, comments FROM core_imageannotation",
            lambda r: (*r[:3], _json_list(r[3]), _json_list(r[4])),
        ),
        _Copy(
            "core_ocrmodel",
            "id, name, file, job, training, training_epoch, training_accuracy, training_errors,"
            " training_total, file_size, public, owner_id, parent_id, script_id, revision, version_author,"
            " version_source, version_created_at, version_updated_at, versions",
            "SELECT id, name, file, job, training, training_epoch, training_accuracy, training_errors,"
            " training_total, file_size, public, owner_id, parent_id, script_id, revision, version_author,"
            " version_source, version_created_at, version_updated_at, versions FROM core_ocrmodel",
            lambda r: (*r[:4], bool(r[4]), *r[5:10], bool(r[10]), *r[11:]),
        ),
        _Copy(
            "core_ocrmodeldocument",
            "id, created_at, trained_on, executed_on, document_id, ocr_model_id",
            "SELECT id, created_at, trained_on, executed_on, document_id, ocr_model_id"
            " FROM core_ocrmodeldocument",
        ),
        _Copy(
            "core_ocrmodelright",
            "id, created_at, group_id, user_id, ocr_model_id",
            "SELECT id, created_at, group_id, user_id, ocr_model_id FROM core_ocrmodelright",
        ),
    )


def _rows(db: sqlite3.Connection, copy: _Copy) -> Iterator[tuple[Any, ...]]:
    cursor = db.execute(f"{copy.select} ORDER BY id")
    while batch := cursor.fetchmany(2000):
        for row in batch:
            yield copy.fix(row) if copy.fix else row


def copy_corpus(corpus: Path, conn: psycopg.Connection, media: Path) -> None:
    """Create eScriptorium's schema on ``conn`` and copy the corpus into it (the caller commits)."""
    conn.execute(ddl())  # type: ignore[arg-type]
    conn.execute(
        "INSERT INTO users_user (id, password, is_superuser, username, first_name, last_name, email,"
        " is_staff, is_active, date_joined) VALUES (%s, '!', false, %s, '', '', '', false, true, %s)",
        (DEMO_USER[0], DEMO_USER[1], DEMO_TIME),
    )
    conn.execute(
        "INSERT INTO core_project (id, name, slug, created_at, updated_at, owner_id)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (*DEMO_PROJECT, DEMO_TIME, DEMO_TIME, DEMO_USER[0]),
    )
    with contextlib.closing(sqlite3.connect(f"{corpus.absolute().as_uri()}?mode=ro", uri=True)) as db:
        for copy in _copies(media):
            if copy.upsert:
                marks = ", ".join(["%s"] * (copy.columns.count(",") + 1))
                name = "username" if copy.table == "users_user" else "name"
                with conn.cursor() as cur:
                    cur.executemany(
                        f"INSERT INTO {copy.table} ({copy.columns}) VALUES ({marks})"
                        f" ON CONFLICT (id) DO UPDATE SET {name} = EXCLUDED.{name}",
                        [row if copy.fix else (row[0], row[1], bool(row[2]), bool(row[3]))
                         for row in _rows(db, copy)],
                    )
                continue
            with conn.cursor() as cur, cur.copy(f"COPY {copy.table} ({copy.columns}) FROM STDIN") as out:
                for row in _rows(db, copy):
                    out.write_row(row)
    for table in _tables(conn):
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
            f" GREATEST(1, (SELECT MAX(id) FROM {table})))"
        )


def _tables(conn: psycopg.Connection) -> Sequence[str]:
    rows = conn.execute(
        "SELECT c.table_name FROM information_schema.columns c"
        " WHERE c.table_schema = current_schema() AND c.column_name = 'id' AND c.is_identity = 'YES'"
        " ORDER BY c.table_name"
    ).fetchall()
    return [r[0] for r in rows]


def build_postgres_demo(url: str, *, media_root: str | os.PathLike[str], **options: Any) -> DemoSummary:
    """The demo corpus (``build_demo``'s options) in the empty database at ``url``, its images under
    ``media_root``. All or nothing: on failure the database is left empty and the images removed."""
    media = Path(media_root)
    if media.exists() and (not media.is_dir() or any(media.iterdir())):
        raise UsageError(f"media root {media} already exists and is not an empty folder")
    shown = redact(url)
    try:
        conn = psycopg.connect(url, connect_timeout=10)
    except psycopg.Error as exc:
        raise CorpusError(f"{shown}: cannot connect: {_message(exc)}") from None
    media.mkdir(parents=True, exist_ok=True)
    moved: list[Path] = []
    try:
        with conn, tempfile.TemporaryDirectory(prefix=".pipeline-demo-", dir=media.parent) as tmp:
            existing = conn.execute("SELECT to_regclass('core_document') IS NOT NULL").fetchone()
            if existing and existing[0]:
                raise UsageError(f"{shown} already has eScriptorium tables; the demo needs an empty database")
            corpus = Path(tmp) / "demo.sqlite"
            summary = build_demo(corpus, **options)
            try:
                copy_corpus(corpus, conn, summary.media_root)
            except psycopg.Error as exc:
                raise CorpusError(f"{shown}: cannot create the demo: {_message(exc)}") from None
            for entry in sorted(summary.media_root.iterdir()):
                target = media / entry.name
                entry.rename(target)
                moved.append(target)
        return DemoSummary(
            Path(shown), media.resolve(), summary.document_ids, summary.parts, summary.lines, summary.images
        )
    except BaseException:
        for target in moved:
            shutil.rmtree(target, ignore_errors=True)
        raise
