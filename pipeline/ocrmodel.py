"""eScriptorium's OCR models (``core_ocrmodel`` + ``core_ocrmodeldocument``) as value objects.

Users train kraken segmentation and recognition models in eScriptorium; the transcriptions a model
produced sit in a layer named after it (``kraken:<model name>``). Both stores build these objects;
``models export`` writes :meth:`OcrModel.describe` as ``model.json`` beside the file, and the
export's provenance asks :func:`layer_model` which model made a layer. No I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePath, PurePosixPath
from typing import Any

#: ``core_ocrmodel.job`` (eScriptorium's ``MODEL_JOB_SEGMENT`` / ``MODEL_JOB_RECOGNIZE``)
JOBS = {1: "segmentation", 2: "recognition"}
JOB_IDS = {name: number for number, name in JOBS.items()}
#: eScriptorium names a layer a recognition model writes ``kraken:<model name>``
LAYER_PREFIX = "kraken:"


@dataclass(frozen=True, slots=True)
class ModelDocument:
    """One ``core_ocrmodeldocument`` row: the model was trained on and/or run on the document."""

    document_id: int
    document_name: str
    created_at: datetime | None = None
    trained_on: datetime | None = None
    executed_on: datetime | None = None


@dataclass(frozen=True, slots=True)
class OcrModel:
    """A model as eScriptorium stores it; ``file`` is relative to MEDIA_ROOT (None while untrained)."""

    id: int
    name: str
    job: int
    file: str | None = None
    file_size: int = 0
    training: bool = False
    training_epoch: int = 0
    training_accuracy: float = 0.0
    training_errors: int = 0
    training_total: int = 0
    public: bool = False
    owner: str | None = None
    parent_id: int | None = None
    parent_name: str | None = None
    script: str | None = None
    revision: str = ""
    version_author: str = ""
    version_source: str = ""
    version_created_at: datetime | None = None
    version_updated_at: datetime | None = None
    #: the ``versions`` history (newest first, as eScriptorium stacks it), JSON as stored
    versions_json: str = "[]"
    documents: tuple[ModelDocument, ...] = ()
    #: who it is shared with (``core_ocrmodelright``): ``("user", name)`` / ``("group", name)``
    rights: tuple[tuple[str, str], ...] = ()

    @property
    def job_name(self) -> str:
        return JOBS.get(self.job, f"job {self.job}")

    @property
    def file_name(self) -> str | None:
        """The stored file's base name (``catmus-medieval-15.mlmodel``), None without a file."""
        return PurePosixPath(self.file).name if self.file else None

    @property
    def versions(self) -> list[dict[str, Any]]:
        """The history, keys sorted: PostgreSQL's jsonb keeps its own key order, SQLite the
        writer's, and the same model must describe itself the same from either."""
        value = json.loads(self.versions_json or "[]", object_pairs_hook=lambda pairs: dict(sorted(pairs)))
        return value if isinstance(value, list) else []

    @property
    def trained_on(self) -> tuple[ModelDocument, ...]:
        return tuple(d for d in self.documents if d.trained_on is not None)

    @property
    def executed_on(self) -> tuple[ModelDocument, ...]:
        return tuple(d for d in self.documents if d.executed_on is not None)

    def describe(self, sha256: str | None = None) -> dict[str, Any]:
        """Every stored fact about the model, JSON-ready (``model.json``); times as ISO 8601."""
        return {
            "id": self.id,
            "name": self.name,
            "job": self.job_name,
            "file": self.file,
            "file_name": self.file_name,
            "file_size": self.file_size,
            "sha256": sha256,
            "training": self.training,
            "training_epoch": self.training_epoch,
            "training_accuracy": self.training_accuracy,
            "training_errors": self.training_errors,
            "training_total": self.training_total,
            "public": self.public,
            "owner": self.owner,
            "parent": {"id": self.parent_id, "name": self.parent_name} if self.parent_id else None,
            "script": self.script,
            "revision": self.revision,
            "version_author": self.version_author,
            "version_source": self.version_source,
            "version_created_at": _iso(self.version_created_at),
            "version_updated_at": _iso(self.version_updated_at),
            "versions": self.versions,
            "documents": [
                {
                    "id": d.document_id,
                    "name": d.document_name,
                    "created_at": _iso(d.created_at),
                    "trained_on": _iso(d.trained_on),
                    "executed_on": _iso(d.executed_on),
                }
                for d in self.documents
            ],
            "rights": [{"kind": kind, "name": name} for kind, name in self.rights],
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def parse_job(value: str | int) -> int:
    """``segmentation``/``recognition`` (or eScriptorium's 1/2, or ``segment``/``recognize``) -> 1/2."""
    text = str(value).strip().lower()
    aliases = {"segment": 1, "segmentation": 1, "1": 1, "recognize": 2, "recognition": 2, "2": 2}
    if text not in aliases:
        raise ValueError(f"unknown model job {value!r}; choose segmentation or recognition")
    return aliases[text]


def layer_model(layer: str, models: tuple[OcrModel, ...] | list[OcrModel], document_id: int | None = None
                ) -> OcrModel | None:
    """The recognition model that made ``layer``: eScriptorium names the layer ``kraken:<model>``
    (some imports use the bare model name). Among models of that name, one run on the document
    (``core_ocrmodeldocument.executed_on``) wins, then the most recently updated; None for a layer
    no model made (``manual``, imports)."""
    name = layer[len(LAYER_PREFIX):] if layer.startswith(LAYER_PREFIX) else layer
    candidates = [m for m in models if m.name == name and m.job == JOB_IDS["recognition"]]
    if not candidates:
        return None

    def rank(model: OcrModel) -> tuple[bool, str, int]:
        ran = any(d.document_id == document_id and d.executed_on for d in model.documents)
        return (ran, _iso(model.version_updated_at) or "", model.id)

    return max(candidates, key=rank)



def _time(value: object) -> datetime | None:
    """A stored time: a datetime from PostgreSQL, ISO 8601 text from SQLite."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def build_models(
    model_rows: list[tuple[Any, ...]], document_rows: list[tuple[Any, ...]], right_rows: list[tuple[Any, ...]]
) -> list[OcrModel]:
    """Models from the rows of ``MODELS``, ``MODEL_DOCUMENTS`` and ``MODEL_RIGHTS`` (either store)."""
    documents: dict[int, list[ModelDocument]] = {}
    for model_id, doc_id, doc_name, created, trained, executed in document_rows:
        documents.setdefault(model_id, []).append(
            ModelDocument(doc_id, doc_name, _time(created), _time(trained), _time(executed))
        )
    rights: dict[int, list[tuple[str, str]]] = {}
    for model_id, user, group in right_rows:
        rights.setdefault(model_id, []).append(("user", user) if user is not None else ("group", group))
    models = []
    for row in model_rows:
        (model_id, name, job, file, file_size, training, epoch, accuracy, errors, total, public, owner,
         parent_id, parent_name, script, revision, author, source, created, updated, versions) = row
        models.append(OcrModel(
            id=model_id, name=name, job=job, file=file or None, file_size=file_size or 0,
            training=bool(training), training_epoch=epoch, training_accuracy=float(accuracy),
            training_errors=errors, training_total=total, public=bool(public), owner=owner,
            parent_id=parent_id, parent_name=parent_name, script=script, revision=str(revision),
            version_author=author, version_source=source, version_created_at=_time(created),
            version_updated_at=_time(updated), versions_json=versions if isinstance(versions, str)
            else json.dumps(versions),
            documents=tuple(documents.get(model_id, ())), rights=tuple(rights.get(model_id, ())),
        ))
    return models


def select_models(models: list[OcrModel], refs: Sequence[str | int]) -> list[OcrModel]:
    """The models ``refs`` name, by id or exact name, in the order given (a name may match several).
    ValueError naming every ref that matches nothing."""
    chosen: dict[int, OcrModel] = {}
    missing = []
    for ref in refs:
        text = str(ref)
        found = [m for m in models if text.isdigit() and m.id == int(text)] or [
            m for m in models if m.name == text
        ]
        if not found:
            missing.append(text)
        chosen.update((m.id, m) for m in found)
    if missing:
        raise ValueError(f"no model {', '.join(repr(m) for m in missing)}")
    return list(chosen.values())


def file_under(media_root: PurePath | None, file: str | None) -> PurePath | None:
    """Where a stored file (relative to MEDIA_ROOT) is; None when there is none or when its path
    would lead outside the media root (absolute, ``..``): never a file elsewhere on this machine."""
    if media_root is None or not file:
        return None
    relative = PurePosixPath(file)
    if relative.is_absolute() or ".." in relative.parts or "\\" in file:
        return None
    return media_root / relative


@dataclass(frozen=True, slots=True)
class ModelStep:
    """A model's part in what an export holds: the segmentation of the document, or the recognition
    that wrote the exported layer. ``executed_on`` comes from the data (None when unrecorded)."""

    job: str
    model_id: int
    name: str
    revision: str
    accuracy: float
    epochs: int
    parent: str | None = None
    executed_on: datetime | None = None

    @property
    def summary(self) -> str:
        """One line for settings fields: the model and how it was trained."""
        parent = f", fine-tuned from {self.parent}" if self.parent else ""
        return (f"kraken model {self.name} (eScriptorium model {self.model_id}, revision {self.revision}, "
                f"accuracy {self.accuracy:.2%} after {self.epochs} epochs{parent})")


@dataclass(frozen=True, slots=True)
class Provenance:
    """Who made an exported document: this program (name, version) exporting ``layer``, and the
    models whose work it holds (segmentation first, then the layer's recognition). No clock time:
    the times are the data's, so the same data gives the same files."""

    software: str
    version: str
    layer: str
    steps: tuple[ModelStep, ...] = ()

    @property
    def producer(self) -> str:
        return f"{self.software} {self.version}"


def provenance(
    software: str, version: str, layer: str, models: Sequence[OcrModel], document_id: int
) -> Provenance:
    """The provenance of ``layer`` of a document: segmentation models run on the document (through
    ``core_ocrmodeldocument``), then the recognition model the layer is named after (see
    :func:`layer_model`), if any."""
    steps = []
    for model in models:
        if model.job != JOB_IDS["segmentation"]:
            continue
        runs = [d.executed_on for d in model.documents if d.document_id == document_id and d.executed_on]
        if runs:
            steps.append(_step(model, max(runs)))
    made_by = layer_model(layer, list(models), document_id)
    if made_by is not None:
        runs = [d.executed_on for d in made_by.documents if d.document_id == document_id and d.executed_on]
        steps.append(_step(made_by, max(runs) if runs else None))
    return Provenance(software, version, layer, tuple(steps))


def _step(model: OcrModel, when: datetime | None) -> ModelStep:
    return ModelStep(model.job_name, model.id, model.name, model.revision, model.training_accuracy,
                     model.training_epoch, model.parent_name, when)
