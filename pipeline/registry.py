"""The registry of exports: eScriptorium's "Files" tab with permanent ids, sizes and checksums.

Every export is recorded when it starts (status ``running``) and updated when it ends
(``complete`` or ``failed``), so an export killed midway is visible and never marked complete.
The registry is a table in an SQLite file (the corpus file by default).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import PipelineError

SCHEMA = """
CREATE TABLE IF NOT EXISTS pipeline_export (
    id TEXT PRIMARY KEY,
    document_id INTEGER,
    document_name TEXT NOT NULL,
    format TEXT NOT NULL,
    layer TEXT,
    options TEXT NOT NULL,
    path TEXT,
    size INTEGER,
    sha256 TEXT,
    part_count INTEGER,
    fingerprint TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'complete', 'failed')),
    error TEXT,
    report TEXT,
    host TEXT,
    pid INTEGER,
    etag TEXT
);
CREATE INDEX IF NOT EXISTS pipeline_export_started ON pipeline_export (started_at);
CREATE INDEX IF NOT EXISTS pipeline_export_doc ON pipeline_export (document_id, format, status);
"""

COLUMNS = (
    "id", "document_id", "document_name", "format", "layer", "options", "path", "size", "sha256",
    "part_count", "fingerprint", "started_at", "finished_at", "status", "error", "report", "host", "pid",
    "etag",
)
#: columns added after the first registries were written: (name, SQL type), added on open
ADDED_COLUMNS = (("host", "TEXT"), ("pid", "INTEGER"), ("etag", "TEXT"))


@dataclass(frozen=True, slots=True)
class ExportRecord:
    id: str
    document_id: int | None
    document_name: str
    format: str
    layer: str | None
    options: dict[str, Any]
    path: str | None
    size: int | None
    sha256: str | None
    part_count: int | None
    fingerprint: str | None
    started_at: str
    finished_at: str | None
    status: str
    error: str | None
    report: list[dict[str, Any]] | None
    host: str | None = None
    pid: int | None = None
    etag: str | None = None  #: the object's ETag where the destination keeps one (S3)

    @property
    def state(self) -> str:
        """``status``, except that a ``running`` export whose process is gone (on this machine) is
        ``interrupted``: killed midway, it will never complete."""
        here = self.host == socket.gethostname()
        if self.status == "running" and here and self.pid and not _alive(self.pid):
            return "interrupted"
        return self.status

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> ExportRecord:
        data = dict(zip(COLUMNS, row, strict=True))
        data["options"] = json.loads(data["options"])
        data["report"] = json.loads(data["report"]) if data["report"] else None
        return cls(**data)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def default_registry() -> Path:
    """The registry of exports whose source has no file to keep it beside (an eScriptorium database):
    ``$XDG_DATA_HOME/pipeline/registry.sqlite``, by default ``~/.local/share/pipeline/registry.sqlite``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pipeline" / "registry.sqlite"


def new_export_id() -> str:
    """A permanent id that sorts by time: ``YYYYmmddHHMMSS`` + 12 random hex digits."""
    return f"{datetime.now(UTC):%Y%m%d%H%M%S}{uuid.uuid4().hex[:12]}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Registry:
    """Records and lists exports in ``path`` (an SQLite file, created if needed)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._batch: sqlite3.Connection | None = None
        try:
            with self._connect() as db:
                db.executescript(SCHEMA)
                present = {row[1] for row in db.execute("PRAGMA table_info(pipeline_export)")}
                for name, kind in ADDED_COLUMNS:
                    if name not in present:
                        db.execute(f"ALTER TABLE pipeline_export ADD COLUMN {name} {kind}")
        except sqlite3.DatabaseError as exc:
            raise PipelineError(f"{self.path}: cannot use as export registry: {exc}") from None

    def _connect(self) -> closing[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        return closing(db)

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            if self._batch is not None:
                return self._batch.execute(sql, params).fetchall()
            with self._connect() as db:
                return db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:  # locked, corrupt, read-only, deleted meanwhile
            raise PipelineError(f"{self.path}: export registry: {exc}") from None

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Records made in the block are one transaction: one commit (one fsync) for many, as when
        a job hands a cluster all its exports at once; none of them is kept if the block fails."""
        if self._batch is not None:
            yield
            return
        try:
            with self._connect() as db:
                db.execute("BEGIN IMMEDIATE")
                self._batch = db
                try:
                    yield
                except BaseException:
                    db.rollback()
                    raise
                else:
                    db.commit()
                finally:
                    self._batch = None
        except sqlite3.Error as exc:
            raise PipelineError(f"{self.path}: export registry: {exc}") from None

    def _record(self, row: tuple[Any, ...]) -> ExportRecord:
        """A row as a record; a row whose JSON columns were edited into nonsense names itself."""
        try:
            return ExportRecord.from_row(row)
        except (ValueError, TypeError) as exc:
            raise PipelineError(f"{self.path}: export {row[0]}: unreadable record ({exc})") from None

    def start(
        self, export_id: str, *, document_id: int | None, document_name: str, format: str,
        layer: str | None, options: dict[str, Any], path: str | None, fingerprint: str | None = None,
    ) -> None:
        self._execute(
            "INSERT INTO pipeline_export (id, document_id, document_name, format, layer, options, path,"
            " fingerprint, started_at, status, host, pid)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)",
            (export_id, document_id, document_name, format, layer, json.dumps(options, sort_keys=True),
             path, fingerprint, _now(), socket.gethostname(), os.getpid()),
        )

    def complete(
        self, export_id: str, *, path: str | None, size: int, sha256: str, part_count: int,
        report: list[dict[str, Any]] | None = None, etag: str | None = None,
    ) -> None:
        self._execute(
            "UPDATE pipeline_export SET status = 'complete', path = ?, size = ?, sha256 = ?, part_count = ?,"
            " finished_at = ?, report = ?, etag = ? WHERE id = ?",
            (path, size, sha256, part_count, _now(), json.dumps(report) if report else None, etag, export_id),
        )

    def recover(self, export_id: str) -> None:
        """Mark complete an export whose output is at its final location but whose run died before
        saying so.

        Outputs only appear at their final location when complete, so its size and sha256 (read
        back where it is) are the export's.
        """
        from pipeline.sinks import open_reader

        record = self.get(export_id)
        digest, size = hashlib.sha256(), 0
        with open_reader(record.path or "") as fh:
            while block := fh.read(8 << 20):
                digest.update(block)
                size += len(block)
            etag = getattr(fh, "etag", None)
        self._execute(
            "UPDATE pipeline_export SET status = 'complete', size = ?, sha256 = ?, etag = ?, finished_at = ?,"
            " error = 'recorded after an interrupted run' WHERE id = ? AND status = 'running'",
            (size, digest.hexdigest(), etag, _now(), export_id),
        )

    def fail(self, export_id: str, error: str) -> None:
        self._execute(
            "UPDATE pipeline_export SET status = 'failed', finished_at = ?, error = ? WHERE id = ?",
            (_now(), error, export_id),
        )

    def list(self, *, limit: int | None = None) -> Iterator[ExportRecord]:
        """Exports newest first."""
        sql = f"SELECT {', '.join(COLUMNS)} FROM pipeline_export ORDER BY started_at DESC, rowid DESC"
        rows = self._execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
        return (self._record(r) for r in rows)

    def find(self, **where: Any) -> list[ExportRecord]:
        """Exports whose columns equal ``where`` (None matches NULL), newest first."""
        if unknown := set(where) - set(COLUMNS):
            raise ValueError(f"no registry column(s) {sorted(unknown)}")
        clauses = [f"{key} IS ?" for key in where]
        sql = f"SELECT {', '.join(COLUMNS)} FROM pipeline_export"
        sql += " WHERE " + " AND ".join(clauses) if clauses else ""
        sql += " ORDER BY started_at DESC, rowid DESC"
        return [self._record(r) for r in self._execute(sql, tuple(where.values()))]

    def delete(self, export_ids: list[str]) -> None:
        """Forget exports (retention); their files are the caller's to remove."""
        with self._connect() as db:
            db.executemany("DELETE FROM pipeline_export WHERE id = ?", [(i,) for i in export_ids])

    def get(self, export_id: str) -> ExportRecord:
        """One export by its id or a unique prefix of it."""
        rows = self._execute(
            f"SELECT {', '.join(COLUMNS)} FROM pipeline_export WHERE id LIKE ? ESCAPE '\\' LIMIT 2",
            (export_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
        )
        if len(rows) != 1:
            what = "no export" if not rows else "more than one export"
            raise PipelineError(f"{self.path}: {what} with id {export_id!r}")
        return self._record(rows[0])
