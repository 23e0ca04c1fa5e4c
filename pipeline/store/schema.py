"""DDL of the corpus file: a subset of eScriptorium's tables plus two project-only tables.

Mirrored tables keep eScriptorium's table and column names (spec section 1) so the reader's SQL
can later run against an eScriptorium PostgreSQL database. Polygons, arrays and JSON history are
JSON text. Anything eScriptorium lacks lives in ``pipeline_*`` tables, never in extra columns of a
mirrored table.
"""

from __future__ import annotations

#: bumped whenever the DDL changes; ``Corpus.open`` upgrades older files through ``MIGRATIONS``
#: and refuses newer ones
SCHEMA_VERSION = 2

#: SQLite's file header, checked before SQLite itself is asked to open a file
SQLITE_MAGIC = b"SQLite format 3\x00"

DDL = """
CREATE TABLE core_document (
    id INTEGER PRIMARY KEY,
    name VARCHAR(512) NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE core_documentparttype (
    id INTEGER PRIMARY KEY,
    name VARCHAR(256) NOT NULL
);
CREATE TABLE core_documentpart (
    id INTEGER PRIMARY KEY,
    document_id INTEGER NOT NULL REFERENCES core_document (id) ON DELETE CASCADE,
    "order" INTEGER NOT NULL,
    name VARCHAR(512) NOT NULL DEFAULT '',
    image VARCHAR(1024) NOT NULL,
    original_filename VARCHAR(1024) NOT NULL DEFAULT '',
    source VARCHAR(1024) NOT NULL DEFAULT '',
    typology_id INTEGER REFERENCES core_documentparttype (id) ON DELETE SET NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX core_documentpart_document_order ON core_documentpart (document_id, "order", id);

CREATE TABLE core_blocktype (
    id INTEGER PRIMARY KEY,
    name VARCHAR(128) NOT NULL
);
CREATE TABLE core_linetype (
    id INTEGER PRIMARY KEY,
    name VARCHAR(128) NOT NULL
);
CREATE TABLE core_document_valid_block_types (
    id INTEGER PRIMARY KEY,
    document_id INTEGER NOT NULL REFERENCES core_document (id) ON DELETE CASCADE,
    blocktype_id INTEGER NOT NULL REFERENCES core_blocktype (id) ON DELETE CASCADE,
    UNIQUE (document_id, blocktype_id)
);
CREATE TABLE core_document_valid_line_types (
    id INTEGER PRIMARY KEY,
    document_id INTEGER NOT NULL REFERENCES core_document (id) ON DELETE CASCADE,
    linetype_id INTEGER NOT NULL REFERENCES core_linetype (id) ON DELETE CASCADE,
    UNIQUE (document_id, linetype_id)
);

CREATE TABLE core_block (
    id INTEGER PRIMARY KEY,
    document_part_id INTEGER NOT NULL REFERENCES core_documentpart (id) ON DELETE CASCADE,
    "order" INTEGER NOT NULL DEFAULT 0,
    box TEXT NOT NULL,
    typology_id INTEGER REFERENCES core_blocktype (id) ON DELETE SET NULL,
    external_id VARCHAR(128)
);
CREATE INDEX core_block_part ON core_block (document_part_id);
CREATE INDEX core_block_typology ON core_block (typology_id);

CREATE TABLE core_line (
    id INTEGER PRIMARY KEY,
    document_part_id INTEGER NOT NULL REFERENCES core_documentpart (id) ON DELETE CASCADE,
    block_id INTEGER REFERENCES core_block (id) ON DELETE SET NULL,
    "order" INTEGER NOT NULL DEFAULT 0,
    baseline TEXT,
    mask TEXT,
    typology_id INTEGER REFERENCES core_linetype (id) ON DELETE SET NULL,
    external_id VARCHAR(128)
);
CREATE INDEX core_line_part_order ON core_line (document_part_id, "order");
CREATE INDEX core_line_block ON core_line (block_id);

CREATE TABLE core_transcription (
    id INTEGER PRIMARY KEY,
    document_id INTEGER NOT NULL REFERENCES core_document (id) ON DELETE CASCADE,
    name VARCHAR(512) NOT NULL,
    archived BOOLEAN NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    UNIQUE (name, document_id)
);
CREATE TABLE core_linetranscription (
    id INTEGER PRIMARY KEY,
    line_id INTEGER NOT NULL REFERENCES core_line (id) ON DELETE CASCADE,
    transcription_id INTEGER NOT NULL REFERENCES core_transcription (id) ON DELETE CASCADE,
    content VARCHAR(2048) NOT NULL DEFAULT '',
    avg_confidence REAL,
    graphs TEXT,
    versions TEXT NOT NULL DEFAULT '[]',
    version_author VARCHAR(128),
    version_source VARCHAR(128),
    version_updated_at TEXT,
    UNIQUE (line_id, transcription_id)
);
CREATE INDEX core_linetranscription_transcription ON core_linetranscription (transcription_id);

CREATE TABLE core_documenttag (
    id INTEGER PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    color VARCHAR(100)
);
CREATE TABLE core_document_tags (
    id INTEGER PRIMARY KEY,
    document_id INTEGER NOT NULL REFERENCES core_document (id) ON DELETE CASCADE,
    documenttag_id INTEGER NOT NULL REFERENCES core_documenttag (id) ON DELETE CASCADE,
    UNIQUE (document_id, documenttag_id)
);

CREATE TABLE core_metadata (
    id INTEGER PRIMARY KEY,
    name VARCHAR(128) NOT NULL UNIQUE
);
CREATE TABLE core_documentmetadata (
    id INTEGER PRIMARY KEY,
    document_id INTEGER NOT NULL REFERENCES core_document (id) ON DELETE CASCADE,
    key_id INTEGER NOT NULL REFERENCES core_metadata (id) ON DELETE CASCADE,
    value VARCHAR(512) NOT NULL
);
CREATE INDEX core_documentmetadata_document ON core_documentmetadata (document_id);
CREATE TABLE core_documentpartmetadata (
    id INTEGER PRIMARY KEY,
    part_id INTEGER NOT NULL REFERENCES core_documentpart (id) ON DELETE CASCADE,
    key_id INTEGER NOT NULL REFERENCES core_metadata (id) ON DELETE CASCADE,
    value VARCHAR(512) NOT NULL
);
CREATE INDEX core_documentpartmetadata_part ON core_documentpartmetadata (part_id);

CREATE TABLE core_annotationtype (
    id INTEGER PRIMARY KEY,
    name VARCHAR(256) NOT NULL
);
CREATE TABLE core_annotationtaxonomy (
    id INTEGER PRIMARY KEY,
    document_id INTEGER NOT NULL REFERENCES core_document (id) ON DELETE CASCADE,
    typology_id INTEGER REFERENCES core_annotationtype (id) ON DELETE SET NULL,
    name VARCHAR(64) NOT NULL,
    abbreviation VARCHAR(3),
    marker_type INTEGER,
    marker_detail VARCHAR(12),
    has_comments BOOLEAN NOT NULL DEFAULT 0,
    "order" INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX core_annotationtaxonomy_document ON core_annotationtaxonomy (document_id);
CREATE TABLE core_annotationcomponent (
    id INTEGER PRIMARY KEY,
    document_id INTEGER NOT NULL REFERENCES core_document (id) ON DELETE CASCADE,
    name VARCHAR(128) NOT NULL,
    allowed_values TEXT
);
CREATE TABLE core_annotationtaxonomy_components (
    id INTEGER PRIMARY KEY,
    annotationtaxonomy_id INTEGER NOT NULL REFERENCES core_annotationtaxonomy (id) ON DELETE CASCADE,
    annotationcomponent_id INTEGER NOT NULL REFERENCES core_annotationcomponent (id) ON DELETE CASCADE,
    UNIQUE (annotationtaxonomy_id, annotationcomponent_id)
);
CREATE TABLE core_textannotation (
    id INTEGER PRIMARY KEY,
    taxonomy_id INTEGER NOT NULL REFERENCES core_annotationtaxonomy (id) ON DELETE CASCADE,
    part_id INTEGER NOT NULL REFERENCES core_documentpart (id) ON DELETE CASCADE,
    transcription_id INTEGER NOT NULL REFERENCES core_transcription (id) ON DELETE CASCADE,
    start_line_id INTEGER NOT NULL REFERENCES core_line (id) ON DELETE CASCADE,
    start_offset INTEGER NOT NULL,
    end_line_id INTEGER NOT NULL REFERENCES core_line (id) ON DELETE CASCADE,
    end_offset INTEGER NOT NULL,
    comments TEXT
);
CREATE INDEX core_textannotation_part ON core_textannotation (part_id, transcription_id);
CREATE TABLE core_textannotationcomponentvalue (
    id INTEGER PRIMARY KEY,
    annotation_id INTEGER NOT NULL REFERENCES core_textannotation (id) ON DELETE CASCADE,
    component_id INTEGER NOT NULL REFERENCES core_annotationcomponent (id) ON DELETE CASCADE,
    value VARCHAR(512) NOT NULL
);
CREATE INDEX core_textannotationcomponentvalue_annotation
    ON core_textannotationcomponentvalue (annotation_id);
CREATE TABLE core_imageannotation (
    id INTEGER PRIMARY KEY,
    taxonomy_id INTEGER NOT NULL REFERENCES core_annotationtaxonomy (id) ON DELETE CASCADE,
    part_id INTEGER NOT NULL REFERENCES core_documentpart (id) ON DELETE CASCADE,
    coordinates TEXT NOT NULL,
    comments TEXT
);
CREATE INDEX core_imageannotation_part ON core_imageannotation (part_id);

CREATE TABLE pipeline_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE pipeline_image_size (
    part_id INTEGER PRIMARY KEY REFERENCES core_documentpart (id) ON DELETE CASCADE,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL
);
"""

#: eScriptorium's model tables (``core_ocrmodel``: trained kraken models, ``core_ocrmodeldocument``:
#: which documents a model was trained on or run on, ``core_ocrmodelright``: sharing) and the two
#: tables they name owners, groups and scripts from (subsets of ``users_user``, ``auth_group``,
#: ``core_script``).
MODEL_DDL = """
CREATE TABLE users_user (
    id INTEGER PRIMARY KEY,
    username VARCHAR(150) NOT NULL UNIQUE
);
CREATE TABLE auth_group (
    id INTEGER PRIMARY KEY,
    name VARCHAR(150) NOT NULL UNIQUE
);
CREATE TABLE core_script (
    id INTEGER PRIMARY KEY,
    name VARCHAR(128) NOT NULL UNIQUE
);
CREATE TABLE core_ocrmodel (
    id INTEGER PRIMARY KEY,
    name VARCHAR(256) NOT NULL,
    file VARCHAR(100),
    job SMALLINT NOT NULL,
    training BOOLEAN NOT NULL DEFAULT 0,
    training_epoch SMALLINT NOT NULL DEFAULT 0,
    training_accuracy REAL NOT NULL DEFAULT 0.0,
    training_errors INTEGER NOT NULL DEFAULT 0,
    training_total INTEGER NOT NULL DEFAULT 0,
    file_size BIGINT NOT NULL,
    public BOOLEAN NOT NULL DEFAULT 0,
    owner_id INTEGER REFERENCES users_user (id) ON DELETE SET NULL,
    parent_id INTEGER REFERENCES core_ocrmodel (id) ON DELETE SET NULL,
    script_id INTEGER REFERENCES core_script (id) ON DELETE SET NULL,
    revision VARCHAR(36) NOT NULL,
    version_author VARCHAR(128) NOT NULL,
    version_source VARCHAR(128) NOT NULL,
    version_created_at TEXT NOT NULL,
    version_updated_at TEXT NOT NULL,
    versions TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX core_ocrmodel_name ON core_ocrmodel (name);
CREATE TABLE core_ocrmodeldocument (
    id INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    trained_on TEXT,
    executed_on TEXT,
    document_id INTEGER NOT NULL REFERENCES core_document (id) ON DELETE CASCADE,
    ocr_model_id INTEGER NOT NULL REFERENCES core_ocrmodel (id) ON DELETE CASCADE
);
CREATE INDEX core_ocrmodeldocument_document ON core_ocrmodeldocument (document_id);
CREATE INDEX core_ocrmodeldocument_model ON core_ocrmodeldocument (ocr_model_id);
CREATE TABLE core_ocrmodelright (
    id INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    group_id INTEGER REFERENCES auth_group (id) ON DELETE CASCADE,
    user_id INTEGER REFERENCES users_user (id) ON DELETE CASCADE,
    ocr_model_id INTEGER NOT NULL REFERENCES core_ocrmodel (id) ON DELETE CASCADE,
    CHECK ((group_id IS NULL) <> (user_id IS NULL))
);
CREATE INDEX core_ocrmodelright_model ON core_ocrmodelright (ocr_model_id);
"""

#: from version N to N + 1: statements run in one transaction with the version bump
MIGRATIONS = {1: MODEL_DDL}
