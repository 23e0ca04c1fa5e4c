"""OCR models in a corpus: the SQL that reads them from either store, and importing a model file.

The three statements are plain SQL over eScriptorium's own table and column names, valid on
SQLite and PostgreSQL alike (no parameters, no JSON operators): the SQLite corpus runs them here,
the PostgreSQL source runs the same text. Model tables are small (one row per trained model), so
they are read whole and filtered in Python.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import UsageError
from pipeline.naming import slug
from pipeline.ocrmodel import OcrModel, build_models, parse_job

MODELS = """
    SELECT m.id, m.name, m.job, m.file, m.file_size, m.training, m.training_epoch, m.training_accuracy,
           m.training_errors, m.training_total, m.public, u.username, m.parent_id, p.name, s.name,
           m.revision, m.version_author, m.version_source, m.version_created_at, m.version_updated_at,
           m.versions
    FROM core_ocrmodel m
    LEFT JOIN users_user u ON u.id = m.owner_id
    LEFT JOIN core_ocrmodel p ON p.id = m.parent_id
    LEFT JOIN core_script s ON s.id = m.script_id
    ORDER BY m.id
"""
MODEL_DOCUMENTS = """
    SELECT md.ocr_model_id, md.document_id, d.name, md.created_at, md.trained_on, md.executed_on
    FROM core_ocrmodeldocument md JOIN core_document d ON d.id = md.document_id
    ORDER BY md.ocr_model_id, md.document_id, md.id
"""
MODEL_RIGHTS = """
    SELECT r.ocr_model_id, u.username, g.name
    FROM core_ocrmodelright r
    LEFT JOIN users_user u ON u.id = r.user_id
    LEFT JOIN auth_group g ON g.id = r.group_id
    ORDER BY r.ocr_model_id, r.id
"""
STATEMENTS = (MODELS, MODEL_DOCUMENTS, MODEL_RIGHTS)


def read_models(conn: sqlite3.Connection, version: int) -> list[OcrModel]:
    """Every model of an SQLite corpus, by id; none in a version-1 file (no model tables yet)."""
    if version < 2:
        return []
    return build_models(*(conn.execute(statement).fetchall() for statement in STATEMENTS))


@dataclass(frozen=True, slots=True)
class ModelImport:
    """What ``pipeline import FILE.mlmodel`` records besides the file (flags or a JSON sidecar).

    The keys of the sidecar are those of the ``model.json`` that ``models export`` writes, so an
    exported model imports back with its history."""

    name: str
    job: int
    owner: str | None = None
    parent: str | None = None
    script: str | None = None
    training_epoch: int = 0
    training_accuracy: float = 0.0
    training_errors: int = 0
    training_total: int = 0
    public: bool = False
    revision: str | None = None
    version_author: str = ""
    version_source: str = "pipeline import"
    version_created_at: datetime | None = None
    version_updated_at: datetime | None = None
    versions: tuple[dict[str, Any], ...] = ()
    trained_on: tuple[str, ...] = ()
    executed_on: tuple[str, ...] = ()
    documents: tuple[dict[str, Any], ...] = field(default=())

    @classmethod
    def from_options(cls, path: Path, metadata: Path | None, **flags: Any) -> ModelImport:
        """The sidecar's values (``model.json``), overridden by the flags that are not None."""
        data: dict[str, Any] = {}
        if metadata is not None:
            try:
                data = json.loads(metadata.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise UsageError(f"{metadata}: not a readable JSON model description ({exc})") from None
            if not isinstance(data, dict):
                raise UsageError(f"{metadata}: a model description must be a JSON object")
        given = {key: value for key, value in flags.items() if value is not None and value != ()}
        name = given.get("name") or data.get("name") or path.stem
        job = given.get("job") or data.get("job")
        if job is None:
            raise UsageError(f"{path}: say what the model does: --job segmentation or --job recognition")
        parent = given.get("parent") or (data.get("parent") or {}).get("name")
        try:
            return cls(
                name=str(name),
                job=parse_job(job),
                owner=given.get("owner", data.get("owner")),
                parent=parent,
                script=given.get("script", data.get("script")),
                training_epoch=int(given.get("epochs", data.get("training_epoch", 0))),
                training_accuracy=float(given.get("accuracy", data.get("training_accuracy", 0.0))),
                training_errors=int(data.get("training_errors", 0)),
                training_total=int(data.get("training_total", 0)),
                public=bool(given.get("public", data.get("public", False))),
                revision=data.get("revision"),
                version_author=str(given.get("owner") or data.get("version_author") or ""),
                version_source=str(data.get("version_source") or "pipeline import"),
                version_created_at=_when(data.get("version_created_at")),
                version_updated_at=_when(data.get("version_updated_at")),
                versions=tuple(data.get("versions") or ()),
                trained_on=tuple(given.get("trained_on", ())),
                executed_on=tuple(given.get("executed_on", ())),
                documents=tuple(data.get("documents") or ()),
            )
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{metadata or path}: {exc}") from None


def _when(value: object) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 time") from None


def model_file_path(name: str, filename: str) -> str:
    """Where eScriptorium stores an uploaded model: ``models/<8 random hex>/<slug>.mlmodel`` (the
    random folder keeps apart files kraken writes under fixed names, and two uploads of one name)."""
    stem, _, ext = filename.rpartition(".")
    base = (slug(stem or name, 64).replace("_", "-") or "model") + (f".{ext.lower()}" if stem else ".mlmodel")
    return f"models/{uuid.uuid4().hex[:8]}/{base}"


def import_model(corpus: Any, path: Path, meta: ModelImport) -> tuple[int, str]:
    """Copy ``path`` under the corpus's media root and record it (one transaction; the copy is
    removed if the transaction fails). Returns (model id, stored relative path)."""
    if not path.is_file():
        raise UsageError(f"{path}: no such model file")
    relative = model_file_path(meta.name, path.name)
    target = corpus.media_root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    try:
        with path.open("rb") as src, tmp.open("wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, target)
        size = target.stat().st_size
        with corpus.transaction() as w:
            parent_id = _resolve_parent(corpus.connection, meta.parent) if meta.parent else None
            now = datetime.now(UTC)
            model_id = w.add_model(
                meta.name, meta.job, relative, size, owner=meta.owner, parent_id=parent_id,
                script=meta.script, training_epoch=meta.training_epoch,
                training_accuracy=meta.training_accuracy, training_errors=meta.training_errors,
                training_total=meta.training_total, public=meta.public,
                revision=meta.revision or str(uuid.uuid4()), version_author=meta.version_author,
                version_source=meta.version_source, version_created_at=meta.version_created_at or now,
                version_updated_at=meta.version_updated_at or now, versions=meta.versions,
            )
            for ref, trained in [(r, True) for r in meta.trained_on] + [(r, False) for r in meta.executed_on]:
                doc_id = _resolve_document(corpus.connection, ref, corpus.path)
                w.link_model(model_id, doc_id, **{"trained_on" if trained else "executed_on": now})
            for doc in meta.documents:  # from a model.json: links to documents of the same name
                found = corpus.connection.execute(
                    "SELECT id FROM core_document WHERE name = ? ORDER BY id", (doc.get("name"),)
                ).fetchall()
                if len(found) == 1 and (doc.get("trained_on") or doc.get("executed_on")):
                    w.link_model(model_id, found[0][0], trained_on=_when(doc.get("trained_on")),
                                 executed_on=_when(doc.get("executed_on")),
                                 created_at=_when(doc.get("created_at")))
    except BaseException:
        tmp.unlink(missing_ok=True)
        target.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            target.parent.rmdir()  # the random folder, when nothing else is in it
        raise
    return model_id, relative


def _resolve_parent(conn: sqlite3.Connection, ref: str) -> int:
    rows = conn.execute(
        "SELECT id FROM core_ocrmodel WHERE id = ? OR name = ? ORDER BY id = ? DESC, id DESC",
        (int(ref) if ref.isdigit() else -1, ref, int(ref) if ref.isdigit() else -1),
    ).fetchall()
    if not rows:
        raise UsageError(f"--parent {ref!r}: no such model in the corpus (import the parent first)")
    return rows[0][0]


def _resolve_document(conn: sqlite3.Connection, ref: str, where: Path) -> int:
    text = str(ref)
    if text.isdigit() and conn.execute("SELECT 1 FROM core_document WHERE id = ?", (int(text),)).fetchone():
        return int(text)
    rows = conn.execute("SELECT id FROM core_document WHERE name = ?", (text,)).fetchall()
    if len(rows) != 1:
        state = "no document" if not rows else "more than one document"
        raise UsageError(f"{where}: {state} {text!r}; name it by id")
    return rows[0][0]
