"""A corpus document's change marker: one aggregate statement instead of reading its parts.

An incremental job skips a document whose marker is the one it had when its archive was written.
The marker must change whenever an export of the document in that layer could: every row of every
table the reader reads for it goes into it, as the row count and an order-free sum of a 64-bit
digest of the row's id and columns, per table. So a text, geometry, type, order, metadata or
annotation edit, a row added or deleted, an image size stored or an image file replaced (its size
and modification time) each change it, while no part is built and no file is opened.

SQLite has no hash function, so the digest is a Python aggregate registered on the connection
(:func:`install`); eScriptorium's PostgreSQL source computes its own marker in SQL.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

#: the sum of row digests wraps at 64 bits (SQLite's integers would overflow)
_MASK = (1 << 64) - 1

#: per table an export reads: the document's rows, digested; ``:doc`` the document, ``:layer``
#: the transcription (layer) read. Global tables (types) are small and named in every export.
MARKER = """
SELECT
 (SELECT pipeline_digest(d.id, d.name, d.created_at, d.updated_at) FROM core_document d WHERE d.id = :doc),
 (SELECT pipeline_digest(p.id, p."order", p.name, p.image, p.original_filename, p.source, p.typology_id,
                         p.created_at, p.updated_at, s.width, s.height, pipeline_file_stamp(p.image))
  FROM core_documentpart p LEFT JOIN pipeline_image_size s ON s.part_id = p.id WHERE p.document_id = :doc),
 (SELECT pipeline_digest(b.id, b.document_part_id, b."order", b.box, b.typology_id, b.external_id)
  FROM core_block b JOIN core_documentpart p ON p.id = b.document_part_id WHERE p.document_id = :doc),
 (SELECT pipeline_digest(l.id, l.document_part_id, l.block_id, l."order", l.baseline, l.mask, l.typology_id,
                         l.external_id)
  FROM core_line l JOIN core_documentpart p ON p.id = l.document_part_id WHERE p.document_id = :doc),
 (SELECT pipeline_digest(t.id, t.line_id, t.content, t.avg_confidence)
  FROM core_linetranscription t WHERE t.transcription_id = :layer),
 (SELECT pipeline_digest(t.id, t.name, t.archived) FROM core_transcription t WHERE t.document_id = :doc),
 (SELECT pipeline_digest(v.id, v.blocktype_id) FROM core_document_valid_block_types v
  WHERE v.document_id = :doc),
 (SELECT pipeline_digest(v.id, v.linetype_id) FROM core_document_valid_line_types v
  WHERE v.document_id = :doc),
 (SELECT pipeline_digest(x.id, x.name) FROM core_blocktype x),
 (SELECT pipeline_digest(x.id, x.name) FROM core_linetype x),
 (SELECT pipeline_digest(x.id, x.name) FROM core_documentparttype x),
 (SELECT pipeline_digest(dt.id, t.id, t.name) FROM core_document_tags dt
  JOIN core_documenttag t ON t.id = dt.documenttag_id WHERE dt.document_id = :doc),
 (SELECT pipeline_digest(dm.id, m.name, dm.value) FROM core_documentmetadata dm
  JOIN core_metadata m ON m.id = dm.key_id WHERE dm.document_id = :doc),
 (SELECT pipeline_digest(pm.id, pm.part_id, m.name, pm.value) FROM core_documentpartmetadata pm
  JOIN core_documentpart p ON p.id = pm.part_id JOIN core_metadata m ON m.id = pm.key_id
  WHERE p.document_id = :doc),
 (SELECT pipeline_digest(x.id, x.name, x.typology_id, at.name, x.abbreviation, x.marker_type, x.marker_detail,
                         x.has_comments, x."order")
  FROM core_annotationtaxonomy x LEFT JOIN core_annotationtype at ON at.id = x.typology_id
  WHERE x.document_id = :doc),
 (SELECT pipeline_digest(c.id, c.name, c.allowed_values) FROM core_annotationcomponent c
  WHERE c.document_id = :doc),
 (SELECT pipeline_digest(a.id, a.taxonomy_id, a.part_id, a.start_line_id, a.start_offset, a.end_line_id,
                         a.end_offset, a.comments)
  FROM core_textannotation a WHERE a.transcription_id = :layer),
 (SELECT pipeline_digest(v.id, v.annotation_id, v.component_id, v.value)
  FROM core_textannotationcomponentvalue v JOIN core_textannotation a ON a.id = v.annotation_id
  WHERE a.transcription_id = :layer)
"""


class _RowDigest:
    """SQLite aggregate ``pipeline_digest(...)``: ``count:sum`` of a 64-bit BLAKE2b digest of
    each row's values. The sum does not depend on the order rows come in (a VACUUM or another
    query plan changes nothing), and any change to one row changes it but with odds of 2**-64."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0

    def step(self, *values: object) -> None:
        digest = hashlib.blake2b(repr(values).encode(), digest_size=8).digest()
        self.count += 1
        self.total = (self.total + int.from_bytes(digest)) & _MASK

    def finalize(self) -> str:
        return f"{self.count}:{self.total:016x}"


def install(connection: sqlite3.Connection, media_root: Path) -> None:
    """Register ``pipeline_digest`` and ``pipeline_file_stamp(image)`` (an image file's size and
    modification time under ``media_root``, by a stat: the file is not opened) on ``connection``."""
    root = str(media_root)

    def file_stamp(image: str | None) -> str | None:
        if not image:
            return None
        try:
            stat = os.stat(os.path.join(root, image))
        except OSError:
            return "missing"
        return f"{stat.st_size}:{stat.st_mtime_ns}"

    connection.create_aggregate("pipeline_digest", -1, _RowDigest)
    connection.create_function("pipeline_file_stamp", 1, file_stamp)


def document_marker(connection: sqlite3.Connection, document_id: int, layer_id: int, media_root: Path) -> str:
    """The marker of one document in one layer (functions :func:`install`-ed): one statement."""
    row = connection.execute(MARKER, {"doc": document_id, "layer": layer_id}).fetchone()
    text = "|".join(str(value) for value in (media_root, document_id, layer_id, *row))
    return hashlib.sha256(text.encode()).hexdigest()
