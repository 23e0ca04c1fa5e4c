"""The SQL both readers run over eScriptorium's tables: the SQLite corpus and eScriptorium's own
PostgreSQL database, one text each, through :class:`~pipeline.store.dialect.Dialect`.

Statements take ``:name`` parameters; a list of ids is ``= ANY(:name)`` (an array in PostgreSQL,
``IN (SELECT value FROM json_each(...))`` in SQLite). They follow the portability rules of the
schema notes: named columns only, ``"order"`` quoted, NULL ordering explicit, no JSON operators
(geometry is read as JSON text and parsed in Python). Part contents are read a page of parts per
statement, rows sorted by part first, so a document costs (parts / page size) statements plus a
constant. Part rows end with the image size columns of the dialect (``{sizes}``, ``{size_join}``).
"""

from __future__ import annotations

from collections.abc import Sequence

#: every table and column the readers use, to tell an eScriptorium database from another
REQUIRED: dict[str, tuple[str, ...]] = {
    "core_project": ("id", "slug"),
    "core_document": ("id", "name", "created_at", "updated_at", "workflow_state", "project_id"),
    "core_documentpart": (
        "id",
        "document_id",
        "order",
        "name",
        "image",
        "original_filename",
        "source",
        "typology_id",
        "created_at",
        "updated_at",
    ),
    "core_documentparttype": ("id", "name"),
    "core_block": ("id", "document_part_id", "order", "box", "typology_id", "external_id"),
    "core_line": (
        "id",
        "document_part_id",
        "block_id",
        "order",
        "baseline",
        "mask",
        "typology_id",
        "external_id",
    ),
    "core_blocktype": ("id", "name"),
    "core_linetype": ("id", "name"),
    "core_document_valid_block_types": ("document_id", "blocktype_id"),
    "core_document_valid_line_types": ("document_id", "linetype_id"),
    "core_transcription": ("id", "document_id", "name", "archived"),
    "core_linetranscription": ("line_id", "transcription_id", "content", "avg_confidence"),
    "core_documenttag": ("id", "name", "project_id"),
    "core_document_tags": ("document_id", "documenttag_id"),
    "core_metadata": ("id", "name"),
    "core_documentmetadata": ("id", "document_id", "key_id", "value"),
    "core_documentpartmetadata": ("id", "part_id", "key_id", "value"),
    "core_annotationtype": ("id", "name"),
    "core_annotationtaxonomy": ("id", "document_id", "typology_id", "name", "abbreviation", "marker_type"),
    "core_textannotation": (
        "id",
        "taxonomy_id",
        "part_id",
        "transcription_id",
        "start_line_id",
        "start_offset",
        "end_line_id",
        "end_offset",
        "comments",
    ),
    "core_textannotationcomponentvalue": ("id", "annotation_id", "component_id", "value"),
}


def missing_schema(present: Sequence[tuple[str, str]]) -> str | None:
    """What the first missing table or column is (``table core_x`` / ``column core_x.y``), if any."""
    have: dict[str, set[str]] = {}
    for table, column in present:
        have.setdefault(table, set()).add(column)
    for table, columns in REQUIRED.items():
        if table not in have:
            return f"table {table}"
        for column in columns:
            if column not in have[table]:
                return f"column {table}.{column}"
    return None


# -- documents -----------------------------------------------------------------------------

DOCUMENT = """
    SELECT d.id, d.name, d.created_at, d.updated_at FROM core_document d WHERE d.id = :doc
"""
DOCUMENT_BY_ID = "SELECT d.id FROM core_document d WHERE d.id = :ref"
DOCUMENTS_BY_NAME = "SELECT d.id FROM core_document d WHERE d.name = :ref ORDER BY d.id"
VALID_BLOCK_TYPES = """
    SELECT bt.id, bt.name FROM core_blocktype bt
    JOIN core_document_valid_block_types v ON v.blocktype_id = bt.id
    WHERE v.document_id = :doc ORDER BY bt.id
"""
VALID_LINE_TYPES = """
    SELECT lt.id, lt.name FROM core_linetype lt
    JOIN core_document_valid_line_types v ON v.linetype_id = lt.id
    WHERE v.document_id = :doc ORDER BY lt.id
"""
USED_BLOCK_TYPES = """
    SELECT bt.id, bt.name FROM core_blocktype bt
    WHERE EXISTS (SELECT 1 FROM core_document_valid_block_types v
                  WHERE v.blocktype_id = bt.id AND v.document_id = :doc)
       OR EXISTS (SELECT 1 FROM core_block b
                  JOIN core_documentpart p ON p.id = b.document_part_id
                  WHERE b.typology_id = bt.id AND p.document_id = :doc)
    ORDER BY bt.id
"""
LAYERS = """
    SELECT t.id, t.name, t.archived FROM core_transcription t WHERE t.document_id = :doc ORDER BY t.id
"""
TAGS = """
    SELECT t.name FROM core_documenttag t JOIN core_document_tags dt ON dt.documenttag_id = t.id
    WHERE dt.document_id = :doc ORDER BY t.name, t.id
"""
DOCUMENT_METADATA = """
    SELECT m.name, dm.value FROM core_documentmetadata dm JOIN core_metadata m ON m.id = dm.key_id
    WHERE dm.document_id = :doc ORDER BY dm.id
"""
PART_COUNT = "SELECT COUNT(*) FROM core_documentpart p WHERE p.document_id = :doc"
#: ``count:sum`` of a 64-bit digest (md5's first 16 hex digits) of each row: any edit to one row
#: changes it whatever the row order; the sum is numeric, so it never overflows
_DIGEST = "COUNT(*) || ':' || COALESCE(SUM(('x' || LEFT(MD5(ROW({}) :: text), 16)) :: bit(64) :: bigint), 0)"
#: PostgreSQL only (md5 and bit casts; the SQLite corpus computes its marker in pipeline.store.marker):
#: what an incremental job compares: one statement of aggregates over every row an export of the
#: document in the layer reads (eScriptorium bumps no timestamp when a line's text or geometry is
#: edited, so timestamps alone would miss those); no part is built
CHANGE_MARKER = f"""
    SELECT d.name, d.updated_at,
     (SELECT {_DIGEST.format('p.id, p."order", p.name, p.image, p.original_filename, p.source, '
                             'p.typology_id, p.created_at, p.updated_at')}
      FROM core_documentpart p WHERE p.document_id = d.id),
     (SELECT {_DIGEST.format('b.id, b.document_part_id, b."order", b.box, b.typology_id, b.external_id')}
      FROM core_block b JOIN core_documentpart p ON p.id = b.document_part_id WHERE p.document_id = d.id),
     (SELECT {_DIGEST.format('l.id, l.document_part_id, l.block_id, l."order", l.baseline, l.mask, '
                             'l.typology_id, l.external_id')}
      FROM core_line l JOIN core_documentpart p ON p.id = l.document_part_id WHERE p.document_id = d.id),
     (SELECT {_DIGEST.format('t.line_id, t.content, t.avg_confidence')}
      FROM core_linetranscription t WHERE t.transcription_id = :layer),
     (SELECT {_DIGEST.format('t.id, t.name, t.archived')} FROM core_transcription t
      WHERE t.document_id = d.id),
     (SELECT {_DIGEST.format('v.blocktype_id')} FROM core_document_valid_block_types v
      WHERE v.document_id = d.id),
     (SELECT {_DIGEST.format('v.linetype_id')} FROM core_document_valid_line_types v
      WHERE v.document_id = d.id),
     (SELECT {_DIGEST.format('x.id, x.name')} FROM core_blocktype x),
     (SELECT {_DIGEST.format('x.id, x.name')} FROM core_linetype x),
     (SELECT {_DIGEST.format('x.id, x.name')} FROM core_documentparttype x),
     (SELECT {_DIGEST.format('t.id, t.name')} FROM core_document_tags dt
      JOIN core_documenttag t ON t.id = dt.documenttag_id WHERE dt.document_id = d.id),
     (SELECT {_DIGEST.format('dm.id, m.name, dm.value')} FROM core_documentmetadata dm
      JOIN core_metadata m ON m.id = dm.key_id WHERE dm.document_id = d.id),
     (SELECT {_DIGEST.format('pm.id, pm.part_id, m.name, pm.value')} FROM core_documentpartmetadata pm
      JOIN core_documentpart p ON p.id = pm.part_id JOIN core_metadata m ON m.id = pm.key_id
      WHERE p.document_id = d.id),
     (SELECT {_DIGEST.format('x.id, x.name, x.typology_id, at.name, x.abbreviation, x.marker_type')}
      FROM core_annotationtaxonomy x LEFT JOIN core_annotationtype at ON at.id = x.typology_id
      WHERE x.document_id = d.id),
     (SELECT {_DIGEST.format('a.id, a.taxonomy_id, a.part_id, a.start_line_id, a.start_offset, '
                             'a.end_line_id, a.end_offset, a.comments')}
      FROM core_textannotation a WHERE a.transcription_id = :layer),
     (SELECT {_DIGEST.format('v.id, v.annotation_id, v.component_id, v.value')}
      FROM core_textannotationcomponentvalue v JOIN core_textannotation a ON a.id = v.annotation_id
      WHERE a.transcription_id = :layer)
    FROM core_document d WHERE d.id = :doc
"""
#: the parts' image files, stat'ed (never opened) for the marker: a rescanned image keeps its name
PART_IMAGES = "SELECT p.image FROM core_documentpart p WHERE p.document_id = :doc ORDER BY p.id"

# -- parts ---------------------------------------------------------------------------------

PART_IDS_IN_ORDER = """
    SELECT p.id FROM core_documentpart p WHERE p.document_id = :doc ORDER BY p."order", p.id
"""
PART_ORDER_OF = """
    SELECT p."order", p.id FROM core_documentpart p WHERE p.document_id = :doc AND p.id = ANY(:ids)
"""
_PART_COLUMNS = """
    SELECT p.id, p.document_id, p."order", p.name, p.image, p.original_filename, p.source,
           pt.name, p.created_at, p.updated_at, {sizes}
    FROM core_documentpart p
    LEFT JOIN core_documentparttype pt ON pt.id = p.typology_id
    {size_join}
"""
PARTS_FIRST = (
    _PART_COLUMNS
    + """
    WHERE p.document_id = :doc ORDER BY p."order", p.id LIMIT :limit
"""
)
PARTS_AFTER = (
    _PART_COLUMNS
    + """
    WHERE p.document_id = :doc AND (p."order" > :order OR (p."order" = :order AND p.id > :id))
    ORDER BY p."order", p.id LIMIT :limit
"""
)
PARTS_OF = (
    _PART_COLUMNS
    + """
    WHERE p.id = ANY(:ids) ORDER BY p."order", p.id
"""
)
BLOCK_TYPES = "SELECT bt.id, bt.name FROM core_blocktype bt"
LINE_TYPES = "SELECT lt.id, lt.name FROM core_linetype lt"
TAXONOMIES = """
    SELECT x.id, x.name, at.name, x.abbreviation, x.marker_type
    FROM core_annotationtaxonomy x
    LEFT JOIN core_annotationtype at ON at.id = x.typology_id
    WHERE x.document_id = :doc
"""
#: blocks of a page of parts, each part's in reading order (mean line order, untyped last)
BLOCKS = """
    SELECT b.document_part_id, b.id, b."order", b.box, b.typology_id, b.external_id
    FROM core_block b
    LEFT JOIN core_line l ON l.block_id = b.id
    WHERE b.document_part_id = ANY(:parts)
    GROUP BY b.id
    ORDER BY b.document_part_id, AVG(l."order") IS NULL, AVG(l."order"), b."order", b.id
"""
LINES = """
    SELECT l.document_part_id, l.id, l."order", l.baseline, l.mask, l.block_id, l.typology_id,
           l.external_id, t.content, t.avg_confidence
    FROM core_line l
    LEFT JOIN core_linetranscription t ON t.line_id = l.id AND t.transcription_id = :layer
    WHERE l.document_part_id = ANY(:parts)
    ORDER BY l.document_part_id, l."order", l.id
"""
ANNOTATIONS = """
    SELECT a.part_id, a.id, a.taxonomy_id, a.start_line_id, a.start_offset, a.end_line_id,
           a.end_offset, a.comments, v.value
    FROM core_textannotation a
    JOIN core_line sl ON sl.id = a.start_line_id
    LEFT JOIN core_textannotationcomponentvalue v ON v.annotation_id = a.id
    WHERE a.part_id = ANY(:parts) AND a.transcription_id = :layer
    ORDER BY a.part_id, sl."order", a.start_offset, a.id, v.component_id, v.id
"""
PART_METADATA = """
    SELECT pm.part_id, m.name, pm.value
    FROM core_documentpartmetadata pm
    JOIN core_metadata m ON m.id = pm.key_id
    WHERE pm.part_id = ANY(:parts)
    ORDER BY pm.part_id, pm.id
"""
