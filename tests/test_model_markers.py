"""Incremental jobs see model changes (issue 20): an archive that adds models (``models = "used"``
or ``"all"``) is written again when a model it holds changes, and the files that name the models
that made a layer (provenance) are written again when those models change; nothing else is.

Driven through ``pipeline run`` on both stores: the SQLite corpus, and eScriptorium's PostgreSQL
database of the tests' own server, edited with the statements eScriptorium's tables take.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import main
from pipeline.demo import build_demo
from tests.pgcluster import demo_database

DEMO = {"documents": 2, "parts": 2, "lines": 4, "image_size": (100, 140), "seed": 3}
CHOICES = ("used", "all", "none")


class Corpus:
    """A demo corpus of one store: its job settings, its SQL and where its files are."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest | None = None) -> None:
        self.kind, self.folder = kind, tmp_path
        if kind == "sqlite":
            self.url = str(tmp_path / "corpus.sqlite")
            build_demo(Path(self.url), **DEMO)
            self.media_root = tmp_path / "corpus.media"
            self.settings = f'corpus = "{self.url}"\n'
        else:
            assert request is not None
            self.cluster = request.getfixturevalue("pg_cluster")
            store = demo_database(self.cluster, "modelmarkers", tmp_path, image_format="jpeg", **DEMO)
            assert store.media_root is not None
            self.url, self.media_root = store.corpus, store.media_root
            self.settings = (f'corpus = "{self.url}"\nmedia_root = "{self.media_root}"\n'
                             f'registry = "{tmp_path / "registry.sqlite"}"\n')

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """One statement in its own transaction (``?`` placeholders for either store)."""
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.url)) as db:
                rows = db.execute(statement, params).fetchall()
                db.commit()
                return rows
        with self.cluster.connect("modelmarkers") as conn:
            cursor = conn.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def job(self, choice: str) -> Path:
        config = self.folder / f"job-{choice}.toml"
        config.write_text(f'name = "models-{choice}"\n{self.settings}[select]\nchanged_only = true\n'
                          f'[archive]\ndirectory = "{self.folder / f"out-{choice}"}"\nmode = "document"\n'
                          f'[[outputs]]\nformat = "alto"\nmodels = "{choice}"\n')
        return config

    def run(self, choice: str) -> list[int]:
        """Run the job; the documents it exported (the others it skipped as unchanged)."""
        assert main(["-q", "run", str(self.job(choice))]) == 0
        report = json.loads((self.folder / f"out-{choice}" / f"models-{choice}-report.json").read_text())
        assert len(report["exported"]) + len(report["skipped"]) == 2
        return sorted(e["documents"][0]["id"] for e in report["exported"])


def _rename_parent(corpus: Corpus) -> None:
    """The model the recognition model was fine-tuned from (run on no document) is renamed: the
    recognition model's ``model.json`` names its parents."""
    corpus.execute("UPDATE core_ocrmodel SET name = ? WHERE id = 2", ("catmus-medieval-1.0 (base)",))


def _replace_file(corpus: Corpus) -> None:
    """The segmentation model's file gets new bytes under the same name (a new sha256)."""
    ((file,),) = corpus.execute("SELECT file FROM core_ocrmodel WHERE id = 1")
    path = corpus.media_root / file
    path.write_bytes(path.read_bytes() + b"\0")


def _new_version(corpus: Corpus) -> None:
    """A version pushed onto the recognition model's history (newest first), nothing else."""
    version = json.dumps({"revision": "0b3c6f57-4d39-4c4e-9f0e-3d2f1c8a9b71", "author": "admin",
                          "source": "kraken", "created_at": "2023-02-01T00:00:00+00:00",
                          "updated_at": "2023-02-01T00:00:00+00:00", "data": {"training_epoch": 7}})
    if corpus.kind == "sqlite":
        corpus.execute("UPDATE core_ocrmodel SET versions = '[' || ? || ',' || substr(versions, 2) "
                       "WHERE id = 3", (version,))
    else:
        corpus.execute("UPDATE core_ocrmodel SET versions = jsonb_build_array(?::jsonb) || versions "
                       "WHERE id = 3", (version,))


def _link(corpus: Corpus) -> None:
    """The base model is newly recorded as trained on document 2 (``core_ocrmodeldocument``)."""
    corpus.execute("INSERT INTO core_ocrmodeldocument (created_at, trained_on, executed_on, document_id, "
                   "ocr_model_id) VALUES (?, ?, NULL, 2, 2)",
                   ("2023-02-01T00:00:00+00:00", "2023-02-01T00:00:00+00:00"))


def _rename_segmenter(corpus: Corpus) -> None:
    """The segmentation model run on both documents is renamed: every ALTO file names it."""
    corpus.execute("UPDATE core_ocrmodel SET name = ? WHERE id = 1", ("blla 2",))


#: edit -> the documents each job (models = used, all, none) exports again
EDITS: dict[str, tuple[Callable[[Corpus], None], dict[str, list[int]]]] = {
    "parent model renamed": (_rename_parent, {"used": [1, 2], "all": [1, 2], "none": []}),
    "model file replaced": (_replace_file, {"used": [1, 2], "all": [1, 2], "none": []}),
    "new version in a history": (_new_version, {"used": [1, 2], "all": [1, 2], "none": []}),
    "model newly linked to a document": (_link, {"used": [2], "all": [1, 2], "none": []}),
    "model named in the provenance renamed": (_rename_segmenter, {"used": [1, 2], "all": [1, 2],
                                                                  "none": [1, 2]}),
}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_jobs_export_again_when_a_model_they_hold_changes(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    corpus = Corpus(kind, tmp_path, request)
    for choice in CHOICES:
        assert corpus.run(choice) == [1, 2]
        assert corpus.run(choice) == [], choice  # nothing changed: both skipped
    for edit, (change, expected) in EDITS.items():
        change(corpus)
        got = {choice: corpus.run(choice) for choice in CHOICES}
        assert got == expected, edit
        assert {choice: corpus.run(choice) for choice in CHOICES} == dict.fromkeys(CHOICES, []), edit


def test_models_are_read_once_per_plan_and_no_model_file_is_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning reads the model tables once (three statements, whatever the documents) and only
    stats the model files: an unchanged run opens none of them."""
    from test_change_markers import watching

    corpus = Corpus("sqlite", tmp_path)
    assert corpus.run("all") == [1, 2]
    with watching(monkeypatch) as activity:
        assert corpus.run("all") == []
    assert sum("FROM core_ocrmodel m" in s for s in activity.statements) == 1
    assert not [p for p in activity.opened if p.endswith(".mlmodel")]
