"""Inserts into an open corpus inside one transaction; used by the demo and by importers.

Name-keyed rows (types, tags, metadata keys, annotation types) are get-or-create and cached for the
transaction, so importers can pass names without bookkeeping. Geometry is stored as compact JSON.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from pipeline.model import Polygon

#: the component that carries ``add_text_annotation(value=...)``
VALUE_COMPONENT = "value"


def _json(points: Polygon | Sequence[Sequence[float]] | None) -> str | None:
    if points is None:
        return None
    return json.dumps([[p[0], p[1]] for p in points], separators=(",", ":"))


def _stamp(value: datetime | None) -> str:
    """ISO 8601 with offset; naive times are taken as UTC, None as now."""
    value = value or datetime.now(UTC)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


class CorpusWriter:
    """The insert operations of one open transaction (see ``Corpus.transaction``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._names: dict[tuple[str, str], int] = {}
        self._value_components: dict[int, int] = {}
        self._taxonomy_documents: dict[int, int] = {}

    def _insert(self, sql: str, params: Sequence[object]) -> int:
        cursor = self._conn.execute(sql, params)
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def _named(self, table: str, name: str, column: str = "name") -> int:
        """Get-or-create a row of a ``(id, name)`` table by name (lowest id wins)."""
        key = (table, name)
        if key not in self._names:
            sql = f"SELECT id FROM {table} WHERE {column} = ? ORDER BY id LIMIT 1"
            row = self._conn.execute(sql, (name,)).fetchone()
            if row is None:
                row = (self._insert(f"INSERT INTO {table} ({column}) VALUES (?)", (name,)),)
            self._names[key] = row[0]
        return self._names[key]

    def add_document(
        self, name: str, *, created_at: datetime | None = None, updated_at: datetime | None = None
    ) -> int:
        created = _stamp(created_at)
        return self._insert(
            "INSERT INTO core_document (name, created_at, updated_at) VALUES (?, ?, ?)",
            (name, created, _stamp(updated_at) if updated_at else created),
        )

    def add_layer(
        self, doc_id: int, name: str, *, archived: bool = False, created_at: datetime | None = None
    ) -> int:
        return self._insert(
            "INSERT INTO core_transcription (document_id, name, archived, created_at) VALUES (?, ?, ?, ?)",
            (doc_id, name, int(archived), _stamp(created_at)),
        )

    def add_block_type(self, name: str) -> int:
        return self._named("core_blocktype", name)

    def add_line_type(self, name: str) -> int:
        return self._named("core_linetype", name)

    def add_part_type(self, name: str) -> int:
        return self._named("core_documentparttype", name)

    def set_valid_types(
        self, doc_id: int, block_type_ids: Sequence[int], line_type_ids: Sequence[int]
    ) -> None:
        """Replace the document's ontology (the two M2M tables)."""
        self._conn.execute("DELETE FROM core_document_valid_block_types WHERE document_id = ?", (doc_id,))
        self._conn.execute("DELETE FROM core_document_valid_line_types WHERE document_id = ?", (doc_id,))
        self._conn.executemany(
            "INSERT INTO core_document_valid_block_types (document_id, blocktype_id) VALUES (?, ?)",
            [(doc_id, t) for t in dict.fromkeys(block_type_ids)],
        )
        self._conn.executemany(
            "INSERT INTO core_document_valid_line_types (document_id, linetype_id) VALUES (?, ?)",
            [(doc_id, t) for t in dict.fromkeys(line_type_ids)],
        )

    def add_part(
        self,
        doc_id: int,
        order: int,
        image: str,
        *,
        original_filename: str = "",
        name: str = "",
        source: str = "",
        typology_id: int | None = None,
        width: int | None = None,
        height: int | None = None,
        created_at: datetime | None = None,
        updated_at: datetime | None = None,
    ) -> int:
        """A part; with ``width`` and ``height`` its size also goes to ``pipeline_image_size``."""
        created = _stamp(created_at)
        part_id = self._insert(
            """INSERT INTO core_documentpart (document_id, "order", name, image, original_filename, source,
                   typology_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (doc_id, order, name, image, original_filename, source, typology_id, created,
             _stamp(updated_at) if updated_at else created),
        )
        if width is not None and height is not None:
            self.set_image_size(part_id, width, height)
        return part_id

    def set_image_size(self, part_id: int, width: int, height: int) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO pipeline_image_size (part_id, width, height) VALUES (?, ?, ?)",
            (part_id, width, height),
        )

    def add_block(
        self,
        part_id: int,
        order: int,
        box: Polygon | Sequence[Sequence[float]],
        type_id: int | None = None,
        external_id: str | None = None,
    ) -> int:
        return self._insert(
            'INSERT INTO core_block (document_part_id, "order", box, typology_id, external_id)'
            " VALUES (?, ?, ?, ?, ?)",
            (part_id, order, _json(box), type_id, external_id),
        )

    def add_line(
        self,
        part_id: int,
        order: int,
        baseline: Polygon | Sequence[Sequence[float]] | None,
        mask: Polygon | Sequence[Sequence[float]] | None,
        block_id: int | None = None,
        type_id: int | None = None,
        external_id: str | None = None,
    ) -> int:
        return self._insert(
            """INSERT INTO core_line (document_part_id, block_id, "order", baseline, mask, typology_id,
                   external_id) VALUES (?, ?, ?, ?, ?, ?, ?)""",
            (part_id, block_id, order, _json(baseline), _json(mask), type_id, external_id),
        )

    def add_text(self, line_id: int, layer_id: int, content: str, confidence: float | None = None) -> None:
        self._conn.execute(
            "INSERT INTO core_linetranscription (line_id, transcription_id, content, avg_confidence)"
            " VALUES (?, ?, ?, ?)",
            (line_id, layer_id, content, confidence),
        )

    def add_texts(self, rows: Sequence[tuple[int, int, str, float | None]]) -> None:
        """Many ``(line_id, layer_id, content, confidence)`` rows in one executemany."""
        self._conn.executemany(
            "INSERT INTO core_linetranscription (line_id, transcription_id, content, avg_confidence)"
            " VALUES (?, ?, ?, ?)",
            rows,
        )

    def add_tag(self, doc_id: int, name: str) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO core_document_tags (document_id, documenttag_id) VALUES (?, ?)",
            (doc_id, self._named("core_documenttag", name)),
        )

    def add_metadata(self, doc_id: int, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO core_documentmetadata (document_id, key_id, value) VALUES (?, ?, ?)",
            (doc_id, self._named("core_metadata", key), value),
        )

    def add_part_metadata(self, part_id: int, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO core_documentpartmetadata (part_id, key_id, value) VALUES (?, ?, ?)",
            (part_id, self._named("core_metadata", key), value),
        )

    def add_taxonomy(
        self,
        doc_id: int,
        name: str,
        *,
        typology: str | None = None,
        abbreviation: str | None = None,
        marker_type: int | None = None,
    ) -> int:
        """A taxonomy with the document's ``value`` component attached (created on first use)."""
        (order,) = self._conn.execute(
            "SELECT COUNT(*) FROM core_annotationtaxonomy WHERE document_id = ?", (doc_id,)
        ).fetchone()
        tax_id = self._insert(
            """INSERT INTO core_annotationtaxonomy (document_id, typology_id, name, abbreviation, marker_type,
                   "order") VALUES (?, ?, ?, ?, ?, ?)""",
            (doc_id, self._named("core_annotationtype", typology) if typology else None, name, abbreviation,
             marker_type, order),
        )
        self._conn.execute(
            "INSERT INTO core_annotationtaxonomy_components (annotationtaxonomy_id, annotationcomponent_id)"
            " VALUES (?, ?)",
            (tax_id, self._value_component(doc_id)),
        )
        self._taxonomy_documents[tax_id] = doc_id
        return tax_id

    def _value_component(self, doc_id: int) -> int:
        if doc_id not in self._value_components:
            row = self._conn.execute(
                "SELECT id FROM core_annotationcomponent WHERE document_id = ? AND name = ?"
                " ORDER BY id LIMIT 1",
                (doc_id, VALUE_COMPONENT),
            ).fetchone()
            self._value_components[doc_id] = row[0] if row else self._insert(
                "INSERT INTO core_annotationcomponent (document_id, name, allowed_values)"
                " VALUES (?, ?, '[]')",
                (doc_id, VALUE_COMPONENT),
            )
        return self._value_components[doc_id]

    def add_text_annotation(
        self,
        taxonomy_id: int,
        part_id: int,
        layer_id: int,
        start_line_id: int,
        start_offset: int,
        end_line_id: int,
        end_offset: int,
        value: str | None = None,
        comments: Sequence[str] = (),
    ) -> int:
        """A text annotation; ``value`` is stored as the taxonomy's ``value`` component value."""
        ann_id = self._insert(
            """INSERT INTO core_textannotation (taxonomy_id, part_id, transcription_id, start_line_id,
                   start_offset, end_line_id, end_offset, comments) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            (taxonomy_id, part_id, layer_id, start_line_id, start_offset, end_line_id, end_offset,
             json.dumps(list(comments), ensure_ascii=False)),
        )
        if value is not None:
            doc_id = self._taxonomy_documents.get(taxonomy_id)
            if doc_id is None:
                (doc_id,) = self._conn.execute(
                    "SELECT document_id FROM core_annotationtaxonomy WHERE id = ?", (taxonomy_id,)
                ).fetchone()
                self._taxonomy_documents[taxonomy_id] = doc_id
            self._conn.execute(
                "INSERT INTO core_textannotationcomponentvalue (annotation_id, component_id, value)"
                " VALUES (?, ?, ?)",
                (ann_id, self._value_component(doc_id), value),
            )
        return ann_id

    # -- models (core_ocrmodel and the tables around it) -------------------------------------

    def add_user(self, username: str) -> int:
        """A ``users_user`` row by name: model owners and people models are shared with."""
        return self._named("users_user", username, "username")

    def add_group(self, name: str) -> int:
        return self._named("auth_group", name)

    def add_script(self, name: str) -> int:
        return self._named("core_script", name)

    def add_model(
        self,
        name: str,
        job: int,
        file: str | None,
        file_size: int,
        *,
        owner: str | None = None,
        parent_id: int | None = None,
        script: str | None = None,
        training: bool = False,
        training_epoch: int = 0,
        training_accuracy: float = 0.0,
        training_errors: int = 0,
        training_total: int = 0,
        public: bool = False,
        revision: str,
        version_author: str = "",
        version_source: str = "",
        version_created_at: datetime | None = None,
        version_updated_at: datetime | None = None,
        versions: Sequence[dict[str, object]] = (),
    ) -> int:
        """A ``core_ocrmodel`` row; ``file`` is the model file's path relative to the media root."""
        created = _stamp(version_created_at)
        return self._insert(
            """INSERT INTO core_ocrmodel (name, file, job, training, training_epoch, training_accuracy,
                   training_errors, training_total, file_size, public, owner_id, parent_id, script_id,
                   revision, version_author, version_source, version_created_at, version_updated_at, versions)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (name, file, job, int(training), training_epoch, training_accuracy, training_errors,
             training_total, file_size, int(public), self.add_user(owner) if owner else None, parent_id,
             self.add_script(script) if script else None, revision, version_author, version_source, created,
             _stamp(version_updated_at) if version_updated_at else created,
             json.dumps(list(versions), ensure_ascii=False, separators=(",", ":"))),
        )

    def link_model(
        self,
        model_id: int,
        doc_id: int,
        *,
        trained_on: datetime | None = None,
        executed_on: datetime | None = None,
        created_at: datetime | None = None,
    ) -> int:
        """A ``core_ocrmodeldocument`` row: the model was trained on and/or run on the document."""
        return self._insert(
            "INSERT INTO core_ocrmodeldocument (created_at, trained_on, executed_on, document_id,"
            " ocr_model_id) VALUES (?, ?, ?, ?, ?)",
            (_stamp(created_at or trained_on or executed_on), _stamp(trained_on) if trained_on else None,
             _stamp(executed_on) if executed_on else None, doc_id, model_id),
        )

    def share_model(
        self, model_id: int, *, user: str | None = None, group: str | None = None,
        created_at: datetime | None = None,
    ) -> int:
        """A ``core_ocrmodelright`` row: the model shared with exactly one user or one group."""
        if (user is None) == (group is None):
            raise ValueError("share a model with a user or a group, not both or neither")
        return self._insert(
            "INSERT INTO core_ocrmodelright (created_at, group_id, user_id, ocr_model_id)"
            " VALUES (?, ?, ?, ?)",
            (_stamp(created_at), self.add_group(group) if group else None,
             self.add_user(user) if user else None, model_id),
        )
