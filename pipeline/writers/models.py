"""OCR models into an archive: each model's file byte for byte and a ``model.json`` beside it.

Used by ``models export`` (an archive of chosen models) and by document exports with
``models = "used" | "all"``. Entries are ``models/<id>_<slug>/<stored file name>`` and
``models/<id>_<slug>/model.json`` (every stored fact, the sha256 of the file as written, the
version history and the chain of parents); their times are the model's last update, so the same
data gives the same bytes. A model whose file is missing fails the export naming model and path,
or with ``skip`` keeps its ``model.json`` (``"file_missing": true``) and is reported.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import anyio

from pipeline.archive import ZipArchive
from pipeline.errors import PipelineError, UsageError
from pipeline.model import Document
from pipeline.naming import slug
from pipeline.ocrmodel import OcrModel, select_models

#: folder of the models in an archive
MODELS_FOLDER = "models/"
MODEL_JSON = "model.json"
#: which models a document export adds: none, those trained on or run on its documents, or all
ModelChoice = Literal["none", "used", "all"]
#: bytes read from a model file at a time
CHUNK = 1 << 20


@runtime_checkable
class HasModels(Protocol):
    """A source that keeps eScriptorium's OCR models (the SQLite corpus, eScriptorium's database)."""

    async def models(self) -> list[OcrModel]: ...

    def model_path(self, model: OcrModel) -> Path | None: ...


async def source_models(source: object) -> list[OcrModel]:
    """The source's models, or none for a source that keeps none (folders and zips of XML)."""
    return await source.models() if isinstance(source, HasModels) else []


def keeper(source: object) -> HasModels:
    """``source`` as a keeper of models; UsageError for one that keeps none."""
    if not isinstance(source, HasModels):
        shown = source.display() if hasattr(source, "display") else str(source)
        raise UsageError(f"{shown} keeps no models (a corpus or eScriptorium's database does)")
    return source


def of_document(models: Sequence[OcrModel], ref: str | int) -> list[OcrModel]:
    """The models trained on or run on the document ``ref`` (id or exact name)."""
    text = str(ref)
    return [m for m in models
            if any(str(d.document_id) == text or d.document_name == text for d in m.documents)]


def used_by(models: Sequence[OcrModel], documents: Sequence[Document]) -> list[OcrModel]:
    """The models trained on or run on any of ``documents``, by id."""
    ids = {d.id for d in documents}
    return [m for m in models if any(link.document_id in ids for link in m.documents)]


def included(models: Sequence[OcrModel], documents: Sequence[Document], choice: str) -> list[OcrModel]:
    """The models an archive of ``documents`` adds for ``models = choice``: none, those trained on
    or run on the documents (:func:`used_by`), or all of them."""
    if choice == "none":
        return []
    return list(models) if choice == "all" else used_by(models, documents)


def marker(source: object, chosen: Sequence[OcrModel], every: Sequence[OcrModel]) -> str:
    """What an archive's model entries depend on, for a job's fingerprint, found without reading a
    model file: each chosen model as stored (every column, its history, the documents it is linked
    to, its rights: the whole value object), the parents its ``model.json`` names, and its file's
    size and modification time (a stat, as the parts' images are stamped). A replaced or renamed
    file, a new version, a rename, a new link to a document each change it."""
    by_id = {m.id: m for m in every}
    rows = []
    for model in chosen:
        path = source.model_path(model) if isinstance(source, HasModels) else None
        try:
            stat = os.stat(path) if path is not None else None
            stamp = f"{stat.st_size}:{stat.st_mtime_ns}" if stat is not None else None
        except OSError:
            stamp = "missing"
        rows.append(f"{model!r}|{_ancestors(model, by_id)!r}|{stamp}")
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def choose(models: Sequence[OcrModel], refs: Sequence[str | int]) -> list[OcrModel]:
    """The models named by id or exact name (UsageError naming those that match nothing)."""
    try:
        return select_models(list(models), refs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def folder(model: OcrModel) -> str:
    """``models/<id>_<slug>/``: the id keeps it unique, the slug makes it readable."""
    return f"{MODELS_FOLDER}{model.id}_{slug(model.name) or 'model'}/"


def check_files(source: HasModels, models: Sequence[OcrModel], *, skip: bool) -> list[dict[str, Any]]:
    """Before anything is written: every model's file must be there (PipelineError naming model and
    path), or with ``skip`` the missing ones are returned as report entries."""
    report = []
    for model in models:
        problem = _missing(source, model)
        if problem is None:
            continue
        if not skip:
            raise PipelineError(problem)
        report.append({"model": model.id, "name": model.name, "file": model.file, "error": problem})
    return report


def _missing(source: HasModels, model: OcrModel) -> str | None:
    what = f"model {model.id} ({model.name!r})"
    if not model.file:
        return f"{what} has no file (its training never produced one)"
    path = source.model_path(model)
    if path is None:
        return f"{what}: stored path {model.file!r} leads outside the media root"
    if not path.is_file():
        return f"{what}: model file {path} is missing"
    return None


async def write_models(
    archive: ZipArchive, source: HasModels, models: Sequence[OcrModel], all_models: Sequence[OcrModel],
    *, missing: Sequence[dict[str, Any]] = (), prefix: str = "",
) -> None:
    """Each model's file (skipping those in ``missing``) and its ``model.json`` into ``archive``;
    ``all_models`` names the parents."""
    skipped = {entry["model"] for entry in missing}
    by_id = {m.id: m for m in all_models}
    for model in models:
        base = prefix + folder(model)
        digest = None
        if model.id not in skipped:
            path = source.model_path(model)
            assert path is not None and model.file_name is not None  # checked by check_files
            hasher = hashlib.sha256()
            chunks = _hashed(path, hasher, model)
            archive.add(base + model.file_name, chunks, "binary", model.version_updated_at)
            await anyio.to_thread.run_sync(archive.flush)
            digest = hasher.hexdigest()
        described = model.describe(digest) | {"ancestors": _ancestors(model, by_id)}
        if model.id in skipped:
            described["file_missing"] = True
        data = json.dumps(described, indent=2, ensure_ascii=False).encode() + b"\n"
        archive.add(base + MODEL_JSON, data, "data", model.version_updated_at)
        await anyio.to_thread.run_sync(archive.flush)


def _hashed(path: Path, hasher: Any, model: OcrModel) -> Iterator[bytes]:
    """The file's bytes as they go into the zip, hashed on the way; a read error names the model."""
    try:
        with path.open("rb") as handle:
            while block := handle.read(CHUNK):
                hasher.update(block)
                yield block
    except OSError as exc:
        raise PipelineError(f"model {model.id} ({model.name!r}): cannot read {path}: {exc.strerror}") from exc


def _ancestors(model: OcrModel, by_id: dict[int, OcrModel]) -> list[dict[str, Any]]:
    """The parents it was fine-tuned from, nearest first (a cycle in bad data stops the walk)."""
    chain: list[dict[str, Any]] = []
    seen = {model.id}
    parent_id = model.parent_id
    while parent_id is not None and parent_id not in seen:
        seen.add(parent_id)
        parent = by_id.get(parent_id)
        if parent is None:
            chain.append({"id": parent_id, "name": None})
            break
        chain.append({"id": parent.id, "name": parent.name, "revision": parent.revision,
                      "training_accuracy": parent.training_accuracy, "training_epoch": parent.training_epoch})
        parent_id = parent.parent_id
    return chain
